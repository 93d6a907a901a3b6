"""The training loss on every backend."""

import keras
import numpy as np


def test_training_loss_equals_keras_sparse_cross_entropy():
    """The recipes' loss (any backend) is Keras' token-weighted cross-entropy."""
    from smallcoder.training.metrics import causal_lm_loss

    rng = np.random.default_rng(8)
    logits = (rng.normal(size=(3, 7, 40)) * 3).astype("float32")
    labels = rng.integers(0, 40, (3, 7)).astype("int32")
    weight = (rng.random((3, 7)) > 0.4).astype("float32")
    expected = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
    np.testing.assert_allclose(float(causal_lm_loss()(labels, logits, sample_weight=weight)),
                               float(expected(labels, logits, sample_weight=weight)), rtol=1e-6)
