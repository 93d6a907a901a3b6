"""Run many programs in sandboxes at once.

Each program gets its own `sandbox.run_program` process tree; a thread pool
of `workers` threads (default: the number of CPU cores) keeps that many
sandboxes running. Threads only wait on child processes, so the GIL is no
bottleneck and nothing is forked from this (possibly multi-threaded) process
except through `subprocess`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from smallcoder.eval.sandbox import SandboxLimits, run_program


def default_workers():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Executor:
    """A pool that runs programs in sandboxes.

    Args:
        limits: `SandboxLimits` for every program.
        workers: sandboxes run at the same time.
        isolation: see `sandbox.run_program`.

    `submit(program, then=None) -> Future[SandboxResult]`.
    """

    def __init__(self, limits=None, workers=None, isolation=None):
        self.limits = limits or SandboxLimits()
        self.isolation = isolation
        self._pool = ThreadPoolExecutor(max_workers=workers or default_workers())

    def submit(self, program, then=None):
        """Run `program`; `then(result)` runs in the worker before the future
        completes (so waiting on the future also waits for `then`)."""
        return self._pool.submit(self._run, program, then)

    def _run(self, program, then):
        result = run_program(program, self.limits, self.isolation)
        if then is not None:
            then(result)
        return result

    def shutdown(self):
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
