"""Native decoding kernels: XLA:CPU custom calls for one-token steps (JAX on x86-64).

The C++ source is `smallcoder/native/decode_kernels.cc`, built at install
into the extension `smallcoder._decode_kernels` (optional: where it does not
build, or the CPU lacks AVX2/FMA, or JAX runs on a GPU/TPU, `available()` is
False and decoding uses XLA's own dots). Three kernels:

- `matmul(x, packed)`: x (M, K) float32 @ a packed kernel, float32 or int8
  with per-output-channel scales (Keras' int8 layout: w = q / scale). Reads
  each weight once per call at close to memory bandwidth for one row, and
  keeps a 6 x 16 block of rows x columns in registers for more rows. It can
  take the RMSNorm before it, SwiGLU's gating before it and a residual
  add after it, so that a decoder block runs no XLA op between its products.
- `attention(...)`: one new query per row over the valid span of the KV cache
  only (XLA reads the whole, length-bucketed cache).

`pack` lays a (K, N) kernel out as (ceil(N/16), K, 16): 16 output columns per
contiguous tile. The targets are registered with XLA on the first
`available()` call, not on import.
"""

import functools
from typing import NamedTuple

TILE = 16
_MATMULS = ("", "_norm", "_add", "_gated_add")  # the fused forms `matmul` picks from
_TARGETS = tuple(f"smallcoder_matmul{form}_{w}" for form in _MATMULS for w in ("f32", "s8")) + ("smallcoder_attention",)


class PackedKernel(NamedTuple):
    """A (K, N) kernel as `pack` lays it out.

    tiles: (ceil(N/16), K, 16), float32 or int8 (zero columns past N).
    scale: float32 (ceil(N/16) * 16,) for int8 (ones past N), else None.
    columns: N (static).
    """

    tiles: object
    scale: object
    columns: int


def _extension_path():
    """Path of the built extension, or None (not built, e.g. no C++ compiler at install)."""
    import importlib.util

    spec = importlib.util.find_spec("smallcoder._decode_kernels")
    return None if spec is None or not spec.origin else spec.origin


@functools.cache
def _registered():
    """Load the extension and register its targets with XLA:CPU once; False if it cannot run here."""
    import ctypes

    import jax

    path = _extension_path()
    if path is None:
        return False
    library = ctypes.CDLL(path)
    if not library.smallcoder_decode_kernels_supported():
        return False
    for name in _TARGETS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    return True


def unavailable_reason():
    """Why the kernels do not run here, in one line; None where they do (`available()`)."""
    import keras

    if keras.config.backend() != "jax":
        return f"the Keras backend is {keras.config.backend()}; the native kernels are JAX-only"
    import jax

    platform = jax.devices()[0].platform
    if platform != "cpu":
        return f"JAX runs on {platform}; the native kernels are for x86-64 CPUs"
    if _extension_path() is None:
        return ("the extension smallcoder._decode_kernels was not built at install (no C++17 compiler?); "
                "reinstall smallcoder with g++ or clang++ on the PATH to get it")
    if not _registered():
        return "this CPU lacks AVX2 or FMA (or is not x86-64)"
    return None


def available():
    """Whether the kernels run here: the JAX backend on a CPU, x86-64 with AVX2 and FMA, the extension built."""
    return unavailable_reason() is None


def pack(kernel, scale=None):
    """A (K, N) kernel (float32, or int8 with its (N,) scale) as a `PackedKernel`."""
    import jax.numpy as jnp

    inputs, columns = kernel.shape
    tiles = -(-columns // TILE)
    pad = tiles * TILE - columns
    if scale is None:
        kernel = jnp.asarray(kernel, jnp.float32)
    else:
        scale = jnp.pad(jnp.asarray(scale, jnp.float32).reshape(-1), (0, pad), constant_values=1.0)
    kernel = jnp.pad(kernel, ((0, 0), (0, pad)))
    return PackedKernel(jnp.transpose(kernel.reshape(inputs, tiles, TILE), (1, 0, 2)), scale, columns)


def matmul(x, packed, norm=None, gated=False, residual=None):
    """x float32 (M, K) @ the packed kernel: float32 (M, N), with what comes before and after it fused.

    Args:
        norm: `(gamma (K,), epsilon)`: multiply `x * rsqrt(mean(x^2) + epsilon)
            * gamma` (keras.layers.RMSNormalization) instead of x.
        gated: x is (M, 2K), gate | up: multiply `silu(gate) * up` (SwiGLU).
        residual: float32 (M, N), added to the product.
    """
    import jax
    import jax.numpy as jnp

    if norm is not None and gated:
        raise ValueError("matmul fuses a norm or a gate before the product, not both")
    form = "_norm" if norm is not None else "_gated" if gated else ""
    inputs = [x]
    if norm is not None:
        inputs += [jnp.asarray(norm[0], jnp.float32), jnp.asarray(norm[1], jnp.float32)]
    if residual is not None:
        form += "_add"
        inputs.append(residual)
    if form not in _MATMULS:
        raise ValueError("a gated matmul needs a residual (the forms are: plain, norm, add, gated + add)")
    inputs.append(packed.tiles)
    if packed.scale is not None:
        inputs.append(packed.scale)
    result = jax.ShapeDtypeStruct((x.shape[0], packed.columns), jnp.float32)
    return jax.ffi.ffi_call(f"smallcoder_matmul{form}_{'f32' if packed.scale is None else 's8'}", result)(*inputs)


def attention(query, key_cache, value_cache, start, index):
    """Softmax attention of one new query per row over cache positions start[b] .. index.

    Args:
        query: float32 (B, N, H), not yet scaled by 1/sqrt(H).
        key_cache, value_cache: float32 (B*K, S, H), N a multiple of K
            (query head n reads KV head n // (N / K), as `cached_attention`).
        start: int32 (B,), each row's first valid cache position.
        index: int32 scalar, the last valid position (the new token's).

    Returns:
        float32 (B, N, H).
    """
    import jax
    import jax.numpy as jnp

    result = jax.ShapeDtypeStruct(query.shape, jnp.float32)
    return jax.ffi.ffi_call("smallcoder_attention", result)(
        query, key_cache, value_cache, jnp.asarray(start, jnp.int32), jnp.asarray(index, jnp.int32))
