"""The stage runner: a `Recipe` in, a trained checkpoint, HF export and summary out.

    recipe ─► distribution ─► model (init_from / preset) ─► AdamW + schedule
           ─► data streams (this process's rows) ─► model.fit(callbacks) ─► checkpoints
           ─► (gather the weights) ─► export, sample, eval on process 0

Run folder (`recipe.output_dir` or `--output`)::

    recipe.yaml        the resolved recipe, and what was loaded (weights, tokenizer, EOS)
    metrics.jsonl      one line per step: loss, learning rate, tokens/s, MFU, tokens per source;
                       validation loss and perplexity at the steps that evaluate them
    tensorboard/       the same as TensorBoard scalars
    checkpoints/       step_XXXXXXXX/ (see `checkpoint`), the newest `checkpoint.keep`
                       (`checkpoint.dir` puts them elsewhere, e.g. a gs:// bucket)
    model/             the final Keras preset (what the next stage's `init_from` loads)
    hf/                the final Hugging Face export
    adapters.lora.h5   with `model.lora`: the adapters alone (model/ and hf/ have them merged)
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

import numpy as np
import yaml

from smallcoder import distribution as distribution_lib
from smallcoder import multihost
from smallcoder.data.preflight import check_sources_open
from smallcoder.recipes import check_tokenizer
from smallcoder.training import checkpoint


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, bad resume, …), with what to do."""


def backbone_config(recipe, source=None):
    """The backbone config the run will build, read without building it.

    `source`: the local model source (`resolve_model_source`); default the
    recipe's `model.preset`. A Keras preset folder and a Hugging Face folder
    are read from their `config.json`.
    """
    from smallcoder.models.presets import preset_config

    try:
        return preset_config(source or recipe["model.preset"])
    except ValueError as e:
        key = "init_from" if recipe.init_from_dir() else "model.preset"
        raise TrainingError(f"{recipe.where(key)}: {key}: {e}") from e


def resolve_model_source(recipe, echo, resuming=False):
    """The local model source of the run: a preset name or folder; a Hub id is downloaded here
    (offline: a one-line error within seconds). A stage folder missing with `--demo` falls back
    to `model.preset` (a fresh run says so)."""
    from smallcoder.models.presets import is_hub_id

    source = recipe.model_source()
    stage = recipe.init_from_stage()
    if stage and not os.path.isdir(source):  # only with --demo (check_init_from raises otherwise)
        if not resuming:
            echo(f"model: no demo checkpoint of stage {stage!r} at {source} (run `smallcoder recipe run {stage} "
                 "--demo` first to chain stages); starting from scratch.")
        return recipe["model.preset"]
    if is_hub_id(source):
        from smallcoder.convert.hub import resolve_folder

        try:
            folder = resolve_folder(source)
        except OSError as e:
            key = "init_from" if recipe.init_from_dir() else "model.preset"
            raise TrainingError(f"{recipe.where(key)}: {key}: {e}") from e
        echo(f"model: {source} from the Hugging Face Hub, in {folder}")
        return folder
    return source


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


def load_model(recipe, source, echo, resuming=False):
    """`SmallCoderCausalLM` from `source` (see `resolve_model_source`), with the run's tokenizer.

    `resuming`: the weights will come from a checkpoint (with LoRA, all but
    the frozen base); say so instead of describing a fresh start.
    """
    from smallcoder.models.presets import PRESETS, is_hf_folder, load_causal_lm

    dtype, remat = recipe["model.dtype"], recipe.remat
    if remat:
        echo(f"model: remat {remat} (each decoder block recomputed in the backward pass)")
    if not resuming or recipe.lora_rank:
        if source in PRESETS:
            echo(f"model: fresh {source} weights (seed {recipe['training.seed']})")
        else:
            kind = "Hugging Face folder" if is_hf_folder(source) else "Keras preset"
            echo(f"model: {'frozen base ' if resuming else ''}initialised from {source} ({kind})")
    try:
        lm = load_causal_lm(source, dtype=dtype, remat=remat)
    except (OSError, ValueError) as e:
        key = "init_from" if recipe.init_from_dir() else "model.preset"
        raise TrainingError(f"{recipe.where(key)}: {key}: {e}") from e
    lm.tokenizer = run_tokenizer(recipe, lm.tokenizer, lm.backbone.vocabulary_size)
    return lm


def run_tokenizer(recipe, checkpoint_tokenizer, vocabulary_size):
    """The run's tokenizer: the checkpoint's, unless the recipe sets `model.tokenizer` (a
    tokenizer.json or a folder: its EOS from `tokenizer_config.json`) or `model.eos_token`."""
    from smallcoder.convert.hf import folder_tokenizer
    from smallcoder.tokenizer import SmallCoderTokenizer

    path, eos = recipe["model.tokenizer"], recipe["model.eos_token"]
    key = "model.eos_token" if eos else "model.tokenizer"
    try:
        tokenizer = checkpoint_tokenizer
        if path:
            tokenizer = folder_tokenizer(path) if os.path.isdir(path) else SmallCoderTokenizer(path)
        if tokenizer is not None and eos:
            tokenizer = SmallCoderTokenizer(tokenizer.backend, eos_token=eos)
    except (OSError, ValueError) as e:
        raise TrainingError(f"{recipe.where(key)}: {key}: {e}") from e
    if tokenizer is None:
        raise TrainingError(
            f"{recipe.where('model.tokenizer')}: model.tokenizer: {recipe.model_source()} comes without a "
            "tokenizer; set model.tokenizer to the StarCoder tokenizer.json (or a folder holding one)."
        )
    if tokenizer.vocab_size > vocabulary_size:
        raise TrainingError(
            f"{recipe.where('model.tokenizer')}: model.tokenizer: the tokenizer has {tokenizer.vocab_size:,} "
            f"tokens but the model only {vocabulary_size:,} embeddings.")
    return tokenizer


def _write_recipe(recipe, run_dir, source, tokenizer):
    """`<run>/recipe.yaml`: the resolved recipe, with the tokenizer and EOS the run loaded filled in."""
    from smallcoder.models.presets import PRESETS

    config = recipe.ordered_config()
    config["model"] = dict(config["model"])
    from_folder = source not in PRESETS and not recipe["model.tokenizer"]
    if from_folder:
        config["model"]["tokenizer"] = source
    config["model"]["eos_token"] = tokenizer.eos_token
    where = recipe["model.tokenizer"] or (source if from_folder else f"the built-in {source} preset's")
    header = (f"# This run loaded: weights {'fresh ' + source if source in PRESETS else 'from ' + source}; "
              f"tokenizer {where} ({tokenizer.vocab_size:,} tokens); EOS {tokenizer.eos_token!r} "
              f"(id {tokenizer.eos_token_id}).\n")
    if recipe.data_files:
        header += f"# --data {' '.join(recipe.data_files)}: data.sources below.\n"
    with open(os.path.join(run_dir, "recipe.yaml"), "w") as f:
        f.write(header)
        yaml.safe_dump(config, f, sort_keys=False)


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
    check_sources_open(recipe["data"], demo=recipe.demo_data)
    from smallcoder.training.validation import validation_problem

    no_validation = validation_problem(recipe)
    if no_validation is None:
        check_sources_open(recipe["data"], demo=recipe.demo_data, split="validation")
    source = resolve_model_source(recipe, echo, resuming=found is not None)  # downloads a Hub id
    config = backbone_config(recipe, source)
    os.makedirs(run_dir, exist_ok=True)

    enable_compilation_cache()
    keras.utils.set_random_seed(recipe["training.seed"])
    distribution = make_distribution(recipe, config, echo)
    if multihost.process_count() > 1:
        for line in multihost.describe_topology(distribution_lib.mesh_shape(distribution),
                                                recipe["distribution.layout"]):
            echo(line)
    store = checkpoint.Checkpoints(checkpoints_dir, keep=recipe["checkpoint.keep"])
    try:
        with distribution.scope() if distribution else contextlib.nullcontext():
            lm, summary = _train(recipe, run_dir, source, config, distribution, store, found, no_validation, echo)
        waited = store.wait()
        summary["checkpoint_save_s"] = _save_timings(store, waited)
        weights = _gather_weights(lm)  # fsdp shards from every process
    finally:
        store.close()
    multihost.shutdown()  # process 0 carries on alone with the gathered weights
    if not primary:
        return None
    lm = _final_model(recipe, lm, weights, run_dir, summary, echo)
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
    """`{path: numpy}` of every weight of `lm` on every process (a collective), or None with one
    process."""
    if multihost.process_count() == 1:
        return None
    return {v.path: multihost.gather_to_host(v.value) for v in lm.weights}


def _final_model(recipe, lm, weights, run_dir, summary, echo):
    """The model to export: `lm` itself, or (several processes; LoRA) a local plain copy.

    With LoRA the copy has the adapters merged into its kernels, and the
    adapters alone are written to `<run>/adapters.lora.h5` first.
    """
    from smallcoder.training import lora

    found = lora.adapters(lm.backbone)
    if weights is None and not found:
        return lm
    import keras

    values = weights or {v.path: keras.ops.convert_to_numpy(v.value) for v in lm.weights}
    config = lm.backbone.get_config()
    if found:
        path = os.path.join(run_dir, lora.ADAPTERS_FILE)
        lora.write_adapters(config, values, found, recipe.lora_rank, recipe["model.lora.targets"], path)
        summary["lora"]["adapters"] = path
        echo(f"saved: {path} (the adapters alone: keras-hub load_lora_weights on the base model)")
        values = lora.merge(values, found)
    return _local_copy(lm, values)


def _local_copy(lm, values):
    """A plain `SmallCoderCausalLM` of `lm`'s config on this process's devices alone, holding
    `values` (`{path: array}`)."""
    from smallcoder.models.backbone import SmallCoderBackbone
    from smallcoder.models.causal_lm import SmallCoderCausalLM

    local = SmallCoderCausalLM(SmallCoderBackbone.from_config(lm.backbone.get_config()),
                               tokenizer=lm.tokenizer)
    for variable in local.weights:
        variable.assign(values[variable.path])
    return local


def _train(recipe, run_dir, source, config, distribution, store, found, no_validation, echo):
    """Build, restore and `fit`; return `(lm, summary)` (the summary without exports).

    `no_validation`: why the run has no validation split (`validation_problem`), or None.
    """
    from smallcoder.data.streams import StreamBatches
    from smallcoder.training import lora
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
    from smallcoder.training.validation import ValidationLoss, ValidationSet

    primary = multihost.is_primary()
    lm = load_model(recipe, source, echo, resuming=found is not None)
    if primary:
        _write_recipe(recipe, run_dir, source, lm.tokenizer)
    params = lm.backbone.count_params()
    if recipe.lora_rank:
        alpha, targets = recipe["model.lora.alpha"], recipe["model.lora.targets"]
        lora.enable(lm.backbone, recipe.lora_rank, alpha, targets)
        trainable = sum(int(np.prod(v.shape)) for v in lm.trainable_variables)
        echo(f"lora: rank {recipe.lora_rank}, alpha {alpha or recipe.lora_rank} on {', '.join(targets)}: "
             f"{trainable:,} trainable parameters; the other {params:,} are frozen")
    optimizer = build_optimizer(recipe, lm.trainable_variables)
    compile_for_training(lm, optimizer, microbatches=recipe["training.microbatches"])

    accumulation = recipe["training.gradient_accumulation_steps"]
    total_steps = recipe.steps * accumulation  # micro-batches
    seq_len = recipe["training.sequence_length"]
    try:
        rows = distribution_lib.process_rows(distribution, recipe.micro_batch, seq_len)
    except ValueError as e:
        raise TrainingError(str(e)) from e
    stream_args = dict(sequence_length=seq_len, micro_batch=recipe.micro_batch, num_streams=recipe.data_streams,
                       rows=rows, seed=recipe["training.seed"], demo=recipe.demo_data)
    try:
        batches = StreamBatches(recipe["data"], lm.tokenizer, **stream_args)
    except ValueError as e:
        raise TrainingError(f"{recipe.where('training.data_streams')}: training.data_streams: {e}") from e
    start_step, state = 0, {}
    base = {"model_source": recipe.model_source()} if recipe.lora_rank else {}
    if found is not None:
        start_step, path = found
        try:
            state = store.restore(start_step, lm)
            batches.load_state_dict(state["data"])
        except ValueError as e:
            raise TrainingError(f"Cannot resume from {path}: {e} Resume with the recipe and --set "
                                "values of that run, or start a new run with --output.") from e
        if base and state.get("model_source") != base["model_source"]:
            raise TrainingError(
                f"Cannot resume from {path}: its adapters were trained on the frozen base "
                f"{state.get('model_source')!r}, and this run starts from {base['model_source']!r}. Resume "
                "with the init_from of that run.")
        echo(f"resume: step {start_step} of {total_steps} from {path} (weights, optimizer, data "
             f"position)")
    tracker = TrackedBatches(batches, start_step)

    import keras

    devices = len(keras.distribution.list_devices()) if keras.distribution.distribution() else 1
    peak, peak_source = peak_flops()
    if peak_source.startswith("measured"):
        devices = multihost.process_count()  # the host matmul already used every core of a host
    fpt = flops_per_token(config, seq_len, frozen_base=bool(recipe.lora_rank))
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
    validation = None
    if no_validation is None:
        validation_set = ValidationSet(recipe["data"], lm.tokenizer, **stream_args,
                                       max_batches=recipe["eval.validation_batches"])
        every = recipe["eval.every_steps"]
        validation = ValidationLoss(validation_set, start_step, total_steps,
                                    every * accumulation if every else total_steps, nan_guard, throughput,
                                    patience=recipe["eval.early_stop_patience"], state=state.get("validation"))
        echo(f"validation: {len(validation_set)} batch(es), {int(validation_set.tokens):,} target tokens; "
             f"{f'every {every} steps and ' if every else ''}at the end"
             + (f"; early stop after {recipe['eval.early_stop_patience']} evaluation(s) without improvement"
                if recipe["eval.early_stop_patience"] else ""))
    else:
        echo(f"validation: none ({no_validation})")
    checkpointer = Checkpointer(store, tracker, start_step, total_steps,
                                recipe["checkpoint.every_steps"] * accumulation, nan_guard, meta=base,
                                validation=validation)
    callbacks = [nan_guard, throughput, tokens] + ([validation] if validation else []) + [checkpointer]
    if primary:  # every process runs the callbacks above, in this order
        metrics_log = MetricsLog(run_dir, start_step, _learning_rate_fn(recipe),
                                 every=recipe["logging.every_steps"], tensorboard=recipe["logging.tensorboard"])
        callbacks += [metrics_log, ProgressBar(total_steps, start_step, recipe["logging.every_steps"])]
    stopped = (state.get("validation") or {}).get("stopped_at")
    with batches:
        if start_step < total_steps and not stopped:
            lm.fit(tracker.generator(), steps_per_epoch=total_steps - start_step, epochs=1,
                   verbose=0, shuffle=False, callbacks=callbacks)
        else:
            echo(f"resume: the run stopped early at step {stopped} (validation loss); nothing left to train."
                 if stopped else "resume: the last checkpoint is the final step; nothing left to train.")
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
    history = validation.state() if validation else {}
    trained = history.get("stopped_at") or total_steps
    if history.get("stopped_at"):
        echo(f"early stop: at step {trained}, the validation loss has not improved for "
             f"{history['evals_since_best']} evaluation(s) (best {history['best_loss']:.4f} at step "
             f"{history['best_step']})")

    model_dir = os.path.join(run_dir, "model")
    summary = {
        "stage": recipe.name,
        "demo": recipe.demo,
        "steps": trained,
        "resumed_from": start_step or None,
        "processes": multihost.process_count(),
        "tokens": trained * recipe.micro_batch * seq_len,
        "tokens_per_source": tokens.counts,
        "tokens_per_s": round(statistics.median(throughput.tokens_per_s)) if throughput.tokens_per_s else None,
        "mfu": None,
        "checkpoint": checkpointer.last_saved or (store.latest() or (None, None))[1],
        "model": model_dir,
        "validation": None,
        "lora": None,
    }
    if recipe.lora_rank:
        summary["lora"] = {"rank": recipe.lora_rank, "alpha": recipe["model.lora.alpha"] or recipe.lora_rank,
                           "targets": list(recipe["model.lora.targets"]),
                           "trainable_parameters": sum(int(np.prod(v.shape)) for v in lm.trainable_variables)}
    if primary:
        summary.update(first_loss=_first_loss(run_dir), last_loss=_last_losses(run_dir)[-1],
                       last_loss_mean10=round(statistics.fmean(_last_losses(run_dir)), 4))
        summary["validation"] = _last_validation(run_dir, history)
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


def _last_validation(run_dir, history):
    """`{"step", "loss", "perplexity", "best_loss", "best_step", "stopped_at"}` of the last
    validation in metrics.jsonl, or None."""
    last = None
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "val_loss" in record:
                last = record
    if last is None:
        return None
    return {"step": last["step"], "loss": last["val_loss"], "perplexity": last["val_perplexity"],
            "best_loss": history.get("best_loss"), "best_step": history.get("best_step"),
            "stopped_at": history.get("stopped_at")}


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
    sample = {"prompt": prompt, "completion": text}
    sample.update(_check_sample(recipe["sample.prompt"], text) or {})
    return sample


def _check_sample(prompt, text):
    """`{"task_id", "split", "passed", "result"}` when `prompt` is a demo task's (`demo_tasks`):
    the answer run against the task's tests in the sandbox. None for any other prompt."""
    from smallcoder.data.demo_tasks import find_task, tasks

    task = find_task(prompt)
    if task is None:
        return None
    from smallcoder.eval import demo
    from smallcoder.eval.sandbox import SandboxLimits, run_program

    result = run_program(demo.build_program(task, demo.postprocess(text)), SandboxLimits(timeout_s=10))
    split = "held_out" if task in tasks("held_out") else "train"
    return {"task_id": task["task_id"], "split": split, "passed": result.status == "passed",
            "result": result.status}


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
    protocol = {k: recipe[f"eval.{k}"] for k in ("temperature", "max_new_tokens") if recipe[f"eval.{k}"] is not None}
    for task in tasks:
        echo(f"eval: {task} (limit {recipe['eval.limit']}, {'chat' if chat else 'raw'} prompts)")
        try:
            result = run_eval(lm, task, limit=recipe["eval.limit"], chat=chat,
                              **protocol,
                              output_dir=os.path.join(run_dir, "eval", task))
        except (OSError, ValueError, RuntimeError) as e:
            # The weights and exports are already saved; a gate that cannot run (e.g. MBPP
            # offline without data) is reported in the summary, not a lost stage.
            echo(f"eval: {task} could not run: {e}")
            results[task] = {"error": str(e)}
            continue
        # The full report stays in eval/<task>/.
        results[task] = {**result["scores"], "passed": result["passed"], "tasks": result["num_tasks"]}
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
    validation = summary.get("validation")
    if validation:
        lines.append(f"   valid.  loss {validation['loss']:.4f} (perplexity {validation['perplexity']:,.2f}) at step "
                     f"{validation['step']:,}"
                     + (f"; stopped early (best {validation['best_loss']:.4f} at step {validation['best_step']:,})"
                        if validation.get("stopped_at") else ""))
    for task, scores in (summary.get("eval") or {}).items():
        shown = (f"could not run: {scores['error']}" if "error" in scores
                 else ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k.startswith("pass@"))
                 + (f" ({scores['passed']} of {scores['tasks']} tasks passed)" if "tasks" in scores else ""))
        lines.append(f"   eval    {task:<10} {shown}")
    sample = summary.get("sample") or {}
    if "passed" in sample:
        lines.append(f"   sample  {sample['task_id']} ({sample['split'].replace('_', '-')} task): "
                     + ("passes its tests" if sample["passed"] else f"fails its tests ({sample['result']})"))
    if summary.get("lora"):
        lines.append(f"   lora    rank {summary['lora']['rank']}: {summary['lora']['trainable_parameters']:,} "
                     "trained parameters, merged into model and hf")
    if summary["tokens_per_s"]:
        lines.append(f"   speed   {summary['tokens_per_s']:,} tokens/s, MFU {100 * summary['mfu']:.1f}%")
    saves = summary.get("checkpoint_save_s")
    if saves:
        lines.append(f"   saves   {len(saves['blocking'])} checkpoint(s); training waited "
                     f"{sum(saves['blocking']):.2f} s for them, {saves['final_wait']:.2f} s for the last write")
    for key in ("checkpoint", "model", "hf"):
        if summary.get(key):
            lines.append(f"   {key:<7} {summary[key]}")
    if (summary.get("lora") or {}).get("adapters"):
        lines.append(f"   adapter {summary['lora']['adapters']}")
    return "\n".join(lines)
