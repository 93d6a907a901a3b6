"""Hardware limits measured on the spot: matmul FLOP/s and memory bandwidth.

Both run in the calling process on the framework's first device, so the
figures they are compared with come from the same compiler, threads and
(noisy, shared) machine. `matmul_peak` is also the MFU denominator of
training on a device without a datasheet entry (`training.flops.peak_flops`).
`Limits` measures the bandwidth and the peak anew on each call, for a
benchmark that holds each run against the limits measured around it.
"""

from smallcoder.bench.report import median, timed_calls


def _timed(fn, repeats):
    fn()  # compile and warm up
    return timed_calls(fn, repeats)


def _jax_runner(size, dtype):
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (size, size), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), dtype)
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
    return lambda: matmul(a, b).block_until_ready()


def _torch_runner(size, dtype):
    import torch

    device = torch_device()
    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    if device == "cpu":
        return lambda: torch.mm(a, b)
    return lambda: (torch.mm(a, b), torch.cuda.synchronize())


def _tensorflow_runner(size, dtype):
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=dtype, seed=0)
    b = tf.random.normal((size, size), dtype=dtype, seed=1)
    return lambda: tf.linalg.matmul(a, b).numpy()


def torch_device():
    """`"cuda"` where torch sees a GPU, else `"cpu"`: where the torch side runs."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def on_cpu(framework="jax"):
    """Whether `framework`'s first device (where `matmul_peak` runs) is the host CPU."""
    if framework == "jax":
        import jax

        return jax.devices()[0].platform == "cpu"
    return torch_device() == "cpu"


def matmul_peak(size=2048, dtype="float32", repeats=5, framework="jax"):
    """Best and median FLOP/s of a `size`² x `size`² matmul.

    Args:
        framework: `"jax"` (XLA, as the Keras JAX backend runs), `"torch"` or
            `"tensorflow"`: the framework whose matmul and threads are timed.

    Returns:
        dict with `flops_per_s` (best), `median_flops_per_s`, `size`, `dtype`.
    """
    runners = {"jax": _jax_runner, "torch": _torch_runner, "tensorflow": _tensorflow_runner}
    run = runners[framework](size, dtype)
    return _matmul_figures(framework, size, dtype, _timed(run, repeats))


def _matmul_figures(framework, size, dtype, times):
    flops = 2.0 * size**3
    return {
        "framework": framework,
        "size": size,
        "dtype": dtype,
        "flops_per_s": flops / min(times),
        "median_flops_per_s": flops / median(times),
    }


def _bandwidth_runner():
    """`(run, bytes, description)`: one pass of this platform's bandwidth probe, its inputs built once.

    Where JAX runs on the CPU: a jitted XLA matrix-vector product over a 1 GiB
    float32 matrix (all cores; decoding streams its weights the same way,
    reading only). A copy is not used: it also writes, and glibc's memcpy of
    large heap buffers, where the `smallcoder` command's malloc tunables put
    them, ran at 9 GB/s on a machine that reads at 33 GB/s. On an
    accelerator: a jitted `x + 1` over 2 GiB of its memory (read + write
    counted).
    """
    import jax
    import jax.numpy as jnp

    if on_cpu("jax"):
        megabytes, columns = 1024, 4096
        # Random values: a matrix of equal pages could be deduplicated by a VM's host, and read from cache.
        matrix = jax.random.uniform(jax.random.PRNGKey(0), (int(megabytes * 2**20 // (4 * columns)), columns))
        vector = jnp.ones((columns,), jnp.float32)
        product = jax.jit(lambda m, v: m @ v)
        return (lambda: product(matrix, vector).block_until_ready(), matrix.nbytes,
                {"megabytes": megabytes, "memory": "host", "method": "matrix-vector read"})
    megabytes = 2048
    source = jnp.ones(int(megabytes * 2**20 // 4), dtype=jnp.float32)
    add_one = jax.jit(lambda x: x + 1.0)
    return (lambda: add_one(source).block_until_ready(), 2 * source.nbytes,
            {"megabytes": megabytes, "memory": jax.devices()[0].platform, "method": "read + write"})


class Limits:
    """The memory bandwidth and float32 matmul peak of JAX's first device, measured anew on each call.

    A shared machine's limits move within minutes (a VM's neighbours use the
    same memory), so a benchmark compares each timed run with the limits
    measured right around it. The probes' inputs and programs are built once;
    a call takes `repeats` passes of each (about 0.5 s on a 2-core CPU).

    Returns (per call): `(bandwidth, matmul)`: `bytes_per_s` (best pass)
    with the probe's `megabytes`, `memory` and `method`; and `matmul_peak`'s
    dict.
    """

    def __init__(self, repeats=3, matmul_size=2048):
        self.repeats, self.matmul_size = repeats, matmul_size
        self._bandwidth = _bandwidth_runner()
        self._matmul = _jax_runner(matmul_size, "float32")
        self._bandwidth[0]()  # compile and warm up
        self._matmul()

    def __call__(self):
        run, nbytes, description = self._bandwidth
        read = timed_calls(run, self.repeats)
        multiply = timed_calls(self._matmul, self.repeats)
        bandwidth = {"bytes_per_s": nbytes / min(read), **description}
        return bandwidth, _matmul_figures("jax", self.matmul_size, "float32", multiply)
