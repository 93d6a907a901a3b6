"""The implementation is chosen once, when the model is built, and every choice gives the
"keras" reference's logits and gradients."""

import keras
import numpy as np
import pytest
from keras import ops

from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM
from smallcoder.models.causal_attention import (
    block_causal_attention,
    cudnn_causal_attention,
)
from smallcoder.models.implementation import resolve_implementation
from smallcoder.models.masks import segment_attention_mask


def _on_gpu():
    if keras.config.backend() != "jax":
        return False
    import jax

    return jax.devices()[0].platform == "gpu"


def _config(**overrides):
    return dict(vocabulary_size=64, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                hidden_dim=32, intermediate_dim=48, max_sequence_length=300, **overrides)


def test_auto_picks_by_backend_device_and_dtype(monkeypatch):
    monkeypatch.delenv("SMALLCODER_ATTENTION", raising=False)
    jax = keras.config.backend() == "jax"
    assert resolve_implementation("auto", "float32") == ("blocks" if jax else "keras")
    assert resolve_implementation("auto", "bfloat16") == (
        "cudnn" if _on_gpu() else "blocks" if jax else "keras")
    assert resolve_implementation("keras", "float32") == "keras"


def test_the_environment_overrides_auto_only_and_bad_names_are_refused(monkeypatch):
    monkeypatch.setenv("SMALLCODER_ATTENTION", "keras")
    assert resolve_implementation("auto", "float32") == "keras"
    if keras.config.backend() == "jax":
        assert resolve_implementation("blocks", "float32") == "blocks"  # an explicit argument wins
    monkeypatch.setenv("SMALLCODER_ATTENTION", "flash")
    with pytest.raises(ValueError, match=r"\$SMALLCODER_ATTENTION='flash': expected one of auto, keras"):
        resolve_implementation("auto", "float32")
    with pytest.raises(ValueError, match="implementation='flash': expected one of"):
        SmallCoderBackbone(**_config(), implementation="flash")


def test_kernels_this_backend_or_device_cannot_run_are_refused_when_built(monkeypatch):
    monkeypatch.delenv("SMALLCODER_ATTENTION", raising=False)
    if keras.config.backend() != "jax":
        with pytest.raises(ValueError, match="implementation='blocks' needs the JAX backend"):
            SmallCoderBackbone(**_config(), implementation="blocks")
    elif not _on_gpu():
        with pytest.raises(ValueError, match="implementation='cudnn' needs a GPU"):
            SmallCoderBackbone(**_config(), implementation="cudnn")


def test_the_choice_is_made_at_build_and_the_config_keeps_the_argument(monkeypatch):
    monkeypatch.delenv("SMALLCODER_ATTENTION", raising=False)
    backbone = SmallCoderBackbone(**_config())
    monkeypatch.setenv("SMALLCODER_ATTENTION", "keras")  # too late for this model
    expected = "blocks" if keras.config.backend() == "jax" else "keras"
    assert backbone.resolved_implementation == expected
    blocks = backbone.transformer_layers
    assert {block.attention.resolved_implementation for block in blocks} == {expected}
    assert backbone.get_config()["implementation"] == "auto"
    assert SmallCoderBackbone.from_config(backbone.get_config()).resolved_implementation == "keras"


def _implementations():
    return ["blocks"] if keras.config.backend() == "jax" else []


@pytest.mark.parametrize("implementation", _implementations())
def test_logits_and_gradients_equal_the_keras_reference(implementation):
    """Three packed documents and padding; 260 tokens, so the query blocks split the row."""
    import jax

    segments = np.asarray([[1] * 100 + [2] * 120 + [3] * 40, [1] * 200 + [0] * 60], dtype="int32")
    inputs = {"token_ids": np.random.default_rng(5).integers(0, 64, segments.shape).astype("int32"),
              "padding_mask": segments}
    real = segments > 0

    def value_and_grads(implementation):
        keras.utils.set_random_seed(0)
        lm = SmallCoderCausalLM(SmallCoderBackbone(**_config(), implementation=implementation))
        trainable = [v.value for v in lm.trainable_variables]

        def loss(trainable):
            logits, _ = lm.stateless_call(trainable, [], inputs)
            return ops.sum(ops.square(logits[real])), logits

        (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
        return np.asarray(logits), [np.asarray(g) for g in grads]

    logits, grads = value_and_grads(implementation)
    expected_logits, expected_grads = value_and_grads("keras")
    np.testing.assert_allclose(logits[real], expected_logits[real], rtol=1e-5,
                               atol=1e-5 * np.abs(expected_logits).max())
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.skipif(not _on_gpu(), reason="cuDNN flash attention needs a GPU")
def test_cudnn_attention_equals_query_blocks_in_values_and_gradients():
    """bfloat16, 8 query heads over 2 KV heads of 96, three packed documents and a padded row."""
    import jax
    import jax.numpy as jnp

    length = 256
    segments = np.asarray([[1] * 100 + [2] * 120 + [3] * 36, [1] * 200 + [0] * 56], dtype="int32")
    mask = segment_attention_mask(segments)
    rng = np.random.default_rng(0)
    query, key, value = (jnp.asarray(rng.normal(size=(2, length, heads, 96)), jnp.bfloat16) for heads in (8, 2, 2))
    cotangent = jnp.asarray(rng.normal(size=query.shape), jnp.float32)

    def grads(attend):
        def loss(q, k, v):
            out = attend(q, k, v, mask)
            return jnp.sum(out.astype(jnp.float32) * cotangent), out

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(query, key, value)

    (_, cudnn_out), cudnn_grads = grads(cudnn_causal_attention)
    (_, blocks_out), blocks_grads = grads(block_causal_attention)
    real = segments > 0
    np.testing.assert_allclose(np.asarray(cudnn_out, np.float32)[real], np.asarray(blocks_out, np.float32)[real],
                               atol=3e-2)
    for got, expected in zip(cudnn_grads, blocks_grads):
        got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
        np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())
