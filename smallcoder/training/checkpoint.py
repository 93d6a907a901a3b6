"""Training checkpoints: weights, optimizer variables, step, data-pipeline state, RNG.

Layout of `<run>/checkpoints/step_00000100/`::

    model.weights.h5   the model's weights (Keras)
    optimizer.npz      every optimizer variable, in `optimizer.variables` order
    state.json         step, data-pipeline state, token counts, RNG states

Each checkpoint is written to a temporary sibling and renamed into place, so
a killed run leaves either a complete checkpoint or none; `latest()` only
sees complete ones.
"""

import json
import os
import random
import re
import shutil

import numpy as np

from smallcoder.atomic import staging_folder

_NAME = re.compile(r"step_(\d{8})$")


def checkpoint_dir(run_dir):
    return os.path.join(run_dir, "checkpoints")


def list_checkpoints(run_dir):
    """`[(step, path)]` of the complete checkpoints in `run_dir`, oldest first."""
    root = checkpoint_dir(run_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _NAME.match(name)
        if match and os.path.isfile(os.path.join(root, name, "state.json")):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return sorted(found)


def latest(run_dir):
    """`(step, path)` of the newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
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


def save(run_dir, step, model, state, keep=None):
    """Write checkpoint `step` atomically; keep only the newest `keep`.

    Args:
        run_dir: the run folder.
        step: int, micro-batches trained so far.
        model: a compiled Keras model with a built optimizer.
        state: JSON-serialisable dict (data-pipeline state, token counts, …);
            the RNG states are added.

    Returns:
        The checkpoint path.
    """
    root = checkpoint_dir(run_dir)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step_{step:08d}")
    with staging_folder(final) as tmp:
        model.save_weights(os.path.join(tmp, "model.weights.h5"))
        arrays = {str(i): np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
        np.savez(os.path.join(tmp, "optimizer.npz"), **arrays)
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({**state, "step": step, "rng": rng_state()}, f)
    if keep:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def restore(path, model):
    """Load weights and optimizer variables from checkpoint `path`; return its state dict.

    The optimizer must be built (same variables, same order) first.
    """
    model.load_weights(os.path.join(path, "model.weights.h5"))
    with np.load(os.path.join(path, "optimizer.npz")) as arrays:
        variables = model.optimizer.variables
        if len(arrays.files) != len(variables):
            raise ValueError(
                f"Checkpoint {path!r} has {len(arrays.files)} optimizer variables; this optimizer has "
                f"{len(variables)}. Was it written with other optimizer settings (e.g. gradient accumulation)?"
            )
        for i, variable in enumerate(variables):
            variable.assign(arrays[str(i)])
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    set_rng_state(state["rng"])
    return state
