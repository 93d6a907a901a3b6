"""Schedules hit their derived step counts; weight decay skips norms and the input embedding."""

import keras
import numpy as np
import pytest

from smallcoder.recipes import load_recipe
from smallcoder.training.optimizer import build_optimizer, learning_rate_schedule


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def _recipe(*overrides):
    return load_recipe("code", demo=True, overrides=["training.tokens=1024K", *overrides])


def test_cosine_warms_up_then_decays_to_the_floor():
    recipe = _recipe("schedule.type=cosine", "schedule.warmup=0.1", "optimizer.learning_rate=1.0e-3")
    schedule = learning_rate_schedule(recipe)
    steps, warmup = recipe.steps, recipe.warmup_steps
    assert (steps, warmup) == (500, 50)
    assert _lr(schedule, 0) == 0.0
    assert _lr(schedule, warmup) == pytest.approx(1e-3)
    assert _lr(schedule, steps) == pytest.approx(1e-4)  # min_learning_rate_ratio 0.1
    assert _lr(schedule, warmup + recipe.decay_steps // 2) == pytest.approx(0.55e-3, rel=1e-3)


def test_warmup_stable_decay():
    recipe = _recipe("schedule.type=wsd", "schedule.warmup=0.1", "schedule.decay=0.2",
                     "optimizer.learning_rate=1.0e-3")
    schedule = learning_rate_schedule(recipe)
    assert (recipe.warmup_steps, recipe.decay_steps) == (50, 100)
    assert _lr(schedule, 24) == pytest.approx(0.5e-3)
    assert _lr(schedule, 50) == _lr(schedule, 399) == pytest.approx(1e-3)
    assert _lr(schedule, 450) == pytest.approx(0.55e-3)
    assert _lr(schedule, 500) == pytest.approx(1e-4)


def test_adamw_settings_and_weight_decay_exclusions():
    from smallcoder.models.causal_lm import SmallCoderCausalLM

    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    recipe = _recipe("optimizer.clipnorm=0.5", "optimizer.beta_2=0.99")
    optimizer = build_optimizer(recipe, lm.trainable_variables)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert (optimizer.beta_2, optimizer.global_clipnorm, optimizer.weight_decay) == (0.99, 0.5, 0.1)
    decayed = {v.path for v in lm.trainable_variables if optimizer._use_weight_decay(v)}
    assert "token_embedding/embeddings" not in decayed
    assert "token_embedding/reverse_embeddings" in decayed  # the output projection is a matmul
    assert not any("norm" in p for p in decayed)
    assert "transformer_layer_0/attention/query/kernel" in decayed


def test_gradient_accumulation_counts_the_schedule_in_optimizer_steps():
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.training.metrics import compile_for_training

    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    recipe = _recipe("training.gradient_accumulation_steps=2", "training.global_batch=4",
                     "training.sequence_length=16", "schedule.warmup=0.5", "training.tokens=512")
    assert (recipe.steps, recipe.micro_batch, recipe.warmup_steps) == (8, 2, 4)
    optimizer = build_optimizer(recipe, lm.trainable_variables)
    compile_for_training(lm, optimizer)
    x = {"token_ids": np.ones((2, 16), "int32"), "padding_mask": np.ones((2, 16), "int32")}
    for _ in range(4):  # 4 micro-batches = 2 optimizer steps
        lm.train_on_batch(x, np.ones((2, 16), "int32"), sample_weight=np.ones((2, 16), "float32"))
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(
        _lr(learning_rate_schedule(recipe), 2))
