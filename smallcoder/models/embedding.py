"""The token embedding, whose reverse (the output projection) has a JAX kernel."""

import keras
from keras import ops

from smallcoder.models.implementation import resolve_implementation, uses_jax_kernels


@keras.saving.register_keras_serializable(package="smallcoder")
class SmallCoderEmbedding(keras.layers.ReversibleEmbedding):
    """`keras.layers.ReversibleEmbedding` with a hand-written backward for the logits.

    `reverse=True` maps hidden states (B, T, D) to logits (B, T, V) as the
    parent does. With the JAX kernels (`implementation`, see
    `smallcoder.models.implementation`) and float weights it goes through
    `fused_jax.fused_projections`, whose explicit 2-D weight-gradient matmul
    avoids the transposing copy of the (B*T, V) logits gradient that XLA:CPU
    makes for autodiff's version. Weights, names and quantization are the
    parent's.
    """

    def __init__(self, *args, implementation="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.implementation = implementation

    def build(self, input_shape=None):
        super().build(input_shape)
        implementation = resolve_implementation(self.implementation, self.compute_dtype)
        self.jax_kernels = uses_jax_kernels(implementation)

    def call(self, inputs, reverse=False):
        plain = self.quantization_mode is None and self.reverse_dtype is None and self.logit_soft_cap is None
        if not (reverse and plain and self.jax_kernels):
            return super().call(inputs, reverse=reverse)
        from smallcoder.models.fused_jax import fused_projections

        kernel = ops.transpose(self.embeddings) if self.tie_weights else self.reverse_embeddings  # (D, V)
        return fused_projections(inputs, (ops.cast(kernel, inputs.dtype),))[0]

    def quantize(self, mode=None, type_check=True, config=None):
        # The parent refuses subclasses (type check); the weights are its own.
        return super().quantize(mode, type_check=False, config=config)

    def get_config(self):
        return {**super().get_config(), "implementation": self.implementation}
