"""A batch split into microbatches inside one step gives the full-batch update."""

import keras
import numpy as np
import pytest

from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM
from smallcoder.models.presets import preset_config
from smallcoder.training.metrics import compile_for_training


def _batch(batch=4, seq=32, seed=0):
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(0, 4096, (batch, seq), dtype=np.int32),
         "padding_mask": np.ones((batch, seq), dtype=np.int32)}
    y = rng.integers(0, 4096, (batch, seq), dtype=np.int32)
    # Uneven loss masks: rows carry 32, 5, 0 and 17 target tokens, so a plain
    # mean of the microbatch losses would weight tokens unequally.
    weight = np.zeros((batch, seq), np.float32)
    for row, count in enumerate((32, 5, 0, 17)[:batch]):
        weight[row, :count] = 1.0
    return x, y, weight


def _train_once(microbatches, loss="training", seed=0):
    keras.utils.set_random_seed(seed)
    lm = SmallCoderCausalLM(SmallCoderBackbone(**preset_config("smallcoder_test")))
    optimizer = keras.optimizers.SGD(1.0)  # the update is the gradient itself
    if loss == "training":
        compile_for_training(lm, optimizer, microbatches=microbatches)
    else:
        lm.compile(optimizer=optimizer, microbatches=microbatches)  # sum_over_batch_size, accuracy
    before = [np.array(v) for v in lm.trainable_variables]
    x, y, weight = _batch()
    logs = lm.train_on_batch(x, y, sample_weight=weight, return_dict=True)
    updates = [b - np.array(v) for b, v in zip(before, lm.trainable_variables)]
    return logs, updates


@pytest.mark.parametrize("loss", ["training", "default"])
def test_microbatches_give_the_full_batch_update_and_logs(backend, loss):
    if backend != "jax":
        pytest.skip("microbatching inside the step is JAX only")
    full_logs, full = _train_once(1, loss)
    assert full_logs["loss"] > 1.0  # ln(4096) = 8.3 at initialisation
    for microbatches in (2, 4):
        logs, split = _train_once(microbatches, loss)
        assert set(logs) == set(full_logs)
        for name in logs:
            assert logs[name] == pytest.approx(full_logs[name], rel=1e-5), name
        scale = max(np.abs(u).max() for u in full)
        assert scale > 0
        for a, b in zip(split, full):
            np.testing.assert_allclose(a, b, atol=1e-5 * scale)


def test_microbatches_must_divide_the_batch(backend):
    if backend != "jax":
        pytest.skip("microbatching inside the step is JAX only")
    lm = SmallCoderCausalLM(SmallCoderBackbone(**preset_config("smallcoder_test")))
    lm.compile(microbatches=3)
    x, y, weight = _batch()
    with pytest.raises(ValueError, match="microbatches=3 must be >= 1 and divide the batch size 4"):
        lm.train_on_batch(x, y, sample_weight=weight)


def test_other_backends_refuse_microbatches(backend):
    if backend == "jax":
        pytest.skip("the JAX backend supports microbatches")
    lm = SmallCoderCausalLM(SmallCoderBackbone(**preset_config("smallcoder_test")))
    with pytest.raises(ValueError, match="needs the JAX backend"):
        lm.compile(microbatches=2)


def test_a_later_compile_logs_the_real_loss_again():
    """compile_for_training's per-step loss tracker does not linger after another compile."""
    keras.utils.set_random_seed(0)
    lm = SmallCoderCausalLM(SmallCoderBackbone(**preset_config("smallcoder_test")))
    compile_for_training(lm, keras.optimizers.SGD(0.1))
    assert [m.name for m in lm.metrics].count("loss") == 1
    lm.compile(optimizer=keras.optimizers.SGD(0.1), weighted_metrics=[])
    x, y, weight = _batch()
    assert lm.train_on_batch(x, y, sample_weight=weight, return_dict=True)["loss"] > 1.0
