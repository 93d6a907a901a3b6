"""The stage runner: a `Recipe` in, a trained checkpoint, HF export and summary out.

    recipe ─► distribution ─► model (init_from / preset) ─► AdamW + schedule
           ─► data streams (this process's rows) ─► model.fit(callbacks) ─► checkpoints
           ─► (gather the weights) ─► export, sample, eval on process 0

Run folder (`recipe.output_dir` or `--output`)::

    recipe.yaml        the resolved recipe
    metrics.jsonl      one line per step: loss, learning rate, tokens/s, MFU, tokens per source
    tensorboard/       the same as TensorBoard scalars
    checkpoints/       step_XXXXXXXX/ (see `checkpoint`), the newest `checkpoint.keep`
                       (`checkpoint.dir` puts them elsewhere, e.g. a gs:// bucket)
    model/             the final Keras preset (what the next stage's `init_from` loads)
    hf/                the final Hugging Face export
    summary.json

With several JAX processes (a TPU pod slice, a GPU cluster, or CPU processes
rehearsing one; see `smallcoder.multihost`) every process runs this same code:
each feeds its rows of the global batch and writes its shards of every
checkpoint; process 0 alone writes the logs, `recipe.yaml`, the summary and,
from the gathered weights, the preset, the export, the sample and the eval.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import time

import yaml

from smallcoder import distribution as distribution_lib
from smallcoder import multihost
from smallcoder.data.preflight import check_sources_open
from smallcoder.recipes import check_tokenizer
from smallcoder.training import checkpoint


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, bad resume, …), with what to do."""


def backbone_config(recipe, init_dir):
    """The backbone config the run will build, read without building it."""
    from smallcoder.models.presets import is_keras_preset, preset_config

    from_init = init_dir and is_keras_preset(init_dir)
    return preset_config(init_dir if from_init else recipe["model.preset"])


def make_distribution(recipe, config, echo):
    """The recipe's `keras.distribution` (JAX, several devices), else None."""
    import keras

    layout = recipe["distribution.layout"]
    if layout in (None, "none"):
        return None
    if keras.config.backend() != "jax":
        echo(f"distribution: layout {layout!r} needs the JAX backend; training on one "
             f"{keras.config.backend()} device.")
        return None
    devices = keras.distribution.list_devices()
    if len(devices) == 1 and recipe["distribution.mesh"] in (None, "auto"):
        echo("distribution: one device, no sharding.")
        return None
    from smallcoder.distribution import make_distribution as make

    try:
        distribution = make(config, layout, recipe["distribution.mesh"], devices)
    except ValueError as e:
        raise TrainingError(f"{recipe.where('distribution.mesh')}: distribution.mesh: {e}") from e
    data_axis = distribution.device_mesh.shape[0]
    if recipe.micro_batch % data_axis:
        raise TrainingError(
            f"{recipe.where('training.global_batch')}: training.global_batch: the micro-batch "
            f"({recipe.micro_batch}) must split evenly over the {data_axis}-way data axis."
        )
    echo(f"distribution: {layout} on a {'x'.join(map(str, distribution.device_mesh.shape))} mesh "
         f"of {len(devices)} {devices[0].split(':')[0]} devices.")
    return distribution


def load_model(recipe, init_dir, echo, resuming=False):
    """`SmallCoderCausalLM` from `init_dir` (previous stage) or the recipe's preset.

    `resuming`: the weights will come from a checkpoint; say so instead of
    describing a fresh start.
    """
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.models.presets import is_keras_preset

    dtype, remat = recipe["model.dtype"], recipe.remat
    if remat:
        echo(f"model: remat {remat} (each decoder block recomputed in the backward pass)")
    if init_dir and is_keras_preset(init_dir):
        if not resuming:
            echo(f"model: initialised from {init_dir}")
        lm = SmallCoderCausalLM.from_preset(init_dir, dtype=dtype, remat=remat)
    else:
        if init_dir and not resuming:  # only reachable with --demo (check_init_from raises otherwise)
            stage = recipe["init_from"]
            echo(f"model: no demo checkpoint of stage {stage!r} at {init_dir} (run "
                 f"`smallcoder recipe run {stage} --demo` first to chain stages); "
                 f"starting from scratch.")
        if not resuming:
            echo(f"model: fresh {recipe['model.preset']} weights (seed {recipe['training.seed']})")
        lm = SmallCoderCausalLM.from_preset(recipe["model.preset"], dtype=dtype, remat=remat)
    if recipe["model.tokenizer"]:
        from smallcoder.tokenizer import SmallCoderTokenizer

        lm.tokenizer = SmallCoderTokenizer(recipe["model.tokenizer"])
    if lm.tokenizer is None:
        raise TrainingError(
            f"{recipe.where('model.tokenizer')}: model.tokenizer: {recipe['model.preset']} comes without a "
            "tokenizer; set model.tokenizer to the StarCoder tokenizer.json (or a folder holding one)."
        )
    return lm


def check_backend(recipe):
    """Fail early when `model.remat` or `training.microbatches` cannot run on this Keras backend."""
    from smallcoder.models.backbone import check_remat
    from smallcoder.training.microbatching import check_microbatches_backend

    microbatches = recipe["training.microbatches"]
    checks = (("model.remat", check_remat, recipe.remat),
              ("training.microbatches", check_microbatches_backend, microbatches))
    for key, check, value in checks:
        try:
            check(value, name=key)
        except ValueError as e:
            raise TrainingError(f"{recipe.where(key)}: {e}") from e


def checkpoint_dir(recipe, run_dir):
    """`checkpoint.dir` (a folder or bucket URI), else `<run>/checkpoints`."""
    return recipe["checkpoint.dir"] or os.path.join(run_dir, checkpoint.CHECKPOINTS)


def _prepare_run_dir(recipe, run_dir, checkpoints_dir, resume, echo):
    """Return `(step, path)` of the checkpoint to resume from, or None.

    Every process decides alike from the same folders; process 0 clears a
    demo run that starts over, and the others wait for it.
    """
    found = checkpoint.latest(checkpoints_dir)
    if resume:
        if found is None:
            echo(f"resume: no checkpoint in {checkpoints_dir}; starting from the beginning.")
        return found
    if found is not None:
        if not recipe.demo:
            raise TrainingError(
                f"{run_dir} already holds checkpoints (newest: step {found[0]}). Pass --resume to "
                "continue that run, or --output to start a new one elsewhere."
            )
        echo(f"demo: starting over in {run_dir} (pass --resume to continue the previous run).")
    if multihost.is_primary():
        from etils import epath

        if epath.Path(checkpoints_dir).exists():
            epath.Path(checkpoints_dir).rmtree()
        for name in ("metrics.jsonl", "tensorboard", "summary.json"):
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    multihost.barrier("smallcoder_prepare_run_dir")
    return None


def enable_compilation_cache():
    """Keep XLA programs in `$SMALLCODER_CACHE/jax` (JAX), so a rerun or `--resume` skips compiling."""
    import keras

    if keras.config.backend() != "jax":
        return
    import jax

    from smallcoder.demo_tokenizer import cache_dir

    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", os.path.join(cache_dir(), "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _learning_rate_fn(recipe):
    """Micro-batch index -> learning rate, as the optimizer sees it (for the logs)."""
    import keras

    from smallcoder.training.optimizer import learning_rate_schedule

    schedule = learning_rate_schedule(recipe)
    accumulation = recipe["training.gradient_accumulation_steps"]

    def learning_rate(micro_step):
        return float(keras.ops.convert_to_numpy(schedule(micro_step // accumulation)))

    return learning_rate


def run_stage(recipe, *, resume=False, output_dir=None, echo=print):
    """Train one stage as its recipe says; return the summary dict.

    With several JAX processes, every process calls this; process 0 alone
    prints (through `echo`), writes the run folder's logs and exports, and
    returns the summary (the others return None).

    Args:
        recipe: a validated `smallcoder.recipes.Recipe`.
        resume: continue from the newest checkpoint in the run folder.
        output_dir: run folder (default `recipe.output_dir`).
        echo: where progress lines go.

    Raises:
        TrainingError: a NaN loss (the last good checkpoint is kept), or a run
            folder that already holds a (non-demo) run without `resume`.
    """
    import keras

    started = time.time()
    primary = multihost.is_primary()
    if not primary:
        echo = _quiet
    check_tokenizer(recipe)
    check_backend(recipe)
    run_dir = output_dir or recipe.output_dir
    checkpoints_dir = checkpoint_dir(recipe, run_dir)
    found = _prepare_run_dir(recipe, run_dir, checkpoints_dir, resume, echo)
    # Before the model is built or the run folder made: a source that cannot be
    # opened (offline hub, a wrong path) stops the run in one line.
    check_sources_open(recipe["data"], demo=recipe.demo)
    os.makedirs(run_dir, exist_ok=True)
    if primary:
        with open(os.path.join(run_dir, "recipe.yaml"), "w") as f:
            yaml.safe_dump(recipe.ordered_config(), f, sort_keys=False)

    enable_compilation_cache()
    keras.utils.set_random_seed(recipe["training.seed"])
    init_dir = recipe.init_from_dir()
    config = backbone_config(recipe, init_dir)
    distribution = make_distribution(recipe, config, echo)
    if multihost.process_count() > 1:
        for line in multihost.describe_topology(distribution_lib.mesh_shape(distribution),
                                                recipe["distribution.layout"]):
            echo(line)
    store = checkpoint.Checkpoints(checkpoints_dir, keep=recipe["checkpoint.keep"])
    try:
        with distribution.scope() if distribution else contextlib.nullcontext():
            lm, summary = _train(recipe, run_dir, init_dir, config, distribution, store, found, echo)
        waited = store.wait()
        summary["checkpoint_save_s"] = _save_timings(store, waited)
        weights = _gather_weights(lm)  # fsdp shards from every process
    finally:
        store.close()
    multihost.shutdown()  # process 0 carries on alone with the gathered weights
    if not primary:
        return None
    if weights is not None:
        lm = _local_copy(lm, weights)
    _save_preset(lm, summary["model"], echo)
    summary["hf"] = _export_hf(recipe, lm, run_dir, echo)
    summary["sample"] = _sample(recipe, lm, echo)
    summary["eval"] = _evaluate(recipe, lm, run_dir, echo)
    summary["wall_s"] = round(time.time() - started, 1)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    echo(format_summary(summary))
    return summary


def _quiet(*args, **kwargs):
    """`echo` of the processes other than 0."""


def _save_timings(store, waited):
    """`{"blocking": [s per save], "final_wait": s}`: what checkpointing cost the training loop."""
    blocking = [round(seconds, 3) for _, seconds in store.timings]
    return {"blocking": blocking, "final_wait": round(waited, 3)} if blocking else None


def _gather_weights(lm):
    """Every weight of `lm` as numpy on every process (a collective), or None with one process."""
    if multihost.process_count() == 1:
        return None
    return [multihost.gather_to_host(v.value) for v in lm.weights]


def _local_copy(lm, values):
    """`lm` rebuilt on this process's devices alone, holding `values` (see `_gather_weights`)."""
    from smallcoder.models.backbone import SmallCoderBackbone
    from smallcoder.models.causal_lm import SmallCoderCausalLM

    local = SmallCoderCausalLM(SmallCoderBackbone.from_config(lm.backbone.get_config()),
                               tokenizer=lm.tokenizer)
    local.set_weights(values)
    return local


def _train(recipe, run_dir, init_dir, config, distribution, store, found, echo):
    """Build, restore and `fit`; return `(lm, summary)` (the summary without exports)."""
    from smallcoder.data.streams import StreamBatches
    from smallcoder.training.batches import TrackedBatches
    from smallcoder.training.callbacks import (
        Checkpointer,
        MetricsLog,
        NanGuard,
        ProgressBar,
        Throughput,
        TokenAccounting,
        sync_state,
    )
    from smallcoder.training.flops import flops_per_token, peak_flops
    from smallcoder.training.metrics import compile_for_training
    from smallcoder.training.optimizer import build_optimizer

    primary = multihost.is_primary()
    lm = load_model(recipe, init_dir, echo, resuming=found is not None)
    optimizer = build_optimizer(recipe, lm.trainable_variables)
    compile_for_training(lm, optimizer, microbatches=recipe["training.microbatches"])

    accumulation = recipe["training.gradient_accumulation_steps"]
    total_steps = recipe.steps * accumulation  # micro-batches
    seq_len = recipe["training.sequence_length"]
    try:
        rows = distribution_lib.process_rows(distribution, recipe.micro_batch, seq_len)
    except ValueError as e:
        raise TrainingError(str(e)) from e
    try:
        batches = StreamBatches(
            recipe["data"], lm.tokenizer, sequence_length=seq_len, micro_batch=recipe.micro_batch,
            num_streams=recipe.data_streams, rows=rows, seed=recipe["training.seed"], demo=recipe.demo,
        )
    except ValueError as e:
        raise TrainingError(f"{recipe.where('training.data_streams')}: training.data_streams: {e}") from e
    start_step = 0
    if found is not None:
        start_step, path = found
        try:
            state = store.restore(start_step, lm)
            batches.load_state_dict(state["data"])
        except ValueError as e:
            raise TrainingError(f"Cannot resume from {path}: {e} Resume with the recipe and --set "
                                "values of that run, or start a new run with --output.") from e
        echo(f"resume: step {start_step} of {total_steps} from {path} (weights, optimizer, data "
             f"position)")
    tracker = TrackedBatches(batches, start_step)

    import keras

    devices = len(keras.distribution.list_devices()) if keras.distribution.distribution() else 1
    peak, peak_source = peak_flops()
    if peak_source.startswith("measured"):
        devices = multihost.process_count()  # the host matmul already used every core of a host
    fpt = flops_per_token(config, seq_len)
    params = lm.backbone.count_params()
    echo(f"model: {params:,} parameters, {fpt / 1e6:,.1f} MFLOP per token; peak "
         f"{peak / 1e12:,.3f} TFLOP/s x {devices} ({peak_source})")
    d = recipe.derived()
    echo(f"train: {d['steps']:,} steps x {d['tokens_per_step']:,} tokens = {d['steps'] * d['tokens_per_step']:,} "
         f"tokens; warmup {d['warmup_steps']}, schedule {recipe['schedule.type']}")
    echo(f"data: {recipe.data_streams} streams of {recipe.micro_batch // recipe.data_streams} row(s) per "
         f"batch{'' if multihost.process_count() == 1 else f'; this process feeds rows {rows[0]}-{rows[1] - 1}'}")

    nan_guard = NanGuard(start_step)
    throughput = Throughput(recipe.micro_batch * seq_len, fpt, peak * devices)
    tokens = TokenAccounting(tracker, start_step)
    checkpointer = Checkpointer(store, tracker, start_step, total_steps,
                                recipe["checkpoint.every_steps"] * accumulation, nan_guard)
    callbacks = [nan_guard, throughput, tokens, checkpointer]  # every process, in this order
    if primary:
        metrics_log = MetricsLog(run_dir, start_step, _learning_rate_fn(recipe),
                                 every=recipe["logging.every_steps"], tensorboard=recipe["logging.tensorboard"])
        callbacks += [metrics_log, ProgressBar(total_steps, start_step, recipe["logging.every_steps"])]
    with batches:
        if start_step < total_steps:
            lm.fit(tracker.generator(), steps_per_epoch=total_steps - start_step, epochs=1,
                   verbose=0, shuffle=False, callbacks=callbacks)
        else:
            echo("resume: the last checkpoint is the final step; nothing left to train.")
            if primary:
                metrics_log.on_train_end()
    if nan_guard.bad_step is not None:
        store.wait()
        last = store.latest()
        kept = f"the last good checkpoint is {last[1]} (step {last[0]})" if last else "no checkpoint was written yet"
        raise TrainingError(
            f"Loss became NaN at step {nan_guard.bad_step}; training stopped and {kept}. "
            "Lower optimizer.learning_rate or optimizer.clipnorm, check the data, then rerun with --resume."
        )
    sync_state(lm)

    model_dir = os.path.join(run_dir, "model")
    summary = {
        "stage": recipe.name,
        "demo": recipe.demo,
        "steps": total_steps,
        "resumed_from": start_step or None,
        "processes": multihost.process_count(),
        "tokens": total_steps * recipe.micro_batch * seq_len,
        "tokens_per_source": tokens.counts,
        "tokens_per_s": round(statistics.median(throughput.tokens_per_s)) if throughput.tokens_per_s else None,
        "mfu": None,
        "checkpoint": checkpointer.last_saved or (store.latest() or (None, None))[1],
        "model": model_dir,
    }
    if primary:
        summary.update(first_loss=_first_loss(run_dir), last_loss=_last_losses(run_dir)[-1],
                       last_loss_mean10=round(statistics.fmean(_last_losses(run_dir)), 4))
    if summary["tokens_per_s"]:
        summary["mfu"] = round(summary["tokens_per_s"] * fpt / (peak * devices), 4)
    return lm, summary


def _save_preset(lm, model_dir, echo):
    lm.save_to_preset(model_dir)
    echo(f"saved: {model_dir} (Keras preset; the next stage's init_from)")


def _first_loss(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        line = f.readline()
    return json.loads(line)["loss"] if line else None


def _last_losses(run_dir, count=10):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f]
    return losses[-count:] or [float("nan")]


def _export_hf(recipe, lm, run_dir, echo):
    if not recipe["export.hf"]:
        return None
    try:
        from smallcoder.convert import save_hf
    except ImportError as e:
        echo(f"export: skipped, smallcoder.convert is not available ({e}).")
        return None
    hf_dir = os.path.join(run_dir, "hf")
    save_hf(lm, hf_dir, dtype=recipe["export.dtype"], overwrite=True)
    echo(f"saved: {hf_dir} (Hugging Face, {recipe['export.dtype']})")
    return hf_dir


def _sample(recipe, lm, echo):
    max_new_tokens = recipe["sample.max_new_tokens"]
    if not max_new_tokens:
        return None
    from smallcoder.tokenizer import chat_prompt

    prompt = recipe["sample.prompt"]
    if recipe["data.format"] == "chat":
        prompt = chat_prompt(prompt)
    lm.compile(sampler="greedy")  # generation only from here on
    text = lm.generate(prompt, max_new_tokens=max_new_tokens, strip_prompt=True)
    echo(f"sample: {prompt!r}\n  -> {text!r}")
    return {"prompt": prompt, "completion": text}


def _evaluate(recipe, lm, run_dir, echo):
    tasks = recipe["eval.tasks"] or []
    if not tasks:
        return None
    try:
        from smallcoder.eval import run_eval
    except ImportError as e:
        echo(f"eval: skipped, smallcoder.eval.run_eval is not available ({e}).")
        return None
    results = {}
    chat = recipe["data.format"] == "chat"  # checkpoints before SFT are not chat models
    for task in tasks:
        echo(f"eval: {task} (limit {recipe['eval.limit']}, {'chat' if chat else 'raw'} prompts)")
        try:
            result = run_eval(lm, task, limit=recipe["eval.limit"], chat=chat,
                              output_dir=os.path.join(run_dir, "eval", task))
        except (OSError, ValueError, RuntimeError) as e:
            # The weights and exports are already saved; a gate that cannot run (e.g. MBPP
            # offline without data) is reported in the summary, not a lost stage.
            echo(f"eval: {task} could not run: {e}")
            results[task] = {"error": str(e)}
            continue
        results[task] = result.get("scores", result)  # the full report stays in eval/<task>/
    return results


def format_summary(summary):
    """The end-of-run summary as aligned lines."""
    resumed = summary.get("resumed_from")
    processes = summary.get("processes", 1)
    lines = [f"== {summary['stage']}{' (demo)' if summary['demo'] else ''}: "
             f"{summary['steps']:,} steps, {summary['tokens']:,} tokens in {summary.get('wall_s', 0):.0f} s"
             + (f" (resumed at step {resumed:,})" if resumed else "")
             + (f" on {processes} processes" if processes > 1 else "")]
    for source, count in summary["tokens_per_source"].items():
        lines.append(f"   tokens  {source:<24} {count:>14,}")
    if summary["first_loss"] is not None:
        lines.append(f"   loss    first {summary['first_loss']:.4f} -> last {summary['last_loss']:.4f} "
                     f"(mean of the last 10 steps {summary['last_loss_mean10']:.4f})")
    if summary["tokens_per_s"]:
        lines.append(f"   speed   {summary['tokens_per_s']:,} tokens/s, MFU {100 * summary['mfu']:.1f}%")
    saves = summary.get("checkpoint_save_s")
    if saves:
        lines.append(f"   saves   {len(saves['blocking'])} checkpoint(s); training waited "
                     f"{sum(saves['blocking']):.2f} s for them, {saves['final_wait']:.2f} s for the last write")
    for task, scores in (summary.get("eval") or {}).items():
        shown = (f"could not run: {scores['error']}" if "error" in scores
                 else ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        lines.append(f"   eval    {task:<10} {shown}")
    for key in ("checkpoint", "model", "hf"):
        if summary.get(key):
            lines.append(f"   {key:<7} {summary[key]}")
    return "\n".join(lines)
