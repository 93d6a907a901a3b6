"""Rematerialisation changes memory, not numbers."""

import keras
import numpy as np
import pytest

from smallcoder.bench.train import random_batch
from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM
from smallcoder.models.presets import preset_config


def sgd_step(remat, weights, batch):
    backbone = SmallCoderBackbone(**preset_config("smallcoder_test"), remat=remat)
    causal_lm = SmallCoderCausalLM(backbone)
    if weights is not None:
        causal_lm.set_weights(weights)
    # One SGD step with learning rate 1: new weights = old weights - gradients.
    causal_lm.compile(optimizer=keras.optimizers.SGD(1.0))
    before = causal_lm.get_weights()
    loss = causal_lm.train_on_batch(*batch, return_dict=True)["loss"]
    gradients = [b - a for b, a in zip(before, causal_lm.get_weights())]
    return before, float(loss), gradients


def test_remat_is_refused_on_tensorflow():
    if keras.config.backend() != "tensorflow":
        pytest.skip("TensorFlow backend only")
    with pytest.raises(ValueError, match="not supported on the TensorFlow backend"):
        SmallCoderBackbone(**preset_config("smallcoder_test"), remat="full")


@pytest.fixture
def remat_backend():
    if keras.config.backend() == "tensorflow":
        pytest.skip("remat needs the jax or torch backend")


def test_remat_gives_the_same_loss_and_gradients(remat_backend):
    keras.utils.set_random_seed(0)
    x, y, w = random_batch(preset_config("smallcoder_test"), 2, 16)
    x["padding_mask"][1, 10:] = 2  # a packed second document
    weights, loss, gradients = sgd_step(None, None, (x, y, w))
    _, remat_loss, remat_gradients = sgd_step("full", weights, (x, y, w))
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    for a, b in zip(gradients, remat_gradients):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_remat_is_kept_in_the_config(remat_backend):
    backbone = SmallCoderBackbone(**preset_config("smallcoder_test"), remat="full")
    assert backbone.get_config()["remat"] == "full"
    assert SmallCoderBackbone.from_config(backbone.get_config()).remat == "full"
