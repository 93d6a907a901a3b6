"""The XLA flag smallcoder's process tuning sets: XLA:CPU's memory-frugal scheduler.

XLA:CPU's default HLO scheduler ("concurrency-optimised", breadth-first)
starts independent work early, which keeps many intermediates alive at once;
in a training step that undoes rematerialisation, since the recomputed
activations of every decoder block are live together again.
`--xla_cpu_enable_concurrency_optimized_scheduler=false` selects XLA's
depth-first memory scheduler instead, at the same step time (docs/tuning.md
has the measurements). GPU and TPU compilers ignore the flag.

XLA reads `XLA_FLAGS` once, when JAX initialises its backends (the first
`jax.devices()`, array or jitted call), not when `jax` or `keras` is imported.
Nothing here runs on import: `smallcoder.tune_process()` calls `apply()`.
"""

from __future__ import annotations

import os

FLAG_NAME = "xla_cpu_enable_concurrency_optimized_scheduler"
FLAG = f"--{FLAG_NAME}=false"


def apply(environ=None):
    """Append `FLAG` to `XLA_FLAGS` unless the user set that flag.

    Returns `"user"` (the user's setting is kept), `"too_late"` (appended, but
    JAX's backends already run in this process, so only child processes get
    it) or `"applied"`. Other flags already in `XLA_FLAGS` are kept.
    """
    from smallcoder.compat import jax_backends_initialized

    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    if FLAG_NAME in current:
        return "user"
    environ["XLA_FLAGS"] = f"{current} {FLAG}".strip()
    return "too_late" if environ is os.environ and jax_backends_initialized() else "applied"


def scheduler_setting(environ=None):
    """What `XLA_FLAGS` asks of the XLA:CPU scheduler: `"memory"`, `"concurrency"` or `"default"`."""
    environ = os.environ if environ is None else environ
    value = None
    for item in environ.get("XLA_FLAGS", "").split():
        name, _, setting = item.lstrip("-").partition("=")
        if name == FLAG_NAME:
            value = setting.lower() not in ("false", "0")
    return {None: "default", True: "concurrency", False: "memory"}[value]
