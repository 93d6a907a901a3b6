"""Silence what TensorFlow's native libraries print while they load (the `smallcoder` command only).

keras-hub imports TensorFlow on every Keras backend, and TensorFlow's C++ start-up
writes to file descriptor 2 before any Python logging exists: "All log messages
before absl::InitializeLog() …", "Could not find cuda drivers …", CPU-feature
notes. `TF_CPP_MIN_LOG_LEVEL` no longer reaches those lines. The command line
should print nothing unless something is wrong, so `quiet_import("tensorflow")`
points descriptor 2 at /dev/null for the duration of that one import. An import
that fails still raises, and its traceback is printed once descriptor 2 is back.

Library code never calls this: it changes process-wide state (a `sys.meta_path`
entry, the descriptor while the import runs). `smallcoder.cli.run` does.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    """Descriptor 2 (what C++ writes to) points at /dev/null inside the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the other finders and wraps the loader of the named modules.

    Availability checks (`importlib.util.find_spec("tensorflow")`) also come here; only an
    actual import runs the wrapped `exec_module`, after which the name is done with.
    """

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def quiet_exec_module(module):
                self.names.discard(fullname)
                with _stderr_silenced():
                    exec_module(module)

            spec.loader.exec_module = quiet_exec_module
        return spec


def quiet_import(*names):
    """Make the first import of each top-level module in `names` silent on descriptor 2."""
    names = [n for n in names if n not in sys.modules]
    if names:
        sys.meta_path.insert(0, _QuietFinder(names))
