"""The JAX training kernels equal the plain formulas in values and gradients: block-causal
attention, fused projections, SwiGLU, RMSNorm, cross-entropy, RoPE."""

import keras
import numpy as np
import pytest
from keras import ops

from smallcoder import compat
from smallcoder.models.causal_attention import (
    block_causal_attention,
    dot_product_causal_attention,
)
from smallcoder.models.masks import segment_attention_mask

pytestmark = pytest.mark.skipif(keras.config.backend() != "jax", reason="JAX kernels")


def _segments():
    """Two rows of 40 tokens: three packed documents; one document then padding."""
    first = [1] * 13 + [2] * 20 + [3] * 7
    second = [1] * 31 + [0] * 9
    return np.asarray([first, second], dtype="int32")


def _qkv(seed=0, batch=2, length=40, heads=4, kv_heads=2, head_dim=8):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(batch, length, heads, head_dim)).astype("float32")
    key = rng.normal(size=(batch, length, kv_heads, head_dim)).astype("float32")
    value = rng.normal(size=(batch, length, kv_heads, head_dim)).astype("float32")
    return query, key, value


@pytest.mark.parametrize("block_size", [16, 40, 256])
def test_block_causal_attention_equals_masked_attention(block_size):
    """Blocks of 16 over 40 tokens (a partial last block), one block, a block longer than the row."""
    query, key, value = _qkv()
    mask = segment_attention_mask(_segments())
    expected = ops.convert_to_numpy(dot_product_causal_attention(query, key, value, mask))
    got = ops.convert_to_numpy(block_causal_attention(query, key, value, mask, block_size=block_size))
    real = _segments() > 0  # padding rows attend to themselves only; both agree there too
    np.testing.assert_allclose(got[real], expected[real], atol=2e-5)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_block_causal_attention_gradients_equal_masked_attention():
    import jax
    import jax.numpy as jnp

    query, key, value = _qkv(1)
    mask = segment_attention_mask(_segments())
    cotangent = np.random.default_rng(2).normal(size=query.shape).astype("float32")

    def loss(attend):
        return lambda q, k, v: jnp.sum(attend(q, k, v) * cotangent)

    reference = loss(lambda q, k, v: dot_product_causal_attention(q, k, v, mask))
    expected = jax.grad(reference, argnums=(0, 1, 2))(query, key, value)
    got = jax.grad(loss(lambda q, k, v: block_causal_attention(q, k, v, mask, block_size=16)), argnums=(0, 1, 2))(
        query, key, value
    )
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=5e-5)


def test_fused_projections_value_and_gradients():
    import jax
    import jax.numpy as jnp

    from smallcoder.models.fused_jax import fused_projections

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    kernels = tuple(rng.normal(size=(6, n)).astype("float32") for n in (8, 4, 4))
    weights = tuple(rng.normal(size=(2, 5, n)).astype("float32") for n in (8, 4, 4))

    def loss(project):
        return lambda x, kernels: sum(jnp.sum(o * w) for o, w in zip(project(x, kernels), weights))

    plain = lambda x, kernels: tuple(jnp.einsum("btd,dn->btn", x, k) for k in kernels)  # noqa: E731
    for got, expected in zip(fused_projections(x, kernels), plain(x, kernels)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
    got = jax.grad(loss(fused_projections), argnums=(0, 1))(x, kernels)
    expected = jax.grad(loss(plain), argnums=(0, 1))(x, kernels)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-5)


def test_swiglu_value_and_gradients():
    import jax
    import jax.numpy as jnp

    from smallcoder.models.fused_jax import swiglu

    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    w_gate, w_up = (rng.normal(size=(6, 12)).astype("float32") for _ in range(2))
    w_out = rng.normal(size=(12, 6)).astype("float32")
    cotangent = rng.normal(size=(2, 5, 6)).astype("float32")

    def plain(x, w_gate, w_up, w_out):
        return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_out

    np.testing.assert_allclose(
        np.asarray(swiglu(x, w_gate, w_up, w_out)), np.asarray(plain(x, w_gate, w_up, w_out)), rtol=1e-5, atol=1e-5
    )
    grads = [
        jax.grad(lambda *a, f=f: jnp.sum(f(*a) * cotangent), argnums=(0, 1, 2, 3))(x, w_gate, w_up, w_out)
        for f in (swiglu, plain)
    ]
    for g, e in zip(*grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-4)


def test_rms_norm_value_and_gradients():
    import jax
    import jax.numpy as jnp

    from smallcoder.models.fused_jax import rms_norm

    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 5, 16)).astype("float32") * 3
    scale = (1 + 0.1 * rng.normal(size=(16,))).astype("float32")
    cotangent = rng.normal(size=(2, 5, 16)).astype("float32")

    def plain(x, scale):
        return ops.rms_normalization(x, scale=scale, epsilon=1e-5)

    np.testing.assert_allclose(np.asarray(rms_norm(x, scale, 1e-5)), np.asarray(plain(x, scale)), rtol=1e-6,
                               atol=1e-6)
    grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) * cotangent), argnums=(0, 1))(x, scale)
             for f in (lambda x, s: rms_norm(x, s, 1e-5), plain)]
    for g, e in zip(*grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-5)


def test_token_cross_entropy_value_and_gradients():
    import jax
    import jax.numpy as jnp

    from smallcoder.models.fused_jax import token_cross_entropy

    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(2, 6, 50)) * 4).astype("float32")
    labels = rng.integers(0, 50, (2, 6)).astype("int32")
    cotangent = rng.normal(size=(2, 6)).astype("float32")

    def plain(logits):
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    np.testing.assert_allclose(np.asarray(token_cross_entropy(logits, labels)), np.asarray(plain(logits)),
                               rtol=1e-6, atol=1e-6)
    grads = [jax.grad(lambda x, f=f: jnp.sum(f(x) * cotangent))(logits)
             for f in (lambda x: token_cross_entropy(x, labels), plain)]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), rtol=1e-5, atol=1e-6)


def test_rotary_equals_keras_hub_and_its_gradient():
    import jax
    import jax.numpy as jnp
    from keras_hub.layers import RotaryEmbedding

    from smallcoder.models.fused_jax import rotary

    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 11, 3, 8)).astype("float32")
    positions = np.asarray([list(range(11)), [0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2]], dtype="int32")
    layer = RotaryEmbedding(max_wavelength=10000.0)
    cos, sin = compat.rope_cos_sin(layer, x, positions)
    np.testing.assert_array_equal(np.asarray(rotary(x, cos, sin)), np.asarray(layer(x, positions=positions)))
    cotangent = rng.normal(size=x.shape).astype("float32")
    grads = [jax.grad(lambda v, f=f: jnp.sum(f(v) * cotangent))(x)
             for f in (lambda v: rotary(v, cos, sin), lambda v: layer(v, positions=positions))]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), rtol=1e-6, atol=1e-6)
