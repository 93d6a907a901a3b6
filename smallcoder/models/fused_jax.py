"""JAX training kernels with hand-written backward passes: fused projections, SwiGLU,
attention, RMSNorm, the token cross-entropy and RoPE.

Why not autodiff: on XLA:CPU the autodiff backward of these operations copies
large gradients transposed before their weight-gradient matmuls (the SwiGLU
derivative fused into a transposing copy of the (T, F) gradient; the logits
gradient; the attention probabilities). Written as explicit 2-D matmuls over
concatenated kernels ([Wg | Wu] and [Wq | Wk | Wv]) XLA gets plain row-major
GEMMs, fewer and larger ones. docs/models.md has the measurements. Each
kernel equals autodiff of the plain formula to float32 round-off
(tests/models/test_fused_kernels.py).

Only the "blocks" and "cudnn" implementations (`smallcoder.models.implementation`)
call these, and only over float kernels; `training.metrics.TokenCrossEntropy`
uses `token_cross_entropy` on JAX.
"""

import jax
import jax.numpy as jnp

# Scores of masked pairs; finite so a fully masked row cannot produce NaNs.
MASKED_SCORE = -1e9


def _rows(x):
    return x.reshape(-1, x.shape[-1])


def _concatenate(arrays):
    # A single array (the logits projection) is used as is: no (B*T, V) copy.
    return arrays[0] if len(arrays) == 1 else jnp.concatenate(arrays, axis=1)


def _split_points(kernels):
    points, total = [], 0
    for kernel in kernels[:-1]:
        total += kernel.shape[1]
        points.append(total)
    return points


@jax.custom_vjp
def fused_projections(x, kernels):
    """`[x @ k for k in kernels]` as one matmul.

    Args:
        x: (B, T, D).
        kernels: tuple of (D, n_i).

    Returns:
        tuple of (B, T, n_i).
    """
    return _fused_projections_fwd(x, kernels)[0]


def _fused_projections_fwd(x, kernels):
    rows = _rows(x)
    outputs = rows @ _concatenate(kernels)  # (B*T, sum n_i)
    outputs = jnp.split(outputs, _split_points(kernels), axis=1) if len(kernels) > 1 else [outputs]
    return tuple(o.reshape(x.shape[:-1] + (o.shape[-1],)) for o in outputs), (rows, kernels)


def _fused_projections_bwd(residuals, cotangents):
    rows, kernels = residuals
    shape = cotangents[0].shape[:-1] + (rows.shape[-1],)
    d_outputs = _concatenate([_rows(c) for c in cotangents])  # (B*T, sum n_i)
    d_kernels = rows.T @ d_outputs
    d_kernels = jnp.split(d_kernels, _split_points(kernels), axis=1) if len(kernels) > 1 else [d_kernels]
    d_x = d_outputs @ _concatenate(kernels).T
    return d_x.reshape(shape), tuple(d_kernels)


fused_projections.defvjp(_fused_projections_fwd, _fused_projections_bwd)


@jax.custom_vjp
def swiglu(x, w_gate, w_up, w_out):
    """`(silu(x @ w_gate) * (x @ w_up)) @ w_out`.

    Args:
        x: (B, T, D).
        w_gate, w_up: (D, F).
        w_out: (F, D).

    Returns:
        (B, T, D).
    """
    return _swiglu_fwd(x, w_gate, w_up, w_out)[0]


def _swiglu_fwd(x, w_gate, w_up, w_out):
    rows = _rows(x)
    gate_up = rows @ jnp.concatenate([w_gate, w_up], axis=1)  # (B*T, 2F)
    gate, up = jnp.split(gate_up, 2, axis=1)
    hidden = jax.nn.silu(gate) * up
    outputs = (hidden @ w_out).reshape(x.shape[:-1] + (w_out.shape[1],))
    # The one (B*T, 2F) matmul output is kept, not two sliced copies of it.
    return outputs, (rows, gate_up, w_gate, w_up, w_out)


def _swiglu_bwd(residuals, d_outputs):
    rows, gate_up, w_gate, w_up, w_out = residuals
    gate, up = jnp.split(gate_up, 2, axis=1)
    shape = d_outputs.shape  # (B, T, D), also the shape of x
    d_outputs = _rows(d_outputs)  # (B*T, D)
    sigmoid = jax.nn.sigmoid(gate)
    activated = gate * sigmoid  # silu(gate), recomputed instead of stored
    d_w_out = (activated * up).T @ d_outputs
    d_hidden = d_outputs @ w_out.T  # (B*T, F)
    d_up = d_hidden * activated
    d_gate = d_hidden * up * (sigmoid * (1 + gate * (1 - sigmoid)))  # silu'(g) = s (1 + g (1 - s))
    d_gate_up = jnp.concatenate([d_gate, d_up], axis=1)  # (B*T, 2F)
    d_w_gate, d_w_up = jnp.split(rows.T @ d_gate_up, 2, axis=1)
    d_x = d_gate_up @ jnp.concatenate([w_gate, w_up], axis=1).T
    return d_x.reshape(shape), d_w_gate, d_w_up, d_w_out


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


@jax.custom_vjp
def attention_block(query, key, value, mask):
    """Softmax attention of one query block, recomputing the probabilities in the backward pass.

    The flash-attention backward: only the block's output and log-sum-exp
    are kept, not the (C, S) probabilities, and the backward recomputes
    the scores with one extra matmul, where autodiff through softmax
    saves the probabilities and copies them transposed: faster, and less
    memory.

    Args:
        query: (B, K, G, C, H), already scaled by 1/sqrt(H).
        key, value: (B, K, S, H).
        mask: bool, broadcastable to (B, K, G, C, S).

    Returns:
        (B, K, G, C, H) in the query's dtype. Softmax in float32.
    """
    return _attention_block_fwd(query, key, value, mask)[0]


def _attention_block_fwd(query, key, value, mask):
    scores = jnp.einsum("bkgqh,bksh->bkgqs", query, key, preferred_element_type=jnp.float32)
    scores = jnp.where(mask, scores, MASKED_SCORE)
    peak = jnp.max(scores, axis=-1, keepdims=True)
    probs = jnp.exp(scores - peak)
    total = jnp.sum(probs, axis=-1, keepdims=True)
    outputs = jnp.einsum("bkgqs,bksh->bkgqh", probs.astype(value.dtype), value, preferred_element_type=jnp.float32)
    outputs = (outputs / total).astype(query.dtype)
    return outputs, (query, key, value, mask, outputs, peak + jnp.log(total))


def _attention_block_bwd(residuals, d_outputs):
    query, key, value, mask, outputs, log_total = residuals
    scores = jnp.einsum("bkgqh,bksh->bkgqs", query, key, preferred_element_type=jnp.float32)
    probs = jnp.where(mask, jnp.exp(scores - log_total), 0.0)  # (B, K, G, C, S)
    # d_value and d_key as (H, S) products, transposed after: contracting the
    # (C, S) matrices over their leading axis in place of making XLA:CPU copy
    # them transposed.
    d_value = jnp.einsum("bkgqh,bkgqs->bkhs", d_outputs, probs.astype(d_outputs.dtype))
    d_probs = jnp.einsum("bkgqh,bksh->bkgqs", d_outputs, value, preferred_element_type=jnp.float32)
    row_dot = jnp.sum(d_outputs.astype(jnp.float32) * outputs.astype(jnp.float32), axis=-1, keepdims=True)
    d_scores = probs * (d_probs - row_dot)
    d_query = jnp.einsum("bkgqs,bksh->bkgqh", d_scores.astype(key.dtype), key)
    d_key = jnp.einsum("bkgqh,bkgqs->bkhs", query, d_scores.astype(query.dtype))
    return (d_query, jnp.swapaxes(d_key, -1, -2).astype(key.dtype), jnp.swapaxes(d_value, -1, -2).astype(value.dtype),
            None)


attention_block.defvjp(_attention_block_fwd, _attention_block_bwd)


@jax.custom_vjp
def rms_norm(x, scale, epsilon):
    """`x / sqrt(mean(x**2, -1) + epsilon) * scale`, in float32, as `keras.ops.rms_normalization`.

    The hand-written backward takes the scale gradient as a (1, rows) x
    (rows, D) matmul, where autodiff gives XLA:CPU a slow column reduction.

    Args:
        x: (..., D).
        scale: (D,).
        epsilon: float.

    Returns:
        (..., D) in the dtype of `x`.
    """
    return _rms_norm_fwd(x, scale, epsilon)[0]


def _rms_norm_fwd(x, scale, epsilon):
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    inverse_rms = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + epsilon)
    outputs = (x32 * inverse_rms * scale.astype(x32.dtype)).astype(x.dtype)
    return outputs, (x, inverse_rms, scale)


def _rms_norm_bwd(residuals, d_outputs):
    x, inverse_rms, scale = residuals
    x32 = x.astype(inverse_rms.dtype)
    normed = x32 * inverse_rms
    d_outputs = d_outputs.astype(inverse_rms.dtype)
    products = _rows(d_outputs * normed)  # (rows, D)
    d_scale = (jnp.ones((1, products.shape[0]), products.dtype) @ products).reshape(scale.shape)
    d_normed = d_outputs * scale.astype(inverse_rms.dtype)
    d_x = inverse_rms * (d_normed - normed * jnp.mean(d_normed * normed, axis=-1, keepdims=True))
    return d_x.astype(x.dtype), d_scale.astype(scale.dtype), None


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


@jax.custom_vjp
def token_cross_entropy(logits, labels):
    """Per-token `logsumexp(logits) - logits[label]`, (B, T) float32, of logits (B, T, V).

    The backward is one fused pass, `softmax(logits) - one_hot(label)`
    times the token's cotangent, from the saved logits and log-sum-exp;
    autodiff through `log_softmax` and the label gather makes XLA write
    several (B, T, V) intermediates.
    """
    return _token_cross_entropy_fwd(logits, labels)[0]


def _token_cross_entropy_fwd(logits, labels):
    logits32 = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    peak = jax.lax.stop_gradient(jnp.max(logits32, axis=-1, keepdims=True))
    log_total = peak + jnp.log(jnp.sum(jnp.exp(logits32 - peak), axis=-1, keepdims=True))  # (B, T, 1)
    picked = jnp.take_along_axis(logits32, labels[..., None].astype(jnp.int32), axis=-1)
    return (log_total - picked)[..., 0], (logits, log_total, labels)


def _token_cross_entropy_bwd(residuals, d_losses):
    logits, log_total, labels = residuals
    one_hot = labels[..., None].astype(jnp.int32) == jnp.arange(logits.shape[-1], dtype=jnp.int32)
    d_logits = (jnp.exp(logits.astype(log_total.dtype) - log_total) - one_hot) * d_losses[..., None]
    return d_logits.astype(logits.dtype), None


token_cross_entropy.defvjp(_token_cross_entropy_fwd, _token_cross_entropy_bwd)


def _rotate_half(x):
    """(-x2, x1) of the two halves of the last axis (keras-hub's rotate-half)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.stack((-x2, x1), axis=-2).reshape(x.shape)


@jax.custom_vjp
def rotary(x, cos, sin):
    """RoPE `x * cos + rotate_half(x) * sin`, as keras-hub's `RotaryEmbedding` applies it.

    The backward, `g * cos - rotate_half(g * sin)`, reads the saved tables.

    Args:
        x: (B, T, N, H).
        cos, sin: broadcastable to x, e.g. (B, T, 1, H).
    """
    return x * cos + _rotate_half(x) * sin


def _rotary_fwd(x, cos, sin):
    return rotary(x, cos, sin), (cos, sin)


def _rotary_bwd(residuals, d_outputs):
    cos, sin = residuals
    return d_outputs * cos - _rotate_half(d_outputs * sin), None, None


rotary.defvjp(_rotary_fwd, _rotary_bwd)
