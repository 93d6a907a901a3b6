"""Weight quantization for generation: the `--quantize` choices and a per-layer check.

Kept free of Keras imports, so the CLI can offer the choices without loading it.
"""

# `--quantize` of `smallcoder generate` and `bench generate`, applied by
# `SmallCoderCausalLM.quantize_for_generation`: weight-only int8 (float
# activations) of every projection and the output projection of the
# embedding ("int8"), or of the decoder blocks only ("int8-blocks").
QUANTIZE_CHOICES = ("int8", "int8-blocks")


def is_quantized(layer):
    """Whether Keras `quantize()` replaced this layer's float kernel (int8, float8)."""
    return getattr(layer, "quantization_mode", None) is not None
