"""Every use of a private Keras, keras-hub or JAX API, in one place.

Each function names what it relies on; where that is gone it raises
`UpstreamChanged` instead of quietly doing something else. tests/test_compat.py
checks each against the installed versions (pyproject.toml pins the ranges
CI tests). Imports are lazy: nothing here loads Keras or JAX on import.
"""


class UpstreamChanged(RuntimeError):
    """A private API smallcoder relies on is missing or behaves differently."""


def _changed(what, package, error):
    from importlib.metadata import version

    return UpstreamChanged(
        f"{what} is not what smallcoder expects in {package} {version(package)} ({error}); "
        "install the versions pyproject.toml allows, or update smallcoder/compat.py."
    )


def rope_cos_sin(rotary_embedding, inputs, positions=None):
    """cos and sin tables of keras-hub's `RotaryEmbedding`, as its `call` applies them.

    Private: `RotaryEmbedding._compute_cos_sin_embedding(inputs, start_index,
    positions)`. The fused RoPE kernel uses keras-hub's own tables, so the
    values match the layer bit for bit.

    Args:
        inputs: (B, T, N, H), read for T and H only.
        positions: int (B, T), or None for 0 .. T-1.

    Returns:
        `(cos, sin)`, each (B or 1, T, 1, H).
    """
    try:
        return rotary_embedding._compute_cos_sin_embedding(inputs, 0, positions)
    except (AttributeError, TypeError) as e:
        raise _changed("RotaryEmbedding._compute_cos_sin_embedding", "keras-hub", e) from e


def remat_mode(layer):
    """The `keras.RematScope` mode a layer was made in (`"full"`, ...), or None.

    Private: `Operation._remat_mode`, set from the active scope when the
    layer is constructed.
    """
    try:
        mode = layer._remat_mode
    except AttributeError as e:
        raise _changed("Operation._remat_mode", "keras", e) from e
    return None if mode is None else mode.mode


def loss_tracker(model):
    """The compiled model's loss metric, `logs["loss"]` of `fit`.

    Private: `Trainer._loss_tracker` (Keras has no public switch for how the
    loss log is reduced, nor a public way to update it from a custom step).
    """
    if not hasattr(model, "_loss_tracker"):
        raise _changed("Trainer._loss_tracker", "keras", "no such attribute")
    return model._loss_tracker


def set_loss_tracker(model, metric):
    """Replace `loss_tracker(model)` until the next `compile`.

    Set without Keras' attribute tracking: a tracked copy would outlive a
    later `compile` (which makes a fresh tracker) and, being last of two
    metrics named "loss", report its stale value in the logs.
    """
    loss_tracker(model)
    object.__setattr__(model, "_loss_tracker", metric)


def jax_train_state(model, data):
    """`(trainable, non_trainable, optimizer, metrics)` variable values: the `state`
    argument of a compiled Keras model's `train_step` on JAX, for data like `data`.

    Private: `Trainer._symbolic_build(data_batch=...)` (makes the optimizer
    and metric variables as `train_on_batch` does) and
    `JAXTrainer._get_jax_state(...)`.
    """
    try:
        model._symbolic_build(data_batch=data)
        return model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                    optimizer_variables=True, metrics_variables=True)
    except (AttributeError, TypeError) as e:
        raise _changed("Trainer._symbolic_build / JAXTrainer._get_jax_state", "keras", e) from e


def jax_backends_initialized():
    """Whether this process's JAX has created its backends (so `XLA_FLAGS` is fixed).

    Private: `jax._src.xla_bridge.backends_are_initialized`. False when JAX
    is not imported.
    """
    import sys

    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError) as e:
        raise _changed("jax._src.xla_bridge.backends_are_initialized", "jax", e) from e


def jax_coordination_client():
    """The multi-process job's coordination-service client (its key-value store), or None.

    Private: `jax._src.distributed.global_state.client`, with `key_value_set`
    and `key_value_dir_get`; JAX has no public handle on the store. None
    before `jax.distributed.initialize` (or after `shutdown`).
    """
    try:
        from jax._src import distributed

        client = distributed.global_state.client
    except (ImportError, AttributeError) as e:
        raise _changed("jax._src.distributed.global_state.client", "jax", e) from e
    if client is not None and not all(hasattr(client, m) for m in ("key_value_set", "key_value_dir_get")):
        raise _changed("the coordination client's key_value_set / key_value_dir_get", "jax",
                       "methods missing")
    return client


def sampler_run_loop(sampler, cond, body, model, loop_vars, maximum_iterations):
    """`ops.while_loop(cond, body, loop_vars)` as a keras-hub sampler runs its decoding loop.

    On JAX the sampler's `run_loop` threads the model's and the sampler's
    variables (a random sampler's seed) through the loop as stateless state;
    `generate_step` uses it with its own loop body. Private:
    `Sampler.run_loop(cond, body, model, loop_vars, maximum_iterations)`.
    """
    if not hasattr(sampler, "run_loop"):
        raise _changed("Sampler.run_loop", "keras-hub", "no such method")
    return sampler.run_loop(cond, body, model=model, loop_vars=loop_vars, maximum_iterations=maximum_iterations)
