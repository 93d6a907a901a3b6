"""A batch split into microbatches inside one step gives the full-batch update."""

import keras
import numpy as np
import pytest

from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM
from smallcoder.models.presets import preset_config
from smallcoder.training.metrics import compile_for_training
from smallcoder.training.microbatching import use_microbatches


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
        lm.compile(optimizer=optimizer)  # sum_over_batch_size, accuracy
        use_microbatches(lm, microbatches)
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
    lm.compile()
    use_microbatches(lm, 3)
    x, y, weight = _batch()
    with pytest.raises(ValueError, match="microbatches=3 must be >= 1 and divide the batch size 4"):
        lm.train_on_batch(x, y, sample_weight=weight)


def test_other_backends_refuse_microbatches(backend):
    if backend == "jax":
        pytest.skip("the JAX backend supports microbatches")
    lm = SmallCoderCausalLM(SmallCoderBackbone(**preset_config("smallcoder_test")))
    lm.compile()
    with pytest.raises(ValueError, match="microbatches: 2 needs the JAX backend"):
        use_microbatches(lm, 2)
    with pytest.raises(ValueError, match="microbatches: 2 needs the JAX backend"):
        compile_for_training(lm, keras.optimizers.SGD(0.1), microbatches=2)


def test_the_model_package_does_not_import_the_trainer():
    """models/ stands alone: building, training and generating need nothing from training/."""
    import subprocess
    import sys

    code = """
import sys, numpy as np
from smallcoder.models import SmallCoderCausalLM
lm = SmallCoderCausalLM.from_preset("smallcoder_test")
lm.compile()
ones = np.ones((2, 8), "int32")
lm.train_on_batch({"token_ids": ones, "padding_mask": ones}, ones)
lm.generate([[1, 2]], max_new_tokens=2, stop_token_ids=None)
print(sorted(m for m in sys.modules if m.startswith("smallcoder.training")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_later_compile_logs_the_real_loss_again():
    """compile_for_training's per-step loss tracker does not linger after another compile."""
    keras.utils.set_random_seed(0)
    lm = SmallCoderCausalLM(SmallCoderBackbone(**preset_config("smallcoder_test")))
    compile_for_training(lm, keras.optimizers.SGD(0.1))
    assert [m.name for m in lm.metrics].count("loss") == 1
    lm.compile(optimizer=keras.optimizers.SGD(0.1), weighted_metrics=[])
    x, y, weight = _batch()
    assert lm.train_on_batch(x, y, sample_weight=weight, return_dict=True)["loss"] > 1.0
