"""One pre-norm LLaMA decoder block: RMSNorm → attention → RMSNorm → SwiGLU."""

import keras
from keras import ops

from smallcoder import compat
from smallcoder.models.attention import SmallCoderAttention, fresh_initializer
from smallcoder.models.quantization import is_quantized


class SmallCoderDecoderBlock(keras.layers.Layer):
    """`x + attn(norm(x))`, then `x + mlp(norm(x))`, with a SwiGLU MLP, no biases.

    Args:
        num_query_heads, num_key_value_heads, head_dim, rope_max_wavelength:
            see `SmallCoderAttention`.
        intermediate_dim: int. F, the SwiGLU hidden size.
        layer_norm_epsilon: float. RMSNorm epsilon (`rms_norm_eps`).
        kernel_initializer: initializer of every kernel.
        implementation: the kernels of `call` (see `SmallCoderAttention`).

    Call args:
        hidden_states: float (B, T, D).
        positions, attention_mask: see `SmallCoderAttention`.

    Returns:
        (B, T, D). `call_with_cache` is the decoding path.
    """

    def __init__(
        self,
        num_query_heads,
        num_key_value_heads,
        head_dim,
        intermediate_dim,
        rope_max_wavelength=10000.0,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        implementation="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.intermediate_dim = intermediate_dim
        self.rope_max_wavelength = rope_max_wavelength
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.implementation = implementation

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        common = {"dtype": self.dtype_policy}
        def dense():
            return {"use_bias": False, "kernel_initializer": fresh_initializer(self.kernel_initializer), **common}

        # === Layers ===
        self.pre_attention_norm = keras.layers.RMSNormalization(
            epsilon=self.layer_norm_epsilon, name="pre_attention_norm", **common
        )
        self.pre_attention_norm.build(input_shape)
        self.attention = SmallCoderAttention(
            self.num_query_heads,
            self.num_key_value_heads,
            self.head_dim,
            rope_max_wavelength=self.rope_max_wavelength,
            kernel_initializer=self.kernel_initializer,
            implementation=self.implementation,
            name="attention",
            **common,
        )
        self.attention.build(input_shape)
        self.pre_feedforward_norm = keras.layers.RMSNormalization(
            epsilon=self.layer_norm_epsilon, name="pre_feedforward_norm", **common
        )
        self.pre_feedforward_norm.build(input_shape)
        # Kernels: gate and intermediate (D, F); output (F, D).
        self.feedforward_gate = keras.layers.Dense(self.intermediate_dim, name="feedforward_gate", **dense())
        self.feedforward_gate.build(input_shape)
        self.feedforward_intermediate = keras.layers.Dense(
            self.intermediate_dim, name="feedforward_intermediate", **dense()
        )
        self.feedforward_intermediate.build(input_shape)
        self.feedforward_output = keras.layers.Dense(hidden_dim, name="feedforward_output", **dense())
        self.feedforward_output.build((None, None, self.intermediate_dim))

        # === Kernels of `call` ===
        self.jax_kernels = self.attention.jax_kernels
        # In a block made in a `keras.RematScope` (backbone `remat="full"`)
        # the norms stay Keras layers: with `fused_jax.rms_norm` inside,
        # `jax.checkpoint` kept more activations (docs/models.md).
        self.fused_norms = self.jax_kernels and compat.remat_mode(self) is None
        self.built = True

    def call(self, hidden_states, positions, attention_mask):
        normed = self._normalize(self.pre_attention_norm, hidden_states)
        hidden_states = hidden_states + self.attention(normed, positions, attention_mask)
        normed = self._normalize(self.pre_feedforward_norm, hidden_states)
        return hidden_states + self._feedforward(normed)  # (B, T, D)

    def _normalize(self, norm, hidden_states):
        """`norm(hidden_states)`; with the JAX kernels `fused_jax.rms_norm` (same values,
        faster backward)."""
        if not self.fused_norms:
            return norm(hidden_states)
        from smallcoder.models.fused_jax import rms_norm

        return rms_norm(hidden_states, ops.cast(norm.scale, hidden_states.dtype), norm.epsilon)

    def _feedforward(self, x):
        """SwiGLU of the normed input (B, T, D), without the residual: (B, T, D).

        The JAX kernels run it as one call with a hand-written backward
        (`fused_jax.swiglu`); it concatenates the gate and up kernels per
        call, so decoding, one token at a time, does not use it.
        """
        layers = (self.feedforward_gate, self.feedforward_intermediate, self.feedforward_output)
        if not self.jax_kernels or any(is_quantized(layer) for layer in layers):
            return self._feedforward_layers(x)
        from smallcoder.models.fused_jax import swiglu

        return swiglu(x, *(ops.cast(layer.kernel, x.dtype) for layer in layers))

    def _feedforward_layers(self, x):
        """SwiGLU through the Dense layers."""
        hidden = ops.silu(self.feedforward_gate(x)) * self.feedforward_intermediate(x)  # (B, T, F)
        return self.feedforward_output(hidden)  # (B, T, D)

    def projections(self):
        """The block's seven projections: attention q, k, v, output; SwiGLU gate, up, output."""
        attention = self.attention
        return [attention.query, attention.key, attention.value, attention.attention_output,
                self.feedforward_gate, self.feedforward_intermediate, self.feedforward_output]

    def call_with_cache(self, hidden_states, positions, attention_mask, cache, cache_update_index):
        """The block on T new tokens against this layer's KV cache (decoding).

        Args:
            hidden_states: float (B, T, D).
            positions, attention_mask, cache, cache_update_index: see
                `SmallCoderAttention.call_with_cache` (mask (B, T, S), cache a
                `(key, value)` pair, key and value each (B*K, S, H)).

        Returns:
            `(hidden_states (B, T, D), (key, value))`.
        """
        x = self.pre_attention_norm(hidden_states)
        attended, cache = self.attention.call_with_cache(x, positions, attention_mask, cache, cache_update_index)
        hidden_states = hidden_states + attended
        x = self.pre_feedforward_norm(hidden_states)
        return hidden_states + self._feedforward_layers(x), cache

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "intermediate_dim": self.intermediate_dim,
                "rope_max_wavelength": self.rope_max_wavelength,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "implementation": self.implementation,
            }
        )
        return config
