"""Native decoding kernels: XLA:CPU custom calls for one-token steps (JAX on x86-64).

The C++ source is `smallcoder/native/decode_kernels.cc`, built at install
into the extension `smallcoder._decode_kernels` (optional: where it does not
build, or the CPU lacks AVX2/FMA, or JAX runs on a GPU/TPU, `available()` is
False and decoding uses XLA's own dots). Two calls:

- `decoder_block(...)`: a whole decoder block for one new token per row in
  one call (its products, RoPE, the cache writes, attention over each row's
  valid span only, the norms, SwiGLU and the residual adds), so that the
  memory bus does not idle between XLA ops.
- `matmul(x, packed)`: x (M, K) float32 @ a packed kernel, float32 or int8
  with per-output-channel scales (Keras' int8 layout: w = q / scale),
  optionally after an RMSNorm (the final norm and the output projection).

Both read each weight once per call at close to memory bandwidth for one row,
and keep a 6 x 16 block of rows x columns in registers for more rows. `pack`
lays a (K, N) kernel out as (ceil(N/16), K, 16): 16 output columns per
contiguous tile. The targets are registered with XLA on the first
`available()` call, not on import.
"""

import functools
from typing import NamedTuple

TILE = 16
_TARGETS = ("smallcoder_matmul", "smallcoder_matmul_norm", "smallcoder_decoder_block")


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
def _library():
    """The loaded extension (ctypes), or None where it was not built."""
    import ctypes

    path = _extension_path()
    return None if path is None else ctypes.CDLL(path)


@functools.cache
def _registered():
    """Load the extension and register its targets with XLA:CPU once; False if it cannot run here."""
    import jax

    library = _library()
    if library is None or not library.smallcoder_decode_kernels_supported():
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


def vector_bits(bits=0):
    """The width of the kernels' products in bits: 512 (AVX-512: 16 lanes) or 256 (AVX2); 0 where they do not run.

    Args:
        bits: 256 makes the products 8 lanes wide from now on in this process
            on any CPU (to test or time that path on an AVX-512 machine); 512
            asks for 16 lanes again (granted with AVX-512); 0 only asks.
    """
    library = _library() if available() else None
    return 0 if library is None else library.smallcoder_decode_kernels_vector_bits(int(bits))


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


def _packed_inputs(kernel):
    """A `PackedKernel` as the calls take it: tiles and scale ((0,) for float32 tiles)."""
    import jax.numpy as jnp

    return [kernel.tiles, jnp.zeros((0,), jnp.float32) if kernel.scale is None else kernel.scale]


def matmul(x, packed, norm=None):
    """x float32 (M, K) @ the packed kernel: float32 (M, N).

    Args:
        norm: `(gamma (K,), epsilon)`: multiply `x * rsqrt(mean(x^2) + epsilon)
            * gamma` (keras.layers.RMSNormalization) instead of x.
    """
    import jax
    import jax.numpy as jnp

    inputs = [x]
    if norm is not None:
        inputs += [jnp.asarray(norm[0], jnp.float32), jnp.asarray(norm[1], jnp.float32)]
    inputs += _packed_inputs(packed)
    result = jax.ShapeDtypeStruct((x.shape[0], packed.columns), jnp.float32)
    return jax.ffi.ffi_call("smallcoder_matmul_norm" if norm is not None else "smallcoder_matmul", result)(*inputs)


def decoder_block(x, cos, sin, key_cache, value_cache, start, index, attention_norm, qkv, output,
                  feedforward_norm, gate_up, down):
    """A decoder block for one new token per row, in one call: `(y, key_cache, value_cache)`.

    y = x1 + SwiGLU(rms_norm(x1)) with x1 = x + attention(rms_norm(x)): the
    products on the packed kernels (each float32 or int8), RoPE with the given
    tables, the new key and value written at `index` of the caches (in
    place: the caches are aliased from input to output), attention over
    positions start[b] .. index.

    Args:
        x: float32 (B, D).
        cos, sin: float32 (B, H), RoPE's tables at each row's position.
        key_cache, value_cache: float32 (B*K, S, H).
        start: int32 (B,); index: int32 scalar.
        attention_norm, feedforward_norm: `(gamma (D,), epsilon)`.
        qkv, output, gate_up, down: `PackedKernel`s of (D, (N + 2K) H),
            (N H, D), (D, 2F) (gate | up) and (F, D).
    """
    import jax
    import jax.numpy as jnp

    def norm(gamma_epsilon):
        return [jnp.asarray(gamma_epsilon[0], jnp.float32), jnp.asarray(gamma_epsilon[1], jnp.float32)]

    inputs = [x, cos, sin, key_cache, value_cache, jnp.asarray(start, jnp.int32), jnp.asarray(index, jnp.int32),
              *norm(attention_norm), *norm(feedforward_norm)]
    for kernel in (qkv, output, gate_up, down):
        inputs += _packed_inputs(kernel)
    results = (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(key_cache.shape, jnp.float32),
               jax.ShapeDtypeStruct(value_cache.shape, jnp.float32))
    return jax.ffi.ffi_call("smallcoder_decoder_block", results, input_output_aliases={3: 1, 4: 2})(*inputs)
