"""One decoding step on the native kernels (`decode_kernels`): JAX on x86-64 CPUs.

The same math as `SmallCoderBackbone.call_with_cache` for one new token per
row: each decoder block is one `decoder_block` call (its products, RoPE,
the cache writes, attention, the norms, SwiGLU and the residual adds), the
final norm and the output projection one `matmul`; the embedding lookup and
RoPE's cos/sin tables (once per step, for every block) stay the Keras
layers' own. `decode_weights` packs the kernels outside the decoding loop:
q|k|v and gate|up concatenated, so that a block runs four products. Float32
kernels and Keras int8 kernels without activation quantization
(`SmallCoderCausalLM.quantize_for_generation`) are supported;
`supports(backbone)` says whether a model's layers all are.
`PackedWeights` keeps the packed kernels from one `generate` call to the
next while the weights stay the same.
"""

from typing import NamedTuple

from smallcoder.models.quantization import is_quantized


class BlockWeights(NamedTuple):
    """A decoder block's packed kernels: (D, (N + 2K) H), (N H, D), (D, 2F), (F, D)."""

    qkv: object
    output: object
    gate_up: object
    down: object


def _is_weight_only_int8(layer):
    return getattr(layer, "quantization_mode", None) == "int8" and getattr(layer, "inputs_quantizer", None) is None


def _layer_supported(layer):
    if getattr(layer, "lora_enabled", False):
        return False
    return not is_quantized(layer) or _is_weight_only_int8(layer)


def supports(backbone):
    """Whether every projection of `backbone` is float32 or weight-only int8, with float32 compute."""
    embedding = backbone.token_embedding
    head_ok = (embedding.reverse_dtype is None and embedding.logit_soft_cap is None
               and _layer_supported(embedding) and not (embedding.tie_weights and is_quantized(embedding)))
    layers = [layer for block in backbone.transformer_layers for layer in block.projections()]
    return (backbone.compute_dtype == "float32" and head_ok
            and all(_layer_supported(layer) for layer in layers))


def _kernel_2d(layer, inputs):
    """A projection's kernel as (K, N) and its (N,) int8 scale (None if float)."""
    from keras import ops

    kernel = ops.reshape(ops.convert_to_tensor(layer.kernel), (inputs, -1))
    scale = ops.reshape(ops.convert_to_tensor(layer.kernel_scale), (-1,)) if is_quantized(layer) else None
    return kernel, scale


def _pack_concatenated(layers, inputs):
    """The layers' kernels side by side, (K, sum N), packed; all float or all int8."""
    import jax.numpy as jnp

    from smallcoder.models.decode_kernels import pack

    parts = [_kernel_2d(layer, inputs) for layer in layers]
    kernels = [kernel for kernel, _ in parts]
    kernel = kernels[0] if len(kernels) == 1 else jnp.concatenate(kernels, axis=1)
    scales = [scale for _, scale in parts]
    if any(scale is None for scale in scales):
        if not all(scale is None for scale in scales):  # mixed: unpack the int8 ones
            kernel = jnp.concatenate([k if s is None else k.astype(jnp.float32) / s for k, s in parts], axis=1)
        return pack(kernel)
    return pack(kernel, scales[0] if len(scales) == 1 else jnp.concatenate(scales))


def decode_weights(backbone):
    """Packed kernels for `decode_step`: a tuple of `BlockWeights` per block and the output projection."""
    from keras import ops

    from smallcoder.models.decode_kernels import pack

    hidden, heads = backbone.hidden_dim, backbone.num_query_heads * backbone.head_dim
    blocks = []
    for block in backbone.transformer_layers:
        attention = block.attention
        blocks.append(BlockWeights(
            qkv=_pack_concatenated([attention.query, attention.key, attention.value], hidden),
            output=_pack_concatenated([attention.attention_output], heads),
            gate_up=_pack_concatenated([block.feedforward_gate, block.feedforward_intermediate], hidden),
            down=_pack_concatenated([block.feedforward_output], backbone.intermediate_dim),
        ))
    embedding = backbone.token_embedding
    if is_quantized(embedding):
        head = pack(ops.convert_to_tensor(embedding.reverse_embeddings),
                    ops.convert_to_tensor(embedding.reverse_embeddings_scale))
    elif embedding.tie_weights:
        head = pack(ops.transpose(ops.convert_to_tensor(embedding.embeddings)))
    else:
        head = pack(ops.convert_to_tensor(embedding.reverse_embeddings))
    return tuple(blocks), head


class PackedWeights:
    """`decode_weights(backbone)` kept across `generate` calls, until a weight changes.

    Packing copies every kernel (1.06 GB for the 303M in float32, 0.15-0.8 s
    on 2 CPU cores); done inside each `generate` call it cost batch-1
    decoding of 128 tokens 5-9 % of its time, and every batch of an eval
    paid it again. `arrays(backbone)` packs once (eagerly: inside a trace
    the kernels would be constants) and hands the packed arrays to the
    compiled `generate` as inputs; `rebuild(arrays)` puts them back into
    `decode_weights`' structure inside the trace. A weight has changed when
    its variable holds another array (`fit`, `load_weights`, `quantize`);
    weak references to the arrays packed from tell, and the packed copy is
    let go as soon as one of those is freed (training between two stage-gate
    evals does not keep a stale 1 GB copy).
    """

    def __init__(self):
        self._sources, self._packed = None, None

    def _drop(self, _):
        self._sources, self._packed = None, None

    def arrays(self, backbone):
        """The packed arrays (a list) of `backbone`'s current weights."""
        import weakref

        import jax

        values = [variable.value for variable in backbone.weights]
        fresh = self._sources is not None and len(self._sources) == len(values) and all(
            source() is value for source, value in zip(self._sources, values))
        if not fresh:
            self._packed = None  # let the old copy go before packing the new one
            leaves, treedef = jax.tree_util.tree_flatten(decode_weights(backbone))
            static = {i: leaf for i, leaf in enumerate(leaves) if not isinstance(leaf, jax.Array)}
            arrays = [leaf for leaf in leaves if isinstance(leaf, jax.Array)]
            self._sources = [weakref.ref(value, self._drop) for value in values]
            self._packed = (treedef, static, arrays)
        return self._packed[2]

    def rebuild(self, arrays):
        """`decode_weights`' structure around `arrays` (the traced `arrays(backbone)`)."""
        import jax

        treedef, static, _ = self._packed
        arrays = iter(arrays)
        leaves = [static[i] if i in static else next(arrays) for i in range(treedef.num_leaves)]
        return jax.tree_util.tree_unflatten(treedef, leaves)


def _norm(layer):
    """A keras.layers.RMSNormalization as `matmul`'s `norm`: (gamma, epsilon)."""
    from keras import ops

    return ops.convert_to_tensor(layer.scale), layer.epsilon


def decode_step(backbone, weights, token_ids, cache, index, start_index):
    """Logits of one new token per row, and the cache with its key and value written.

    Args:
        backbone: a `SmallCoderBackbone` that `supports`.
        weights: `decode_weights(backbone)`.
        token_ids: int (B,), the tokens at cache position `index`.
        cache: per layer `(key, value)`, each (B*K, S, H).
        index: int32 scalar.
        start_index: int32 (B,), each row's first real position.

    Returns:
        `(logits float32 (B, V), cache)`.
    """
    import jax.numpy as jnp

    from smallcoder import compat
    from smallcoder.models.decode_kernels import decoder_block, matmul

    blocks, head = weights
    batch = token_ids.shape[0]
    positions = jnp.maximum(index - start_index, 0)[:, None]  # (B, 1)
    # Every block's RotaryEmbedding is built from the same backbone arguments: one table for all.
    rope = backbone.transformer_layers[0].attention.rotary_embedding
    cos, sin = compat.rope_cos_sin(rope, jnp.zeros((batch, 1, 1, backbone.head_dim)), positions)
    cos, sin = cos.reshape(batch, -1), sin.reshape(batch, -1)  # (B, H)
    x = backbone.token_embedding(token_ids[:, None])[:, 0]  # (B, D)
    new_cache = []
    for block, w, (key_cache, value_cache) in zip(backbone.transformer_layers, blocks, cache):
        x, key_cache, value_cache = decoder_block(
            x, cos, sin, key_cache, value_cache, start_index, index, _norm(block.pre_attention_norm), w.qkv,
            w.output, _norm(block.pre_feedforward_norm), w.gate_up, w.down)
        new_cache.append((key_cache, value_cache))
    return matmul(x, head, norm=_norm(backbone.final_norm)), tuple(new_cache)
