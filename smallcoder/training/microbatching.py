"""One optimizer step over a batch split into sequential microbatches (JAX).

    batch (B, T) ─► M microbatches (B/M, T) ─► lax.scan: loss + gradients of one,
                    summed with weights ─► one optimizer update

The update equals the full-batch one (to float32 round-off): each
microbatch's loss is weighted by its share of the batch, its share of the
sample weight for the token-weighted mean (`mean_with_sample_weight`, the
training loss), 1/M otherwise. Only one microbatch's activations are alive
at a time, so activation memory falls by M; on XLA:CPU the smaller working
set is also faster (4×1024 as 4 microbatches of 1×1024: see `bench train
--microbatches`). Unlike `training.gradient_accumulation_steps` (the
optimizer's accumulation over M Keras steps, each feeding its own batch),
this is one step of the data pipeline and one jitted function.
"""

import functools

import keras

from smallcoder import compat


def check_microbatches_backend(microbatches, name="microbatches"):
    """Raise a ValueError when `microbatches` > 1 cannot run on this Keras backend (JAX only).

    `name`: the setting named in the message (`"training.microbatches"` for a recipe).
    """
    backend = keras.config.backend()
    if microbatches > 1 and backend != "jax":
        raise ValueError(
            f"{name}: {microbatches} needs the JAX backend (this is {backend}); set it to 1 and "
            "use gradient accumulation (training.gradient_accumulation_steps) instead."
        )


def use_microbatches(model, microbatches):
    """Make `model.fit` run each batch as `microbatches` sequential microbatches (one update).

    Replaces the compiled model's `train_step` on this instance with
    `microbatched_train_step` (1 restores Keras' own). Call it after
    `compile`; `training.metrics.compile_for_training` does.
    """
    check_microbatches_backend(microbatches)
    if microbatches < 1:
        raise ValueError(f"microbatches={microbatches} must be >= 1.")
    model.__dict__.pop("train_step", None)
    if microbatches > 1:
        step = functools.partial(microbatched_train_step, model, microbatches=microbatches)
        object.__setattr__(model, "train_step", step)
    model.train_function = None  # `fit` makes it again, from this step


def check_microbatches(batch_size, microbatches):
    """Raise a clear error unless `batch_size` splits into `microbatches` equal parts."""
    if microbatches < 1 or batch_size % microbatches:
        raise ValueError(
            f"microbatches={microbatches} must be >= 1 and divide the batch size {batch_size} "
            f"(each microbatch holds batch_size / microbatches rows)."
        )


def _split(tensor, microbatches):
    """(B, ...) -> (M, B/M, ...); microbatch m holds rows m, m + M, m + 2M, ...

    Strided, not contiguous: with the batch sharded over data-parallel
    devices in contiguous blocks, every device then holds rows of every
    microbatch (when its block size is a multiple of M), so no microbatch
    runs on a subset of the devices.
    """
    import jax.numpy as jnp

    if tensor is None:
        return None
    return jnp.swapaxes(tensor.reshape((-1, microbatches) + tensor.shape[1:]), 0, 1)


def _loss_shares(model, sample_weight, microbatches):
    """(M,) weights of each microbatch's loss in the batch loss."""
    import jax.numpy as jnp

    reduction = getattr(model.loss, "reduction", None)
    if sample_weight is not None and reduction == "mean_with_sample_weight":
        per_micro = jnp.sum(_split(sample_weight, microbatches).reshape(microbatches, -1).astype(jnp.float32), axis=1)
        return per_micro / jnp.maximum(jnp.sum(per_micro), 1e-12)
    return jnp.full((microbatches,), 1.0 / microbatches, jnp.float32)


def _values_after(scope, refs, values):
    """The values of variables `refs` after a `StatelessScope` (unchanged ones kept)."""
    updated = [scope.get_current_value(ref) for ref in refs]
    return [value if new is None else new for new, value in zip(updated, values)]


def microbatched_train_step(model, state, data, microbatches):
    """`JAXTrainer.train_step`, with loss and gradients summed over `microbatches`.

    Args:
        model: a compiled Keras model on the JAX backend.
        state: (trainable, non_trainable, optimizer, metrics) variable values.
        data: `(x, y, sample_weight)`, every leaf with leading batch size B.
        microbatches: M, dividing B.

    Returns:
        `(logs, state)` like `train_step`.
    """
    import jax
    import jax.numpy as jnp

    tree = keras.tree
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    batch_size = next(t for t in tree.flatten(x) if t is not None).shape[0]
    check_microbatches(batch_size, microbatches)
    shares = _loss_shares(model, sample_weight, microbatches)
    split = tree.map_structure(lambda t: _split(t, microbatches), (x, y, sample_weight))
    grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
    metric_refs = model.metrics_variables

    def one_microbatch(carry, inputs):
        grads_sum, loss_sum, non_trainable, metrics_variables = carry
        (micro_x, micro_y, micro_weight), share = inputs
        (_, aux), grads = grad_fn(trainable, non_trainable, metrics_variables, micro_x, micro_y, micro_weight,
                                  training=True, optimizer_variables=optimizer_variables)
        unscaled_loss, y_pred, non_trainable, metrics_variables = aux
        # Compiled metrics (e.g. accuracy) accumulate over the microbatches.
        with keras.StatelessScope(state_mapping=list(zip(metric_refs, metrics_variables))) as scope:
            model.compute_metrics(micro_x, micro_y, y_pred, micro_weight)
        metrics_variables = _values_after(scope, metric_refs, metrics_variables)
        grads_sum = jax.tree.map(lambda total, g: total + share.astype(g.dtype) * g, grads_sum, grads)
        return (grads_sum, loss_sum + share * unscaled_loss, non_trainable, metrics_variables), None

    zeros = jax.tree.map(jnp.zeros_like, trainable)
    carry = (zeros, jnp.zeros((), jnp.float32), non_trainable, metrics_variables)
    (grads, loss, non_trainable, metrics_variables), _ = jax.lax.scan(one_microbatch, carry, (split, shares))

    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, grads, trainable)
    with keras.StatelessScope(state_mapping=list(zip(metric_refs, metrics_variables))) as scope:
        compat.loss_tracker(model).update_state(loss, sample_weight=batch_size)
        logs = model.get_metrics_result()
    metrics_variables = _values_after(scope, metric_refs, metrics_variables)
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)
