"""`bench_train`: training-step tokens/s, MFU and memory, next to transformers + torch."""

import os
import time

import numpy as np

from smallcoder.bench import flops, peak, report


def random_batch(config, batch, seq, seed=0):
    """`(x, y, sample_weight)` of random ids: one unpacked document per row."""
    rng = np.random.default_rng(seed)
    vocab = config["vocabulary_size"]
    x = {
        "token_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int32),
        "padding_mask": np.ones((batch, seq), dtype=np.int32),
    }
    y = rng.integers(0, vocab, (batch, seq), dtype=np.int32)
    return x, y, np.ones((batch, seq), dtype=np.float32)


def build_causal_lm(config, dtype="float32", remat=None, seed=0, microbatches=1, distribution=None):
    """A `SmallCoderCausalLM` of backbone `config`, compiled with AdamW as the recipes compile it.

    `distribution`: a `keras.distribution` layout to build the weights in (JAX).
    """
    import contextlib

    import keras

    from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM
    from smallcoder.training.metrics import compile_for_training

    keras.utils.set_random_seed(seed)
    with distribution.scope() if distribution else contextlib.nullcontext():
        backbone = SmallCoderBackbone(**config, dtype=dtype, remat=remat)
        causal_lm = SmallCoderCausalLM(backbone)
        compile_for_training(causal_lm, keras.optimizers.AdamW(1e-4, weight_decay=0.1),
                             microbatches=microbatches)
    return causal_lm


def keras_train_step(config, batch, seq, dtype="float32", remat=None, seed=0, microbatches=1,
                     distribution=None):
    """`(step, causal_lm)`: `step()` runs one `train_on_batch` (the path `fit` takes).

    With a `distribution` over several processes, each process passes only
    the rows of the global `batch` its devices hold.
    """
    import contextlib

    from smallcoder.distribution import process_rows

    causal_lm = build_causal_lm(config, dtype=dtype, remat=remat, seed=seed, microbatches=microbatches,
                                distribution=distribution)
    start, stop = process_rows(distribution, batch, seq)
    x, y, w = random_batch(config, batch, seq, seed)
    x, y, w = {k: v[start:stop] for k, v in x.items()}, y[start:stop], w[start:stop]
    scope = distribution.scope if distribution else contextlib.nullcontext

    def step():
        with scope():
            return float(causal_lm.train_on_batch(x, y, sample_weight=w, return_dict=True)["loss"])

    return step, causal_lm


def train_memory_analysis(config, batch, seq, dtype="float32", remat=None):
    """Compiled (not run) memory of loss + gradients on JAX, in bytes.

    `temp_bytes` is what XLA allocates beyond the weights and the batch:
    the activations saved for the backward pass and the work buffers. It is
    exact and free of noise, unlike RSS.
    """
    import jax
    import keras

    if keras.config.backend() != "jax":
        raise ValueError("The compiled memory analysis needs the JAX backend (KERAS_BACKEND=jax).")
    causal_lm = build_causal_lm(config, dtype=dtype, remat=remat)
    x, y, w = random_batch(config, batch, seq)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainable = [v.value for v in causal_lm.trainable_variables]
    non_trainable = [v.value for v in causal_lm.non_trainable_variables]

    def loss(trainable, non_trainable, x, y, w):
        logits, _ = causal_lm.stateless_call(trainable, non_trainable, x)
        return loss_fn(y, logits, sample_weight=w)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(trainable, non_trainable, x, y, w).compile()
    stats = compiled.memory_analysis()
    return {
        "temp_bytes": int(stats.temp_size_in_bytes),
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
    }


def train_step_memory_analysis(config, batch, seq, dtype="float32", remat=None, microbatches=1):
    """Compiled (not run) memory of the whole Keras training step on JAX, in bytes.

    The step `fit` and `train_on_batch` run: forward, loss, gradients and the
    AdamW update, jitted as Keras does (the model, optimizer and metric state
    donated, so the new state reuses the old buffers). `argument_bytes` is that
    state plus the batch (weights, both AdamW moments, counters), `temp_bytes`
    is everything else XLA allocates (activations kept for the backward pass,
    gradients, work buffers), and `peak_bytes` = arguments + outputs not
    aliased to an argument + temp: what the step needs at its high-water mark.
    With `microbatches` M > 1, the step as `use_microbatches(M)` runs it.
    """
    import jax
    import keras

    from smallcoder import compat, xla_flags

    if keras.config.backend() != "jax":
        raise ValueError("The compiled memory analysis needs the JAX backend (KERAS_BACKEND=jax).")
    causal_lm = build_causal_lm(config, dtype=dtype, remat=remat, microbatches=microbatches)
    data = random_batch(config, batch, seq)
    state = compat.jax_train_state(causal_lm, data)
    stats = jax.jit(causal_lm.train_step, donate_argnums=0).lower(state, data).compile().memory_analysis()
    result = {
        "temp_bytes": int(stats.temp_size_in_bytes),
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
        "weight_bytes": int(sum(v.value.nbytes for v in causal_lm.weights)),
        "optimizer_bytes": int(sum(v.value.nbytes for v in causal_lm.optimizer.variables)),
        "xla_cpu_scheduler": xla_flags.scheduler_setting(),
        "microbatches": microbatches,
    }
    result["peak_bytes"] = (result["argument_bytes"] + result["output_bytes"] - result["alias_bytes"]
                            + result["temp_bytes"])
    return result


def _device_peak_bytes(framework="jax"):
    """Peak device memory of `framework`'s allocator on an accelerator, else None (CPU has no allocator stats)."""
    if framework == "torch":
        import torch

        return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    if framework != "jax":
        return None
    try:
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        return (device.memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:
        return None


def saved_activation_bytes(config, batch, seq, dtype="float32", remat=None):
    """Bytes of the tensors autograd keeps for the backward pass of one forward + loss (torch backend).

    Counted with `torch.autograd.graph.saved_tensors_hooks` (each storage
    once, parameters excluded): exactly the activation memory a step holds
    between forward and backward, free of allocator and RSS noise.
    """
    import keras
    import torch

    if keras.config.backend() != "torch":
        raise ValueError("Counting saved tensors needs the torch backend (KERAS_BACKEND=torch).")
    causal_lm = build_causal_lm(config, dtype=dtype, remat=remat)
    x, y, w = random_batch(config, batch, seq)
    parameters = {v.value.untyped_storage().data_ptr() for v in causal_lm.weights}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn(y, causal_lm(x, training=True), sample_weight=w)
    loss.backward()
    return {"saved_bytes": int(sum(storages.values()))}


def activation_memory(config, batch, seq, remat, dtype="float32", microbatches=1):
    """The step's activation memory on this backend: XLA temp bytes (jax) or autograd-saved bytes (torch).

    `microbatches` applies to the whole-step analysis on JAX (`step`), not to
    the loss + gradients figure.
    """
    import keras

    if keras.config.backend() == "jax":
        stats = train_memory_analysis(config, batch, seq, dtype=dtype, remat=remat)
        step = train_step_memory_analysis(config, batch, seq, dtype=dtype, remat=remat, microbatches=microbatches)
        return {"kind": "xla_temp_bytes", "bytes": stats["temp_bytes"], **stats, "step": step}
    if keras.config.backend() != "torch":
        raise ValueError("Activation memory is measured on the jax and torch backends only.")
    stats = saved_activation_bytes(config, batch, seq, dtype=dtype, remat=remat)
    return {"kind": "torch_saved_tensor_bytes", "bytes": stats["saved_bytes"]}


def remat_memory(config, batch, seq, dtype="float32", microbatches=1):
    """`activation_memory` without and with remat, and their ratio.

    On JAX each side also holds `step`, the compiled analysis of the whole
    training step (`train_step_memory_analysis`: weights, AdamW state,
    gradients, activations), and `fits` says whether its `peak_bytes` plus
    this process's RSS before building anything (Python and the libraries,
    which the compiled figure leaves out) fit this machine's total memory.
    `available_bytes` is what the machine had free at the start (other jobs).
    """
    import psutil

    process_bytes = report.current_rss_bytes()
    available = psutil.virtual_memory().available
    plain = activation_memory(config, batch, seq, None, dtype=dtype, microbatches=microbatches)
    remat = activation_memory(config, batch, seq, "full", dtype=dtype, microbatches=microbatches)
    result = {"none": plain, "full": remat, "ratio": remat["bytes"] / plain["bytes"]}
    if "step" in plain:
        from smallcoder import xla_flags

        memory = psutil.virtual_memory().total
        result["machine_memory_bytes"] = memory
        result["available_bytes"] = available
        result["process_bytes"] = process_bytes
        result["fits"] = {k: result[k]["step"]["peak_bytes"] + process_bytes <= memory for k in ("none", "full")}
        result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        result["xla_cpu_scheduler"] = xla_flags.scheduler_setting()
    return result


def _side(make_step, framework="jax"):
    """Build one side and run its first (compiling) step, measuring its memory.

    `rss_increase_bytes` is the RSS high-water mark during build + first
    step minus the RSS before: the side's own weights, optimizer state and
    step memory, without what the other side already holds (0 when a tiny
    model fits in memory the allocator already held).
    """
    report.reset_peak_rss()
    before = report.current_rss_bytes()
    step = make_step()
    start = time.perf_counter()
    first_loss = step()
    peak_rss = report.peak_rss_bytes()
    return {"step": step, "times": [], "first_loss": first_loss, "first_step_s": time.perf_counter() - start,
            # Other threads (TensorFlow's, XLA's) map and free pages meanwhile, and the kernel
            # updates the high-water mark lazily: the mark can end a few pages below `before`
            # (CI saw -352 KB and -135 KB). Such a side grew by nothing measurable: 0.
            "peak_rss_bytes": peak_rss, "rss_increase_bytes": max(peak_rss - before, 0),
            "device_peak_bytes": _device_peak_bytes(framework)}


def _ours_side(config, batch, seq, dtype, remat, microbatches, distribution):
    import keras

    backend = keras.config.backend()
    return _side(lambda: keras_train_step(config, batch, seq, dtype=dtype, remat=remat,
                                          microbatches=microbatches, distribution=distribution)[0],
                 framework=backend)


def _hf_side(config, batch, seq, dtype, microbatches):
    from smallcoder.bench.reference import hf_train_step

    return _side(lambda: hf_train_step(config, batch, seq, dtype, microbatches=microbatches)[0], framework="torch")


def _peak_units(distribution, framework):
    """What the measured single-device peak is multiplied by for the whole job's MFU."""
    if distribution is None:
        return 1
    import jax

    # A host's CPU matmul already uses every core of the host: count hosts.
    return jax.process_count() if peak.on_cpu(framework) else len(jax.devices())


def bench_train(config, batch, seq, steps=2, dtype="float32", remat=None, vs_hf=False, interleave=True,
                peak_size=None, microbatches=1, distribution=None):
    """Time `steps` training steps of this package (and of transformers + torch).

    Each side first runs one untimed step (compilation, allocation). With
    `interleave`, both models stay in memory and their steps alternate (ours,
    hf, ours, hf, ...), so load from other processes hits both alike;
    otherwise each side runs all its steps and is freed before the next
    (for models too large to hold twice). With `microbatches` M > 1 both
    sides run each step as M sequential microbatches of batch/M rows and
    one optimizer update (ours inside one jitted step, transformers as M
    backward passes accumulating `.grad`). The float32 (or bf16) matmul peak
    is measured in the same process before and after the steps; MFU is
    against the larger of the two. `peak_size` is the matmul's side (default
    2048 on a CPU, 8192 on an accelerator, where a small one would time
    launch overhead and understate the peak).

    Returns a dict; `ours`/`hf` hold `step_s` (every timed step),
    `tokens_per_s` (median step), `mfu`, `peak_rss_bytes` (this process's
    RSS high-water mark over that side's build and first step; it includes
    whatever the process held before, e.g. the other side) and
    `rss_increase_bytes` (that peak minus the RSS before the side was built).

    `distribution` (JAX): train ours on that mesh; with several processes the
    figures are the whole job's, and MFU is against the peak times the devices
    (or, for a measured host peak, the processes).
    """
    import gc

    import keras

    tokens = batch * seq
    step_flops = flops.train_flops_per_step(config, batch, seq)
    matmul_dtype = "bfloat16" if "bfloat16" in dtype else "float32"
    framework = "jax" if keras.config.backend() == "jax" else "torch"
    peak_size = peak_size or (2048 if peak.on_cpu(framework) else 8192)
    result = {
        "backend": keras.config.backend(), "machine": report.machine(), "config": config,
        "batch": batch, "seq": seq, "dtype": dtype, "remat": remat, "microbatches": microbatches, "steps": steps,
        "interleave": interleave,
        "flops_per_token": flops.flops_per_token(config, seq), "flops_per_step": step_flops,
    }
    peaks = [peak.matmul_peak(peak_size, matmul_dtype, framework=framework)]
    builders = {"ours": lambda: _ours_side(config, batch, seq, dtype, remat, microbatches, distribution)}
    if vs_hf:
        builders["hf"] = lambda: _hf_side(config, batch, seq, dtype, microbatches)
    sides = {}
    if interleave:
        sides = {name: build() for name, build in builders.items()}
        for _ in range(steps):
            for side in sides.values():
                side["times"] += report.timed_calls(side["step"], 1)
    else:
        for name, build in builders.items():
            side = build()
            side["times"] = report.timed_calls(side["step"], steps)
            side.pop("step")
            sides[name] = side
            del side
            keras.backend.clear_session()
            gc.collect()
    peaks.append(peak.matmul_peak(peak_size, matmul_dtype, framework=framework))
    # The larger of the two: a peak is a best case, and load only ever lowers it.
    peak_flops = max(p["flops_per_s"] for p in peaks) * _peak_units(distribution, framework)
    result["matmul_peak"] = {"framework": framework, "size": peak_size, "dtype": matmul_dtype,
                             "flops_per_s": peak_flops, "runs": peaks}
    for name, side in sides.items():
        step_s = report.median(side["times"])
        result[name] = {
            "step_s": side["times"],
            "first_step_s": side["first_step_s"],
            "first_loss": side["first_loss"],
            "tokens_per_s": tokens / step_s,
            "model_flops_per_s": step_flops / step_s,
            "mfu": step_flops / step_s / peak_flops,
            "peak_rss_bytes": side["peak_rss_bytes"],
            "rss_increase_bytes": side["rss_increase_bytes"],
        }
        if side.get("device_peak_bytes"):
            result[name]["device_peak_bytes"] = side["device_peak_bytes"]
    if vs_hf:
        result["ratio_tokens_per_s"] = report.ratio(result["ours"]["tokens_per_s"], result["hf"]["tokens_per_s"])
    table = flops.device_table_peak()
    if table:
        result["device_table_peak_flops"] = table
        result["ours"]["mfu_device_table"] = result["ours"]["model_flops_per_s"] / table
    return result
