"""Which kernels a SmallCoder model runs, chosen once when it is built.

    "keras"   Keras layers and `keras.ops.dot_product_attention` (torch's fused
              SDPA on torch). Every backend; the reference the others are tested
              against.
    "blocks"  JAX: the kernels of `fused_jax` with hand-written backward passes
              (projections, SwiGLU, RMSNorm, RoPE, logits) and causal attention
              over query blocks that never computes the masked upper triangle
              (`causal_attention.block_causal_attention`).
    "cudnn"   As "blocks", with cuDNN's flash attention (JAX on a GPU, 16-bit
              compute dtype).
    "auto"    `$SMALLCODER_ATTENTION` if set, else "cudnn" where it can run,
              "blocks" on other JAX devices and "keras" on TensorFlow and torch.

All four give the same logits and gradients to float round-off
(tests/models/test_attention_implementation.py). The kernels of `generate`'s
one-token steps are chosen apart from these (`SmallCoderCausalLM.decoding`).
"""

import os

import keras

ENV = "SMALLCODER_ATTENTION"
IMPLEMENTATIONS = ("auto", "keras", "blocks", "cudnn")
_SIXTEEN_BIT = ("bfloat16", "float16")


def resolve_implementation(implementation, compute_dtype):
    """`"keras"`, `"blocks"` or `"cudnn"`: what `implementation` means on this backend.

    Args:
        implementation: one of `IMPLEMENTATIONS`.
        compute_dtype: str, the layer's compute dtype (cuDNN needs 16 bits).

    Raises:
        ValueError: an unknown name, or one this backend, device or dtype
            cannot run.
    """
    where = "implementation"
    if implementation == "auto" and os.environ.get(ENV, "auto") != "auto":
        implementation, where = os.environ[ENV], f"${ENV}"
    if implementation not in IMPLEMENTATIONS:
        choices = ", ".join(IMPLEMENTATIONS)
        raise ValueError(f"{where}={implementation!r}: expected one of {choices}.")
    backend = keras.config.backend()
    if implementation == "auto":
        if backend != "jax":
            return "keras"
        return "cudnn" if _on_gpu() and str(compute_dtype) in _SIXTEEN_BIT else "blocks"
    if implementation in ("blocks", "cudnn") and backend != "jax":
        raise ValueError(f"{where}={implementation!r} needs the JAX backend (this is {backend}); "
                         "use 'keras' or 'auto'.")
    if implementation == "cudnn" and not (_on_gpu() and str(compute_dtype) in _SIXTEEN_BIT):
        raise ValueError(f"{where}='cudnn' needs a GPU and a bfloat16/float16 compute dtype "
                         f"(this is {_platform()}, {compute_dtype}); use 'blocks' or 'auto'.")
    return implementation


def uses_jax_kernels(implementation):
    """Whether a resolved `implementation` runs the hand-written JAX kernels."""
    return implementation in ("blocks", "cudnn")


def _platform():
    import jax

    return jax.devices()[0].platform


def _on_gpu():
    return _platform() == "gpu"
