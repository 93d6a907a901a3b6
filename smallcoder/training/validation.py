"""Validation loss: the whole validation split, the same batches on every process.

The split is read once, at the start, with the training batches' stream
layout (`StreamBatches(..., split="validation")`): stream `s` fills rows
`[s*R, (s+1)*R)` of every batch, and a process reads only its own streams. A
finite split ends at a different batch on every stream, so each stream is
padded to the longest one (over the whole job) with rows of weight 0: every
process then runs the same number of batches, as a multi-process job needs
(each batch is one collective program).

Each batch's loss is Keras' `mean_with_sample_weight` over the global batch;
with the batch's total weight W_b (gathered once) the validation loss is

    sum_b loss_b * W_b / sum_b W_b   =   sum(weighted token loss) / sum(weights)

over the whole split, whatever the number of processes or streams.
"""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np

from smallcoder import multihost


def validation_problem(recipe):
    """None when the recipe's data has a validation split, else why not (one line)."""
    from smallcoder.data.config import resolve_sources

    if recipe["eval.validation_batches"] == 0:
        return "eval.validation_batches is 0"
    try:
        resolve_sources(recipe["data"], recipe.demo_data, "validation")
    except ValueError as e:
        return str(e)
    return None


class ValidationSet:
    """This process's rows of every validation batch, padded to the job's common count.

    Args:
        data_config, tokenizer, sequence_length, micro_batch, num_streams,
        rows, seed, demo: as the training `StreamBatches`.
        max_batches: read at most this many batches per stream (None: all).

    Attributes:
        batches: `[(x, y, sample_weight)]`, each `(rows, T)`, the same count
            on every process.
        batch_weights: the total sample weight of each global batch.
        tokens: the weighted tokens of the split (their sum).
    """

    def __init__(self, data_config, tokenizer, *, sequence_length, micro_batch, num_streams, rows=None,
                 seed=0, demo=False, max_batches=None):
        from smallcoder.data.streams import StreamBatches

        streams = StreamBatches(data_config, tokenizer, sequence_length=sequence_length,
                                micro_batch=micro_batch, num_streams=num_streams, rows=rows, seed=seed,
                                demo=demo, split="validation")
        with streams:
            per_stream = [list(itertools.islice(p, max_batches)) for p in streams.pipelines]
        local = {str(s): [float(np.sum(b[2])) for b in batches]
                 for s, batches in zip(streams.stream_ids, per_stream)}
        every = {}
        for weights in multihost.allgather_json(local):  # a stream held by several processes counts once
            every.update(weights)
        count = max((len(w) for w in every.values()), default=0)
        self.batch_weights = [sum(w[b] for w in every.values() if b < len(w)) for b in range(count)]
        self.tokens = sum(self.batch_weights)
        padding = _padding_rows(micro_batch // num_streams, sequence_length, tokenizer.eos_token_id)
        self.batches = []
        for b in range(count):
            parts = [batches[b] if b < len(batches) else padding for batches in per_stream]
            x = {key: np.concatenate([p[0][key] for p in parts]) for key in parts[0][0]}
            self.batches.append((x, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])))

    def __len__(self):
        return len(self.batches)

    def evaluate(self, model):
        """`{"val_loss", "val_perplexity"}` of `model` (compiled) over the split.

        Every process calls it at the same point (the batches are collectives).
        """
        if not self.batches or self.tokens == 0:
            return {}
        losses = []
        collect = keras.callbacks.LambdaCallback(
            on_test_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))
        model.evaluate(_generator(self.batches), steps=len(self.batches), verbose=0, callbacks=[collect])
        loss = sum(value * weight for value, weight in zip(losses, self.batch_weights)) / self.tokens
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 700.0))}


def _generator(batches):
    yield from batches


def _padding_rows(rows, sequence_length, pad_id):
    """`(x, y, sample_weight)` of `rows` padding rows (segment 0, weight 0)."""
    zeros = np.zeros((rows, sequence_length), np.int32)
    tokens = np.full((rows, sequence_length), pad_id, np.int32)
    return {"token_ids": tokens, "padding_mask": zeros}, tokens, np.zeros((rows, sequence_length), np.float32)


class ValidationLoss(keras.callbacks.Callback):
    """Validation loss every `every` steps and at the last one; early stop on it (optional).

    Runs on every process (the evaluation is collective) after `NanGuard` and
    `Throughput`, before `Checkpointer` (which saves the step an early stop
    ends on, and this callback's `state()`) and the logs, which show
    `val_loss` and `val_perplexity`.

    Args:
        validation_set: a `ValidationSet`.
        start_step, total_steps, every: micro-batch counts.
        nan_guard, throughput: the run's `NanGuard` and `Throughput`.
        patience: stop when the loss has not improved for this many
            evaluations in a row (None: never).
        state: a `state()` from the checkpoint being resumed.
    """

    def __init__(self, validation_set, start_step, total_steps, every, nan_guard, throughput,
                 patience=None, state=None):
        super().__init__()
        self.validation_set = validation_set
        self.start_step, self.total_steps, self.every = start_step, total_steps, every
        self.nan_guard, self.throughput, self.patience = nan_guard, throughput, patience
        self.history = dict(state or {"best_loss": None, "best_step": None, "evals_since_best": 0,
                                      "stopped_at": None})
        self.last = None  # {"step", "val_loss", "val_perplexity"} of the latest evaluation

    def state(self):
        """JSON: best loss and step, evaluations since the best, the early-stop step (or None)."""
        return dict(self.history)

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1
        if self.nan_guard.bad_step is not None or not (step % self.every == 0 or step == self.total_steps):
            return
        from smallcoder.training.callbacks import sync_state

        sync_state(self.model)
        result = self.validation_set.evaluate(self.model)
        self.throughput.restart()  # the evaluation is not training time
        if not result:
            return
        logs.update(result)
        self.last = {"step": step, **result}
        history = self.history
        if history["best_loss"] is None or result["val_loss"] < history["best_loss"]:
            history.update(best_loss=result["val_loss"], best_step=step, evals_since_best=0)
        else:
            history["evals_since_best"] += 1
        if self.patience and history["evals_since_best"] >= self.patience and step < self.total_steps:
            history["stopped_at"] = step
            self.model.stop_training = True
