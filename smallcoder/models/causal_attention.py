"""Causal attention over a full sequence (training, `call`): one function per implementation.

Each takes query (B, T, N, H), key and value (B, T, K, H) with N a multiple of
K (grouped heads), and a causal bool mask (B, T, T), True where query t may
see key s; each returns (B, T, N, H). `KERNELS` maps an implementation name
(`smallcoder.models.implementation`) to its function.
"""

import math

from keras import ops

# Query rows per block. Block i attends to keys [0, (i + 1) * 256) only, so a
# 1024-token row computes 10/16 of the full score matrix; smaller blocks skip
# more but give XLA smaller, less efficient matmuls (docs/models.md).
BLOCK_SIZE = 256


def dot_product_causal_attention(query, key, value, attention_mask):
    """`keras.ops.dot_product_attention` under the mask: the "keras" implementation.

    KV heads are repeated to N first: torch's fused SDPA kernel and the
    TensorFlow path expect equal head counts.
    """
    groups = ops.shape(query)[2] // ops.shape(key)[2]
    if groups > 1:
        key = ops.repeat(key, groups, axis=2)
        value = ops.repeat(value, groups, axis=2)
    mask = ops.expand_dims(attention_mask, axis=1)  # (B, 1, T, S)
    return ops.dot_product_attention(
        query, ops.cast(key, query.dtype), ops.cast(value, query.dtype), mask=mask
    )


def block_causal_attention(query, key, value, attention_mask, block_size=BLOCK_SIZE):
    """Softmax attention in query blocks that skip the masked upper triangle (JAX).

    Equal to `dot_product_causal_attention` for any causal mask (such as the
    segment masks of `smallcoder.models.masks`), but query block `i` only
    scores the keys before its end, and each block runs
    `fused_jax.attention_block` (flash-attention backward: the probabilities
    are recomputed, not stored).

    Args:
        block_size: int, query rows per block.

    Returns:
        (B, T, N, H), in the query's dtype. Softmax runs in float32.
    """
    from smallcoder.models.fused_jax import attention_block

    batch, length, num_heads, head_dim = ops.shape(query)
    num_kv_heads = ops.shape(key)[2]
    groups = num_heads // num_kv_heads
    query = ops.multiply(query, ops.cast(1.0 / math.sqrt(head_dim), query.dtype))
    query = ops.reshape(query, (batch, length, num_kv_heads, groups, head_dim))
    query = ops.transpose(query, (0, 2, 3, 1, 4))  # (B, K, G, T, H)
    key = ops.transpose(ops.cast(key, query.dtype), (0, 2, 1, 3))  # (B, K, T, H)
    value = ops.transpose(ops.cast(value, query.dtype), (0, 2, 1, 3))  # (B, K, T, H)
    attention_mask = attention_mask[:, None, None]  # (B, 1, 1, T, T)

    # Blocks need a static length; a symbolic one (functional model
    # construction) falls back to one block.
    static_length = query.shape[3]
    if isinstance(static_length, int):
        starts = range(0, static_length, block_size)
        bounds = [(start, min(start + block_size, static_length)) for start in starts]
    else:
        bounds = [(0, None)]
    outputs = [
        attention_block(query[:, :, :, start:stop], key[:, :, :stop], value[:, :, :stop],
                        attention_mask[..., start:stop, :stop])  # (B, K, G, C, H)
        for start, stop in bounds
    ]
    attended = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=3)  # (B, K, G, T, H)
    attended = ops.transpose(attended, (0, 3, 1, 2, 4))
    return ops.reshape(attended, (batch, length, num_heads, head_dim))


def cudnn_causal_attention(query, key, value, attention_mask):
    """cuDNN flash attention (JAX on a GPU; bfloat16/float16), with the mask as a bias.

    cuDNN skips the key blocks past each query block (`is_causal`) and adds
    the mask (padding, packed segments) inside the kernel; no (T, T) score
    matrix is kept for the backward pass. Grouped KV heads are passed as
    they are.
    """
    import jax

    return jax.nn.dot_product_attention(
        query, key.astype(query.dtype), value.astype(query.dtype), mask=attention_mask[:, None],
        is_causal=True, implementation="cudnn",
    )


KERNELS = {
    "keras": dot_product_causal_attention,
    "blocks": block_causal_attention,
    "cudnn": cudnn_causal_attention,
}
