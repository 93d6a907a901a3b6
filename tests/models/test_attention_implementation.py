"""Which causal-attention kernel runs, and cuDNN's equals the query blocks' (on a GPU)."""

import keras
import numpy as np
import pytest

from smallcoder.models.causal_attention import (
    attention_implementation,
    block_causal_attention,
)
from smallcoder.models.masks import segment_attention_mask


def _on_gpu():
    if keras.config.backend() != "jax":
        return False
    import jax

    return jax.devices()[0].platform == "gpu"


def test_auto_picks_cudnn_only_for_16_bit_queries_on_a_gpu(monkeypatch):
    monkeypatch.delenv("SMALLCODER_ATTENTION", raising=False)
    assert attention_implementation("float32") == "blocks"
    assert attention_implementation("bfloat16") == ("cudnn" if _on_gpu() else "blocks")


def test_environment_forces_a_kernel_and_rejects_unknown_names(monkeypatch):
    monkeypatch.setenv("SMALLCODER_ATTENTION", "blocks")
    assert attention_implementation("bfloat16") == "blocks"
    monkeypatch.setenv("SMALLCODER_ATTENTION", "flash")
    with pytest.raises(ValueError, match="SMALLCODER_ATTENTION='flash'.*auto, cudnn, blocks"):
        attention_implementation("bfloat16")


@pytest.mark.skipif(not _on_gpu(), reason="cuDNN flash attention needs a GPU")
def test_cudnn_attention_equals_query_blocks_in_values_and_gradients(monkeypatch):
    """bfloat16, 8 query heads over 2 KV heads of 96, three packed documents and a padded row."""
    import jax
    import jax.numpy as jnp

    length = 256
    segments = np.asarray([[1] * 100 + [2] * 120 + [3] * 36, [1] * 200 + [0] * 56], dtype="int32")
    mask = segment_attention_mask(segments)
    rng = np.random.default_rng(0)
    query, key, value = (jnp.asarray(rng.normal(size=(2, length, heads, 96)), jnp.bfloat16) for heads in (8, 2, 2))
    cotangent = jnp.asarray(rng.normal(size=query.shape), jnp.float32)

    def grads(kernel):
        monkeypatch.setenv("SMALLCODER_ATTENTION", kernel)

        def loss(q, k, v):
            out = block_causal_attention(q, k, v, mask)
            return jnp.sum(out.astype(jnp.float32) * cotangent), out

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(query, key, value)

    (_, cudnn_out), cudnn_grads = grads("cudnn")
    (_, blocks_out), blocks_grads = grads("blocks")
    real = segments > 0
    np.testing.assert_allclose(np.asarray(cudnn_out, np.float32)[real], np.asarray(blocks_out, np.float32)[real],
                               atol=3e-2)
    for got, expected in zip(cudnn_grads, blocks_grads):
        got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
        np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())
