"""Training checkpoints through Orbax: sharded, asynchronous, atomic, reshardable.

Layout of `<checkpoint dir>/step_00000100/` (default `<run>/checkpoints`; a
bucket such as `gs://bucket/run` works the same through etils paths)::

    state/   every model variable that training changes and every optimizer
             variable, under its Keras path; each process writes the shards
             it holds, nothing is gathered. Frozen weights (LoRA's base) are
             not saved: a resumed run rebuilds them from where it started
             (`init_from`), so a LoRA checkpoint holds the adapters and their
             AdamW moments only
    meta/    JSON from process 0: step, the position of every data stream,
             token counts, Python/NumPy RNG states

As MaxText does, one Orbax `CheckpointManager` saves asynchronously: `save`
returns once the arrays are copied off the devices (the blocking part) and the
files are written in the background while training goes on. Orbax writes each
step into a temporary folder and renames it when every process has finished,
so a save killed half-way is never found by `latest` or `--resume`. Restoring
asks for the arrays in the layout the new run's variables have, so a
checkpoint written on one mesh (2 processes x 2 devices) resumes on another
(1 process x 4 devices, or 1 device).
"""

from __future__ import annotations

import os
import random
import time

import numpy as np

CHECKPOINTS = "checkpoints"


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _name_format():
    return _ocp().step.standard_name_format(step_prefix="step", step_format_fixed_length=8)


def _path(directory):
    """An etils path; a local one made absolute (Orbax refuses relative checkpoint paths)."""
    from etils import epath

    directory = str(directory)
    return epath.Path(directory if "://" in directory else os.path.abspath(directory))


def list_checkpoints(directory):
    """`[(step, path)]` of the complete checkpoints in `directory`, oldest first."""
    path = _path(directory)
    if not path.exists():
        return []
    return sorted((m.step, str(m.path)) for m in _name_format().find_all(path))


def latest(directory):
    """`(step, path)` of the newest complete checkpoint in `directory`, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def rng_state():
    """Python and NumPy global RNG states, JSON-serialisable."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state):
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype="uint32"), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def training_variables(model):
    """`{key: variable}`: what a checkpoint holds. The model's variables (by Keras path) except
    frozen weights, and its optimizer's variables.

    Frozen weights (not trainable, e.g. the base of a LoRA run) never change,
    so they are rebuilt from the run's starting point instead of saved; the
    model's other non-trainable variables (state such as RNG seeds) are saved.
    Optimizer variables are keyed `optimizer/<name>`: Keras names an optimizer
    `adam_w`, `adam_w_1`, … by how many were made in the process, which must
    not decide whether a checkpoint fits.
    """
    found = {}
    optimizer = model.optimizer
    trainable = {id(v) for v in model.trainable_variables}
    weights = {id(v) for v in model.weights}
    for variable in model.variables:
        if id(variable) in weights and id(variable) not in trainable:
            continue  # frozen
        found.setdefault(variable.path, variable)
    for variable in optimizer.variables:
        name = variable.path
        if name.startswith(f"{optimizer.name}/"):
            name = name[len(optimizer.name) + 1:]
        key = f"optimizer/{name}"
        if key in found:
            raise ValueError(f"Two optimizer variables are both named {key!r}; a checkpoint cannot "
                             "tell them apart.")
        found[key] = variable
    return found


def _value(variable):
    """The variable's array as Orbax takes it: the (sharded) jax.Array, or numpy elsewhere."""
    import keras

    if keras.config.backend() == "jax":
        return variable.value
    return keras.ops.convert_to_numpy(variable.value)


def _target(variable):
    """What restoring a variable should produce: its shape, dtype and current layout."""
    import keras

    if keras.config.backend() == "jax":
        import jax

        return jax.ShapeDtypeStruct(variable.shape, variable.dtype, sharding=variable.value.sharding)
    return np.zeros(variable.shape, dtype=variable.dtype)


class Checkpoints:
    """The run's checkpoints: save (asynchronously), find the newest, restore onto any mesh.

    Every process creates one with the same `directory` and calls `save` and
    `restore` at the same steps; each writes and reads its own shards.

    Args:
        directory: folder (local path or bucket URI) holding `step_XXXXXXXX/`.
        keep: newest checkpoints kept (None keeps all).
        async_save: write in the background (`save` returns after the device
            copy); `wait()` blocks until the last save is on disk.
    """

    def __init__(self, directory, *, keep=None, async_save=True):
        ocp = _ocp()
        self.directory = str(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            step_name_format=_name_format(), create=True,
        )
        self.manager = ocp.CheckpointManager(
            _path(self.directory), options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        )
        self.timings = []  # (step, blocking seconds)

    def latest(self):
        """`(step, path)` of the newest complete checkpoint, or None."""
        step = self.manager.latest_step()
        return None if step is None else (step, self.path(step))

    def path(self, step):
        return str(_path(self.directory) / _name_format().build_name(step))

    def save(self, step, model, meta):
        """Save weights + optimizer variables and the JSON `meta` as checkpoint `step`.

        `model` must be current (inside a JAX `fit`, after `jax_state_sync()`).
        Returns the seconds training was blocked (the rest is written in the background).
        """
        ocp = _ocp()
        started = time.perf_counter()
        state = {path: _value(v) for path, v in training_variables(model).items()}
        meta = {**meta, "step": step, "rng": rng_state()}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))
        blocking = time.perf_counter() - started
        self.timings.append((step, blocking))
        return blocking

    def wait(self):
        """Block until every save is complete on disk; return the seconds waited."""
        started = time.perf_counter()
        self.manager.wait_until_finished()
        return time.perf_counter() - started

    def restore(self, step, model):
        """Load checkpoint `step` into `model` (built, with its optimizer built); return its meta.

        Raises:
            ValueError: the checkpoint holds other variables than this model
                and optimizer (another preset, optimizer or accumulation).
        """
        ocp = _ocp()
        variables = training_variables(model)
        path = self.path(step)
        saved = self.manager.item_metadata(step)["state"]
        saved_paths = set(saved.keys()) if saved is not None else set()
        if saved_paths != set(variables):
            missing, extra = sorted(set(variables) - saved_paths), sorted(saved_paths - set(variables))
            raise ValueError(
                f"Checkpoint {path!r} holds other variables than this model and optimizer "
                f"(missing {missing[:3]}{'…' if len(missing) > 3 else ''}, unexpected "
                f"{extra[:3]}{'…' if len(extra) > 3 else ''}). Was it written with another preset or "
                "other optimizer settings (e.g. gradient accumulation)?"
            )
        for name, variable in variables.items():
            if tuple(saved[name].shape) != tuple(variable.shape):
                raise ValueError(f"Checkpoint {path!r}: {name} has shape {tuple(saved[name].shape)}, "
                                 f"this model's has {tuple(variable.shape)}.")
        targets = {name: _target(v) for name, v in variables.items()}
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(targets), meta=ocp.args.JsonRestore()))
        for name, variable in variables.items():
            variable.assign(restored["state"][name])
        meta = dict(restored["meta"])
        set_rng_state(meta["rng"])
        return meta

    def close(self):
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
