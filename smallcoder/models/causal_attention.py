"""Block-causal attention for training and full-sequence forwards: the masked upper triangle is never computed."""

import math
import os

import keras
from keras import ops

# Query rows per block. Block i attends to keys [0, (i + 1) * 256) only, so a
# 1024-token row computes 10/16 of the full score matrix. Smaller blocks skip
# more but give XLA:CPU smaller, less efficient matmuls (128 and 256 measured
# within noise of each other on XLA:CPU; 16 blocks was no faster).
BLOCK_SIZE = 256

# Scores of masked pairs; finite so a fully masked row cannot produce NaNs.
MASKED_SCORE = -1e9

# Which kernel runs causal attention on JAX: "auto" (cuDNN flash attention on
# a GPU for bfloat16/float16 queries, the query blocks below elsewhere),
# "cudnn" or "blocks".
ATTENTION_ENV = "SMALLCODER_ATTENTION"
ATTENTION_CHOICES = ("auto", "cudnn", "blocks")


def attention_implementation(dtype):
    """`"cudnn"` or `"blocks"`: the kernel `block_causal_attention` runs for queries of `dtype`.

    Set `SMALLCODER_ATTENTION` to force one. cuDNN's kernel needs a GPU and
    16-bit inputs, so `"auto"` picks it only there.
    """
    choice = os.environ.get(ATTENTION_ENV, "auto")
    if choice not in ATTENTION_CHOICES:
        raise ValueError(f"{ATTENTION_ENV}={choice!r}: expected one of {', '.join(ATTENTION_CHOICES)}.")
    if choice != "auto":
        return choice
    if keras.config.backend() != "jax" or str(dtype) not in ("bfloat16", "float16"):
        return "blocks"
    import jax

    return "cudnn" if jax.devices()[0].platform == "gpu" else "blocks"


def block_causal_attention(query, key, value, attention_mask, block_size=BLOCK_SIZE):
    """Softmax attention of queries over keys at the same or earlier positions.

    Equal to `keras.ops.dot_product_attention(query, key, value, mask)` for
    any mask that is causal (`attention_mask[b, t, s]` False for `s > t`),
    such as the segment masks of `smallcoder.models.masks`, but query block
    `i` only scores the keys before its end. XLA's own
    `dot_product_attention` computes and differentiates the full (T, T)
    score matrix and on CPU also transposes it; this costs about 0.4x of it
    for a 1024-token training step (fwd + bwd, measured on XLA:CPU). On a
    GPU with 16-bit queries it runs cuDNN's flash kernel instead
    (`attention_implementation`; `fused_jax.cudnn_causal_attention`).

    Args:
        query: (B, T, N, H).
        key: (B, T, K, H); N a multiple of K (grouped heads).
        value: (B, T, K, H).
        attention_mask: bool (B, T, T), causal.
        block_size: int, query rows per block.

    Returns:
        (B, T, N, H), in the dtype of `value`. Softmax runs in float32.
    """
    if keras.config.backend() == "jax" and attention_implementation(query.dtype) == "cudnn":
        from smallcoder.models.fused_jax import cudnn_causal_attention

        return cudnn_causal_attention(query, key, value, attention_mask)
    batch, length, num_heads, head_dim = ops.shape(query)
    num_kv_heads = ops.shape(key)[2]
    groups = num_heads // num_kv_heads
    query = ops.multiply(query, ops.cast(1.0 / math.sqrt(head_dim), query.dtype))
    query = ops.reshape(query, (batch, length, num_kv_heads, groups, head_dim))
    query = ops.transpose(query, (0, 2, 3, 1, 4))  # (B, K, G, T, H)
    key = ops.transpose(key, (0, 2, 1, 3))  # (B, K, T, H)
    value = ops.transpose(value, (0, 2, 1, 3))  # (B, K, T, H)
    attention_mask = ops.expand_dims(ops.expand_dims(attention_mask, 1), 1)  # (B, 1, 1, T, T)

    # Blocks need a static length; a symbolic one (functional model
    # construction, TF graphs of unknown length) falls back to one block.
    static_length = query.shape[3]
    if isinstance(static_length, int):
        bounds = [(start, min(start + block_size, static_length)) for start in range(0, static_length, block_size)]
    else:
        bounds = [(0, None)]
    outputs = []
    for start, stop in bounds:
        block = (query[:, :, :, start:stop], key[:, :, :stop], value[:, :, :stop])
        outputs.append(_attend(*block, attention_mask[..., start:stop, :stop]))  # (B, K, G, C, H)
    attended = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=3)  # (B, K, G, T, H)
    attended = ops.transpose(attended, (0, 3, 1, 2, 4))
    return ops.reshape(attended, (batch, length, num_heads, head_dim))


def _attend(query, key, value, mask):
    """One query block (B, K, G, C, H) over keys/values (B, K, S, H); mask (B, 1, 1, C, S)."""
    if keras.config.backend() == "jax":
        from smallcoder.models.fused_jax import attention_block

        return attention_block(query, key, value, mask)
    scores = ops.einsum("bkgqh,bksh->bkgqs", query, key)
    scores = ops.where(mask, ops.cast(scores, "float32"), MASKED_SCORE)
    probs = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
    return ops.einsum("bkgqs,bksh->bkgqh", probs, value)
