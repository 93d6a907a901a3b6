"""The transformers reference step: mixed precision autocasts the compute and keeps float32 weights."""

import numpy as np
import pytest

from smallcoder.bench.reference import hf_train_step
from smallcoder.models.presets import preset_config


@pytest.mark.slow
def test_mixed_bfloat16_reference_step_keeps_float32_weights_and_bf16_compute():
    import torch

    config = preset_config("smallcoder_test")
    full_step, full_model = hf_train_step(config, batch=2, seq=16, dtype="float32")
    mixed_step, mixed_model = hf_train_step(config, batch=2, seq=16, dtype="mixed_bfloat16")
    full_loss, mixed_loss = full_step(), mixed_step()
    assert all(p.dtype == torch.float32 for p in mixed_model.parameters())
    # Same weights and batch (same seeds): the losses differ by bfloat16 rounding only.
    assert mixed_loss != full_loss
    np.testing.assert_allclose(mixed_loss, full_loss, rtol=2e-2)
    assert np.log(config["vocabulary_size"]) - 1 < mixed_loss < np.log(config["vocabulary_size"]) + 1
