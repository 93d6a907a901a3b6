"""Multi-head attention with grouped KV heads, RoPE and a KV cache."""

import keras
from keras import ops
from keras_hub.layers import RotaryEmbedding

from smallcoder import compat
from smallcoder.models.causal_attention import KERNELS
from smallcoder.models.implementation import resolve_implementation, uses_jax_kernels
from smallcoder.models.quantization import is_quantized


def fresh_initializer(initializer):
    """A copy of `initializer` that draws its own values.

    A Keras 3 initializer made without a seed fixes one at construction, so
    one instance shared by several layers gives equal kernels of equal
    shapes (key and value, SwiGLU's gate and up were equal at init).
    """
    return initializer.__class__.from_config(initializer.get_config())


class SmallCoderAttention(keras.layers.Layer):
    """Causal self-attention of a LLaMA block (no biases).

    RoPE uses the Hugging Face rotate-half convention (keras-hub's
    `RotaryEmbedding` rotates the two halves of each head, as `transformers`'
    Llama does). `call` is the full-sequence (training) path, run by the
    kernels of `implementation`; `call_with_cache` is the decoding path over a
    per-layer KV cache.

    Args:
        num_query_heads: int. Query heads N.
        num_key_value_heads: int. KV heads K; N must be a multiple of K.
        head_dim: int. H, the size of one head.
        rope_max_wavelength: float. RoPE base (`rope_theta`).
        kernel_initializer: initializer of the four projections.
        implementation: `"auto"`, `"keras"`, `"blocks"` or `"cudnn"`: the
            kernels of `call`, resolved when the layer is built (see
            `smallcoder.models.implementation`).

    Call args:
        hidden_states: float (B, T, D).
        positions: int (B, T). RoPE position of each token.
        attention_mask: bool (B, T, T), causal. True where query t may see key s.

    Returns:
        (B, T, D).
    """

    def __init__(
        self,
        num_query_heads,
        num_key_value_heads,
        head_dim,
        rope_max_wavelength=10000.0,
        kernel_initializer="glorot_uniform",
        implementation="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                f"num_query_heads ({num_query_heads}) must be a multiple of "
                f"num_key_value_heads ({num_key_value_heads})."
            )
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rope_max_wavelength = rope_max_wavelength
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.implementation = implementation

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        N, K, H = self.num_query_heads, self.num_key_value_heads, self.head_dim

        def projection(name, equation, shape):
            return keras.layers.EinsumDense(
                equation,
                output_shape=shape,
                kernel_initializer=fresh_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )

        # Kernels: query (D, N, H); key/value (D, K, H); output (N, H, D).
        self.query = projection("query", "btd,dnh->btnh", (None, N, H))
        self.query.build(input_shape)
        self.key = projection("key", "btd,dkh->btkh", (None, K, H))
        self.key.build(input_shape)
        self.value = projection("value", "btd,dkh->btkh", (None, K, H))
        self.value.build(input_shape)
        self.attention_output = projection("attention_output", "btnh,nhd->btd", (None, hidden_dim))
        self.attention_output.build((None, None, N, H))
        self.rotary_embedding = RotaryEmbedding(
            max_wavelength=self.rope_max_wavelength, dtype=self.dtype_policy,
            name="rotary_embedding",
        )
        # === Kernels of `call` ===
        self.resolved_implementation = resolve_implementation(
            self.implementation, self.compute_dtype
        )
        self.jax_kernels = uses_jax_kernels(self.resolved_implementation)
        self.causal_attention = KERNELS[self.resolved_implementation]
        self.built = True

    def call(self, hidden_states, positions, attention_mask):
        query, key, value = self._project_qkv(hidden_states)  # (B, T, N, H), (B, T, K, H) x 2
        query, key = self._rotate(query, key, positions)
        attended = self.causal_attention(query, key, value, attention_mask)  # (B, T, N, H)
        return self._project_output(attended)  # (B, T, D)

    def _project_qkv(self, hidden_states):
        """Query (B, T, N, H), key and value (B, T, K, H) of hidden states (B, T, D).

        The JAX kernels run the three projections as one matmul with a
        hand-written backward; quantized kernels keep their layers' calls.
        """
        layers = (self.query, self.key, self.value)
        if not self.jax_kernels or any(is_quantized(layer) for layer in layers):
            return tuple(layer(hidden_states) for layer in layers)
        from smallcoder.models.fused_jax import fused_projections

        kernels = tuple(ops.cast(ops.reshape(layer.kernel, (ops.shape(layer.kernel)[0], -1)), hidden_states.dtype)
                        for layer in layers)  # (D, N*H), (D, K*H), (D, K*H)
        projections = fused_projections(hidden_states, kernels)
        batch, length = ops.shape(hidden_states)[:2]
        return tuple(ops.reshape(p, (batch, length, layer.kernel.shape[1], self.head_dim))
                     for p, layer in zip(projections, layers))

    def _project_output(self, attended):
        """(B, T, N, H) -> (B, T, D)."""
        if not self.jax_kernels or is_quantized(self.attention_output):
            return self.attention_output(attended)
        from smallcoder.models.fused_jax import fused_projections

        batch, length = ops.shape(attended)[:2]
        attended = ops.reshape(attended, (batch, length, -1))  # (B, T, N*H)
        kernel = self.attention_output.kernel
        kernel = ops.cast(ops.reshape(kernel, (-1, ops.shape(kernel)[-1])), attended.dtype)  # (N*H, D)
        return fused_projections(attended, (kernel,))[0]

    def _rotate(self, query, key, positions):
        """RoPE on query (B, T, N, H) and key (B, T, K, H).

        The JAX kernels take keras-hub's own cos/sin table (so values are
        identical) for positions 0..T-1 as a constant of the compiled step,
        gather its rows by position (B, T, 1, H), and keep the gathered
        tables behind an optimisation barrier: with cos and sin in the graph,
        XLA:CPU fused their computation into the backward's gradient fusions
        and evaluated them per element and head (docs/models.md).
        """
        if not self.jax_kernels:
            return (self.rotary_embedding(query, positions=positions),
                    self.rotary_embedding(key, positions=positions))
        import jax

        from smallcoder.models.fused_jax import rotary

        if isinstance(query.shape[1], int):
            # Positions restart per segment, so all are < T.
            with jax.ensure_compile_time_eval():
                cos, sin = compat.rope_cos_sin(self.rotary_embedding, query)  # (1, T, 1, H)
            cos, sin = (jax.numpy.take(table[0], positions, axis=0) for table in (cos, sin))  # (B, T, 1, H)
        else:
            cos, sin = compat.rope_cos_sin(self.rotary_embedding, query, positions)  # (B, T, 1, H)
        cos, sin = jax.lax.optimization_barrier((cos, sin))
        return rotary(query, cos, sin), rotary(key, cos, sin)

    def call_with_cache(self, hidden_states, positions, attention_mask, cache, cache_update_index):
        """Attention of T new tokens over a per-layer KV cache (the decoding path).

        The same on every implementation, and laid out for one-token
        products, which are bound by reading the weights: the projections are
        2-D matmuls over kernels reshaped to (D, N*H) and (N*H, D) (a free
        reshape, where `EinsumDense`'s equations made XLA copy kernels
        transposed every step); the cache is 3-D, one batch axis B*K, and is
        the left operand of both attention products, so that neither the
        in-place cache update nor the products copy it (docs/models.md has
        the layouts tried). Quantized (int8) projections keep their layers'
        own calls.

        Args:
            hidden_states: float (B, T, D).
            positions: int (B, T). RoPE position of each new token.
            attention_mask: bool (B, T, S): True where new token t of row b
                may see cache position s.
            cache: `(key, value)`, each (B*K, S, H)
                (`SmallCoderBackbone.empty_cache`).
            cache_update_index: int scalar, where the T new entries go.

        Returns:
            `(outputs (B, T, D), (key, value))` with the new entries written.
        """
        batch_size, length = ops.shape(hidden_states)[:2]
        N, K, H = self.num_query_heads, self.num_key_value_heads, self.head_dim
        query = self.rotary_embedding(_project(self.query, hidden_states, (N, H)), positions=positions)  # (B, T, N, H)
        key = self.rotary_embedding(_project(self.key, hidden_states, (K, H)), positions=positions)  # (B, T, K, H)
        value = _project(self.value, hidden_states, (K, H))  # (B, T, K, H)
        key_cache, value_cache = cache
        # Transposing the T new entries is cheap; transposing the cache is not.
        key = ops.reshape(ops.transpose(key, (0, 2, 1, 3)), (batch_size * K, length, H))
        value = ops.reshape(ops.transpose(value, (0, 2, 1, 3)), (batch_size * K, length, H))
        key_cache = ops.slice_update(key_cache, [0, cache_update_index, 0], ops.cast(key, key_cache.dtype))
        value_cache = ops.slice_update(value_cache, [0, cache_update_index, 0], ops.cast(value, value_cache.dtype))
        attended = cached_attention(query, key_cache, value_cache, attention_mask)  # (B, T, N, H)
        hidden_dim = ops.shape(hidden_states)[-1]
        return _project(self.attention_output, attended, (hidden_dim,)), (key_cache, value_cache)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "rope_max_wavelength": self.rope_max_wavelength,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "implementation": self.implementation,
            }
        )
        return config


def _project(layer, inputs, output_axes):
    """`layer(inputs)` of an `EinsumDense` projection, as a 2-D matmul when its kernel is float.

    Args:
        inputs: (B, T, *input_axes), the axes the kernel contracts.
        output_axes: the kernel's output axes, e.g. (N, H) or (D,).

    Returns:
        (B, T, *output_axes).
    """
    if is_quantized(layer):
        return layer(inputs)
    batch_size, length = ops.shape(inputs)[:2]
    rows = ops.reshape(inputs, (batch_size * length, -1))  # (B*T, prod(input_axes))
    kernel = ops.cast(ops.reshape(layer.kernel, (ops.shape(rows)[1], -1)), inputs.dtype)
    return ops.reshape(ops.matmul(rows, kernel), (batch_size, length, *output_axes))


def cached_attention(query, key, value, attention_mask):
    """Softmax attention of new queries over a 3-D KV cache, grouped KV heads.

    Explicit batched matmuls instead of `ops.dot_product_attention`: the
    latter wants keys as (B, S, K, H) and equal head counts on some backends,
    which would cost a transpose (and a repeat) of the whole cache every step.
    Scores and weights stay (B*K, S, G*T), so that the cache is the left
    operand of both products (see `SmallCoderAttention.call_with_cache`).

    Args:
        query: float (B, T, N, H), N = K * G.
        key, value: float (B*K, S, H).
        attention_mask: bool (B, T, S).

    Returns:
        float (B, T, N, H), in the query's dtype.
    """
    batch_size, length, num_query_heads, head_dim = ops.shape(query)
    rows, cache_length, _ = ops.shape(key)
    num_key_value_heads = rows // batch_size
    groups = num_query_heads // num_key_value_heads
    query = ops.reshape(query, (batch_size, length, num_key_value_heads, groups, head_dim))
    query = ops.reshape(ops.transpose(query, (0, 2, 4, 3, 1)), (rows, head_dim, groups * length))  # (B*K, H, G*T)
    query = query * ops.cast(1.0 / head_dim**0.5, query.dtype)
    scores = ops.cast(ops.matmul(ops.cast(key, query.dtype), query), "float32")  # (B*K, S, G*T)
    scores = ops.reshape(scores, (batch_size, num_key_value_heads, cache_length, groups, length))
    visible = ops.transpose(attention_mask, (0, 2, 1))[:, None, :, None, :]  # (B, 1, S, 1, T)
    scores = ops.where(visible, scores, ops.cast(-1e30, "float32"))
    weights = ops.cast(ops.reshape(ops.softmax(scores, axis=2), (rows, cache_length, groups * length)), query.dtype)
    attended = ops.einsum("bsh,bsq->bhq", ops.cast(value, query.dtype), weights)  # (B*K, H, G*T)
    attended = ops.reshape(attended, (batch_size, num_key_value_heads, head_dim, groups, length))
    return ops.reshape(ops.transpose(attended, (0, 4, 1, 3, 2)), (batch_size, length, num_query_heads, head_dim))
