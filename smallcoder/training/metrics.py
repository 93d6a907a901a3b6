"""The per-step loss metric and the training loss."""

import keras
from keras import ops

from smallcoder import compat


class LastValue(keras.metrics.Metric):
    """The value of the latest `update_state` call, not a running mean.

    `fit` reports `logs["loss"]` from the compiled loss tracker, a mean over
    the epoch; with this one in its place each step's log is that step's
    loss, which is what the progress bar, `metrics.jsonl` and the NaN check
    need (and what makes a resumed run's log comparable step by step).
    """

    def __init__(self, name="loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, values, sample_weight=None):
        self.value.assign(ops.cast(ops.mean(values), self.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)


class TokenCrossEntropy(keras.losses.Loss):
    """`SparseCategoricalCrossentropy(from_logits=True)` per token; on JAX through
    `fused_jax.token_cross_entropy` (same values, a one-pass backward).

    `y_true` int (B, T), `y_pred` logits (B, T, V); per-token losses (B, T).
    """

    def __init__(self, reduction="mean_with_sample_weight", name="token_cross_entropy", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        if keras.config.backend() == "jax":
            from smallcoder.models.fused_jax import token_cross_entropy

            return token_cross_entropy(y_pred, y_true)
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


def causal_lm_loss():
    """Cross-entropy on logits, averaged over tokens with `sample_weight` 1 (B, T)."""
    return TokenCrossEntropy(reduction="mean_with_sample_weight")


def compile_for_training(causal_lm, optimizer, microbatches=1):
    """Compile with the causal-LM loss, no extra metrics, a per-step loss log and
    `microbatches` in-step microbatches (`training.microbatching`, JAX)."""
    from smallcoder.training.microbatching import (
        check_microbatches_backend,
        use_microbatches,
    )

    check_microbatches_backend(microbatches)
    causal_lm.compile(
        optimizer=optimizer, loss=causal_lm_loss(), weighted_metrics=[], sampler="greedy"
    )
    compat.set_loss_tracker(causal_lm, LastValue(name="loss"))
    use_microbatches(causal_lm, microbatches)
