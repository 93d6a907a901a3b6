"""The stage runner: a `Recipe` in, a trained checkpoint, HF export and summary out.

    recipe ─► distribution ─► model (init_from / preset) ─► AdamW + schedule
           ─► data pipeline ─► model.fit(callbacks) ─► checkpoint ─► export, sample, eval

Run folder (`recipe.output_dir` or `--output`)::

    recipe.yaml        the resolved recipe
    metrics.jsonl      one line per step: loss, learning rate, tokens/s, MFU, tokens per source
    tensorboard/       the same as TensorBoard scalars
    checkpoints/       step_XXXXXXXX/ (see `checkpoint`), the newest `checkpoint.keep`
    model/             the final Keras preset (what the next stage's `init_from` loads)
    hf/                the final Hugging Face export
    summary.json
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import time

import yaml

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


def load_model(recipe, init_dir, echo):
    """`SmallCoderCausalLM` from `init_dir` (previous stage) or the recipe's preset."""
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.models.presets import is_keras_preset

    dtype, remat = recipe["model.dtype"], recipe.remat
    if remat:
        echo(f"model: remat {remat} (each decoder block recomputed in the backward pass)")
    if init_dir and is_keras_preset(init_dir):
        echo(f"model: initialised from {init_dir}")
        lm = SmallCoderCausalLM.from_preset(init_dir, dtype=dtype, remat=remat)
    else:
        if init_dir:  # only reachable with --demo (check_init_from raises otherwise)
            stage = recipe["init_from"]
            echo(f"model: no demo checkpoint of stage {stage!r} at {init_dir} (run "
                 f"`smallcoder recipe run {stage} --demo` first to chain stages); "
                 f"starting from scratch.")
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


def check_tokenizer(recipe, init_dir):
    """Fail early when the model would have no tokenizer (303m from scratch needs one)."""
    from smallcoder.demo_tokenizer import DEMO_VOCAB_SIZE
    from smallcoder.models.presets import PRESETS, is_keras_preset

    preset = recipe["model.preset"]
    from_preset = not (init_dir and is_keras_preset(init_dir))
    if (from_preset and not recipe["model.tokenizer"] and preset in PRESETS
            and PRESETS[preset]["vocabulary_size"] != DEMO_VOCAB_SIZE):
        raise TrainingError(
            f"{recipe.where('model.tokenizer')}: model.tokenizer: {preset} comes without a tokenizer; "
            "set model.tokenizer to the StarCoder tokenizer.json (or a folder holding one)."
        )


def _prepare_run_dir(recipe, run_dir, resume, echo):
    """Return `(step, path)` of the checkpoint to resume from, or None."""
    found = checkpoint.latest(run_dir)
    if resume:
        if found is None:
            echo(f"resume: no checkpoint in {run_dir}; starting from the beginning.")
        return found
    if found is not None:
        if not recipe.demo:
            raise TrainingError(
                f"{run_dir} already holds checkpoints (newest: step {found[0]}). Pass --resume to "
                "continue that run, or --output to start a new one elsewhere."
            )
        echo(f"demo: starting over in {run_dir} (pass --resume to continue the previous run).")
    for name in ("checkpoints", "metrics.jsonl", "tensorboard", "summary.json"):
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
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


def _process():
    import keras

    if keras.config.backend() == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


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
    check_tokenizer(recipe, recipe.init_from_dir())
    check_backend(recipe)
    run_dir = output_dir or recipe.output_dir
    os.makedirs(run_dir, exist_ok=True)
    found = _prepare_run_dir(recipe, run_dir, resume, echo)
    with open(os.path.join(run_dir, "recipe.yaml"), "w") as f:
        yaml.safe_dump(recipe.ordered_config(), f, sort_keys=False)

    enable_compilation_cache()
    keras.utils.set_random_seed(recipe["training.seed"])
    init_dir = recipe.init_from_dir()
    config = backbone_config(recipe, init_dir)
    distribution = make_distribution(recipe, config, echo)
    with distribution.scope() if distribution else contextlib.nullcontext():
        summary = _train(recipe, run_dir, init_dir, config, found, echo)
    summary["wall_s"] = round(time.time() - started, 1)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    echo(format_summary(summary))
    return summary


def _train(recipe, run_dir, init_dir, config, found, echo):
    from smallcoder.data import build_pipeline
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

    lm = load_model(recipe, init_dir, echo)
    optimizer = build_optimizer(recipe, lm.trainable_variables)
    compile_for_training(lm, optimizer, microbatches=recipe["training.microbatches"])

    accumulation = recipe["training.gradient_accumulation_steps"]
    total_steps = recipe.steps * accumulation  # micro-batches
    seq_len = recipe["training.sequence_length"]
    process_index, process_count = _process()
    if recipe.micro_batch % process_count:
        raise TrainingError(f"{recipe.where('training.global_batch')}: training.global_batch: the micro-batch "
                            f"({recipe.micro_batch}) must split evenly over {process_count} processes.")
    pipeline = build_pipeline(
        recipe["data"], lm.tokenizer, sequence_length=seq_len,
        batch_size=recipe.micro_batch // process_count, seed=recipe["training.seed"],
        demo=recipe.demo, process_index=process_index, process_count=process_count,
    )
    start_step = 0
    if found is not None:
        start_step, path = found
        try:
            state = checkpoint.restore(path, lm)
            pipeline.load_state_dict(state["data"])
        except ValueError as e:
            raise TrainingError(f"Cannot resume from {path}: {e} Resume with the recipe and --set "
                                "values of that run, or start a new run with --output.") from e
        echo(f"resume: step {start_step} of {total_steps} from {path}")
    tracker = TrackedBatches(pipeline, start_step)

    import keras

    devices = len(keras.distribution.list_devices()) if keras.distribution.distribution() else 1
    peak, peak_source = peak_flops()
    if peak_source.startswith("measured"):
        devices = 1  # the host matmul already used every core
    fpt = flops_per_token(config, seq_len)
    params = lm.backbone.count_params()
    echo(f"model: {params:,} parameters, {fpt / 1e6:,.1f} MFLOP per token; peak "
         f"{peak / 1e12:,.3f} TFLOP/s x {devices} ({peak_source})")
    d = recipe.derived()
    echo(f"train: {d['steps']:,} steps x {d['tokens_per_step']:,} tokens = {d['steps'] * d['tokens_per_step']:,} "
         f"tokens; warmup {d['warmup_steps']}, schedule {recipe['schedule.type']}")

    nan_guard = NanGuard(start_step)
    throughput = Throughput(recipe.micro_batch * seq_len, fpt, peak * devices)
    tokens = TokenAccounting(tracker, start_step)
    metrics_log = MetricsLog(run_dir, start_step, _learning_rate_fn(recipe),
                             every=recipe["logging.every_steps"], tensorboard=recipe["logging.tensorboard"])
    checkpointer = Checkpointer(run_dir, tracker, start_step, total_steps,
                                recipe["checkpoint.every_steps"] * accumulation,
                                recipe["checkpoint.keep"], nan_guard)
    callbacks = [nan_guard, throughput, tokens, metrics_log,
                 ProgressBar(total_steps, start_step, recipe["logging.every_steps"]), checkpointer]
    if start_step < total_steps:
        lm.fit(tracker.generator(), steps_per_epoch=total_steps - start_step, epochs=1,
               verbose=0, shuffle=False, callbacks=callbacks)
    else:
        echo("resume: the last checkpoint is the final step; nothing left to train.")
        metrics_log.on_train_end()
    if nan_guard.bad_step is not None:
        last = checkpoint.latest(run_dir)
        kept = f"the last good checkpoint is {last[1]} (step {last[0]})" if last else "no checkpoint was written yet"
        raise TrainingError(
            f"Loss became NaN at step {nan_guard.bad_step}; training stopped and {kept}. "
            "Lower optimizer.learning_rate or optimizer.clipnorm, check the data, then rerun with --resume."
        )
    sync_state(lm)

    model_dir = os.path.join(run_dir, "model")
    lm.save_to_preset(model_dir)
    echo(f"saved: {model_dir} (Keras preset; the next stage's init_from)")
    summary = {
        "stage": recipe.name,
        "demo": recipe.demo,
        "steps": total_steps,
        "resumed_from": start_step or None,
        "tokens": total_steps * recipe.micro_batch * seq_len,
        "tokens_per_source": tokens.counts,
        "first_loss": _first_loss(run_dir),
        "last_loss": _last_losses(run_dir)[-1],
        "last_loss_mean10": round(statistics.fmean(_last_losses(run_dir)), 4),
        "tokens_per_s": round(statistics.median(throughput.tokens_per_s)) if throughput.tokens_per_s else None,
        "mfu": None,
        "checkpoint": checkpointer.last_saved or (checkpoint.latest(run_dir) or (None, None))[1],
        "model": model_dir,
    }
    if summary["tokens_per_s"]:
        summary["mfu"] = round(summary["tokens_per_s"] * fpt / (peak * devices), 4)
    summary["hf"] = _export_hf(recipe, lm, run_dir, echo)
    summary["sample"] = _sample(recipe, lm, echo)
    summary["eval"] = _evaluate(recipe, lm, run_dir, echo)
    return summary


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
    lines = [f"== {summary['stage']}{' (demo)' if summary['demo'] else ''}: "
             f"{summary['steps']:,} steps, {summary['tokens']:,} tokens in {summary.get('wall_s', 0):.0f} s"]
    for source, count in summary["tokens_per_source"].items():
        lines.append(f"   tokens  {source:<24} {count:>14,}")
    if summary["first_loss"] is not None:
        lines.append(f"   loss    first {summary['first_loss']:.4f} -> last {summary['last_loss']:.4f} "
                     f"(mean of the last 10 steps {summary['last_loss_mean10']:.4f})")
    if summary["tokens_per_s"]:
        lines.append(f"   speed   {summary['tokens_per_s']:,} tokens/s, MFU {100 * summary['mfu']:.1f}%")
    for task, scores in (summary.get("eval") or {}).items():
        shown = (f"could not run: {scores['error']}" if "error" in scores
                 else ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        lines.append(f"   eval    {task:<10} {shown}")
    for key in ("checkpoint", "model", "hf"):
        if summary.get(key):
            lines.append(f"   {key:<7} {summary[key]}")
    return "\n".join(lines)
