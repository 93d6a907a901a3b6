"""`model.fit` callbacks of the stage runner.

They run in list order on one shared `logs` dict per step: `NanGuard` first
(so nothing is saved after a NaN), then `Throughput`, `TokenAccounting`,
`validation.ValidationLoss` and `Checkpointer` (every process; the last three
run collectives) add numbers to `logs`, then `MetricsLog` and `ProgressBar`
(process 0) use them. Steps are global: `start_step + batch + 1` micro-batches trained.
"""

import json
import math
import os
import time

import keras


def sync_state(model):
    """Make `model.variables` current inside a JAX `fit` (no-op elsewhere)."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


class NanGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss; `bad_step` says where (None if none)."""

    def __init__(self, start_step):
        super().__init__()
        self.start_step = start_step
        self.bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.bad_step = self.start_step + batch + 1
            self.model.stop_training = True
            logs["nan"] = True


class Throughput(keras.callbacks.Callback):
    """Adds `tokens_per_s` and `mfu` (model FLOPs / (peak x devices)) to `logs`.

    Args:
        tokens_per_step: tokens in one micro-batch (all devices).
        flops_per_token: training FLOPs per token (`flops.flops_per_token`).
        peak_flops: peak FLOP/s of all devices together.
    """

    def __init__(self, tokens_per_step, flops_per_token, peak_flops):
        super().__init__()
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.tokens_per_s = []

    def on_train_batch_begin(self, batch, logs=None):
        if not hasattr(self, "_last"):
            self._last = time.perf_counter()

    def restart(self):
        """Start the next step's clock now (time spent outside training, e.g. validation, is not counted)."""
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        rate = self.tokens_per_step / max(seconds, 1e-9)
        if batch > 0:  # the first step includes compilation
            self.tokens_per_s.append(rate)
        logs["tokens_per_s"] = rate
        logs["mfu"] = rate * self.flops_per_token / self.peak_flops


class TokenAccounting(keras.callbacks.Callback):
    """Adds `tokens/<source>` (trained so far by the whole job, per mixture source) to `logs`.

    With several processes each holds its own streams' counts; every process
    calls this at every step, and the counts are gathered and summed.

    Args:
        tracker: the `TrackedBatches` feeding `fit`.
        start_step: micro-batches trained before this `fit`.
    """

    def __init__(self, tracker, start_step):
        super().__init__()
        self.tracker = tracker
        self.start_step = start_step
        self.counts = self._global_counts(start_step)

    def _global_counts(self, step):
        from smallcoder import multihost
        from smallcoder.data.streams import total_token_counts

        local = self.tracker.snapshot(step)["stream_tokens"]
        return total_token_counts(self.tracker.pipeline.names, multihost.allgather_json(local))

    def on_train_batch_end(self, batch, logs=None):
        self.counts = self._global_counts(self.start_step + batch + 1)
        for source, tokens in self.counts.items():
            logs[f"tokens/{source}"] = tokens


class MetricsLog(keras.callbacks.Callback):
    """Per-step `metrics.jsonl` (every step) and TensorBoard scalars (every `every` steps).

    Each jsonl line: `{"step", "loss", "learning_rate", "tokens_per_s", "mfu",
    "tokens/<source>"…}`, plus `val_loss` and `val_perplexity` at the steps
    that evaluated them (always written to TensorBoard). On resume, lines after the checkpoint step are
    dropped first, so the file always reads as one uninterrupted run.
    """

    def __init__(self, run_dir, start_step, learning_rate, every=10, tensorboard=True):
        super().__init__()
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.start_step = start_step
        self.learning_rate = learning_rate
        self.every = every
        self.writer = None
        _truncate_jsonl(self.path, start_step)
        self.file = open(self.path, "a")
        if tensorboard:
            try:
                import tensorflow as tf
                from tensorflow.core.framework import summary_pb2

                self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))
                self._scalar = summary_pb2.SummaryMetadata(
                    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
                )
            except ImportError:
                print("TensorBoard logs need tensorflow (pip install tensorflow-cpu); skipping them.")

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1
        record = {"step": step, "loss": float(logs["loss"]), "learning_rate": self.learning_rate(step - 1)}
        record.update({k: float(v) for k, v in logs.items() if k in ("tokens_per_s", "mfu", "checkpoint_blocking_s")
                       or k.startswith(("tokens/", "val_"))})
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None and (step % self.every == 0 or step == 1 or "val_loss" in record):
            import tensorflow as tf

            with self.writer.as_default(step=step):
                for key, value in record.items():
                    if key != "step" and math.isfinite(value):
                        # What tf.summary.scalar writes, without needing the
                        # tensorboard package installed in this process.
                        tf.summary.write(key, tf.constant(value, tf.float32), metadata=self._scalar)

    def on_train_end(self, logs=None):
        self.file.close()
        if self.writer is not None:
            self.writer.flush()


def _truncate_jsonl(path, last_step):
    if not os.path.isfile(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    with open(path, "w") as f:
        f.writelines(kept)


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar over the stage's steps showing loss, tokens/s and MFU."""

    def __init__(self, total_steps, start_step, every=1):
        super().__init__()
        self.total_steps = total_steps
        self.start_step = start_step
        self.every = every

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total_steps, initial=self.start_step, unit="step", dynamic_ncols=True, mininterval=0.5
        )

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if "val_loss" in logs:
            self.validation = f"{logs['val_loss']:.3f}"
        if (batch + 1) % self.every == 0 or "val_loss" in logs:
            postfix = {"loss": f"{float(logs['loss']):.3f}"}
            if getattr(self, "validation", None):
                postfix["val_loss"] = self.validation
            self.bar.set_postfix(
                **postfix,
                tok_s=f"{logs.get('tokens_per_s', 0):,.0f}",
                mfu=f"{100 * logs.get('mfu', 0):.1f}%",
                refresh=False,
            )

    def on_train_end(self, logs=None):
        self.bar.close()


class Checkpointer(keras.callbacks.Callback):
    """Checkpoint every `every` steps and at the last step (never after a NaN).

    Every process runs it: the data-stream positions of all processes are
    gathered into the checkpoint's meta, and each process saves its shards.

    Also saves the step an early stop ends training on (`model.stop_training`).

    Args:
        store: the run's `checkpoint.Checkpoints`.
        tracker: the `TrackedBatches` feeding `fit`: gives the data-stream
            state after exactly the batches trained.
        start_step, total_steps: micro-batch counts.
        every: steps between checkpoints.
        nan_guard: the run's `NanGuard`.
        meta: JSON saved with every checkpoint (e.g. where the frozen base came from).
        validation: the run's `ValidationLoss`, whose `state()` is saved, or None.
    """

    def __init__(self, store, tracker, start_step, total_steps, every, nan_guard, meta=None, validation=None):
        super().__init__()
        self.store = store
        self.tracker = tracker
        self.start_step = start_step
        self.total_steps = total_steps
        self.every = every
        self.nan_guard = nan_guard
        self.meta = dict(meta or {})
        self.validation = validation
        self.last_saved = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1
        due = step % self.every == 0 or step == self.total_steps or self.model.stop_training
        if self.nan_guard.bad_step is None and due:
            self.save(step)
            if logs is not None and self.store.timings:
                logs["checkpoint_blocking_s"] = self.store.timings[-1][1]

    def save(self, step):
        from smallcoder import multihost
        from smallcoder.data.streams import merge_states, total_token_counts

        sync_state(self.model)
        snapshot = self.tracker.snapshot(step)
        gathered = multihost.allgather_json({"data": snapshot["data"], "tokens": snapshot["stream_tokens"]})
        meta = {
            **self.meta,
            "data": merge_states([g["data"] for g in gathered]),
            "token_counts": total_token_counts(self.tracker.pipeline.names, [g["tokens"] for g in gathered]),
        }
        if self.validation is not None:
            meta["validation"] = self.validation.state()
        self.store.save(step, self.model, meta)
        self.last_saved = self.store.path(step)
        self.tracker.forget_before(step)
