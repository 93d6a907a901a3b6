"""The validation loss is sum(weighted token loss) / sum(weights) over the whole split, whatever the
data-stream layout (streams end at different batches and are padded with weight-0 rows)."""

import keras
import numpy as np
import pytest

from smallcoder.models.causal_lm import SmallCoderCausalLM
from smallcoder.training.metrics import compile_for_training
from smallcoder.training.validation import ValidationSet

DATA = {"format": "chat", "demo": [{"name": "demo-sft", "weight": 1.0, "type": "demo", "path": "sft"}]}
T, BATCH = 64, 8


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    compile_for_training(lm, keras.optimizers.AdamW(1e-3))
    return lm


def _validation_set(lm, streams, max_batches=None):
    return ValidationSet(DATA, lm.tokenizer, sequence_length=T, micro_batch=BATCH, num_streams=streams,
                         demo=True, max_batches=max_batches)


def _direct_loss(lm, batches):
    """sum(w * cross-entropy) / sum(w), in numpy from the model's logits."""
    total = weights = 0.0
    for x, y, w in batches:
        logits = keras.ops.convert_to_numpy(lm(x)).astype("float64")
        log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        token_loss = -np.take_along_axis(log_probs, y[..., None], -1)[..., 0]
        total += float(np.sum(token_loss * w))
        weights += float(np.sum(w))
    return total / weights


def test_the_validation_loss_is_the_same_for_any_stream_layout(model):
    one = _validation_set(model, 1)
    want = _direct_loss(model, one.batches)
    for streams in (1, 2, 8):
        validation = _validation_set(model, streams)
        # Every target token of the split counts once, padding rows not at all.
        assert validation.tokens == one.tokens == sum(float(np.sum(b[2])) for b in validation.batches)
        assert all(b[0]["token_ids"].shape == (BATCH, T) for b in validation.batches)
        assert len(validation.batch_weights) == len(validation.batches)
        result = validation.evaluate(model)
        # Packed differently per layout; document masking makes each example's loss the same.
        assert result["val_loss"] == pytest.approx(want, rel=1e-5), streams
        assert result["val_perplexity"] == pytest.approx(np.exp(want), rel=1e-5)


def test_eight_streams_are_padded_to_the_longest_with_weight_zero_rows(model):
    validation = _validation_set(model, 8)  # one row per stream
    real = np.array([[x["padding_mask"][r].any() for r in range(BATCH)] for x, _, _ in validation.batches])
    lengths = real.sum(0)  # batches each stream made
    assert lengths.max() == len(validation.batches) and lengths.min() < lengths.max()
    for row, length in enumerate(lengths):
        assert real[:length, row].all() and not real[length:, row].any()  # then padding only
        assert not any(w[row].any() for _, _, w in validation.batches[length:])


def test_validation_batches_caps_each_stream(model):
    capped = _validation_set(model, 2, max_batches=3)
    assert len(capped.batches) == 3
    assert capped.tokens < _validation_set(model, 2).tokens
