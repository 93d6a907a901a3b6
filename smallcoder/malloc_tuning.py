"""glibc malloc settings for the large, short-lived buffers of XLA:CPU and torch.

With glibc's defaults a buffer above the mmap threshold (the hundreds of MB
of activations, gradients and logits of a training step) is mapped fresh
from the kernel and unmapped when freed, and the per-thread arenas give freed
memory back too, so every step faults its working set in again and the
kernel zeroes each page first. `TUNABLES` keeps it in the process:

- `arena_max=1`: one arena (the brk heap) for all threads; the per-thread
  arenas return memory with `madvise(MADV_DONTNEED)` when they shrink;
- `mmap_max=0`: no buffer gets its own mapping, so none is unmapped on free;
- `trim_threshold` (64 GiB): the heap's free top is never given back;
- `hugetlb=1` (glibc >= 2.35): the heap asks for transparent huge pages.

The memory the process has once held stays with it until it exits (as with
a GPU framework's allocator pool); docs/tuning.md has the measured effect.
glibc reads `GLIBC_TUNABLES` only when a process starts, so
`smallcoder.tune_process()` (and the `smallcoder` command) re-executes the
process once with them set (`reexec_with_tunables`). A user's own
`glibc.malloc.*` tunables, or `SMALLCODER_MALLOC_TUNING=0`, leave the
process as it is.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = ":".join([
    "glibc.malloc.hugetlb=1",
    "glibc.malloc.arena_max=1",
    "glibc.malloc.mmap_max=0",
    f"glibc.malloc.trim_threshold={64 * 2**30}",
])
OPT_OUT = "SMALLCODER_MALLOC_TUNING"


def tuned_environment(environ):
    """The environment to re-execute with, or None when nothing should change."""
    if environ.get(OPT_OUT, "1") == "0" or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return None
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    tuned = dict(environ)
    tuned["GLIBC_TUNABLES"] = ":".join(filter(None, [environ.get("GLIBC_TUNABLES"), TUNABLES]))
    return tuned


def status(environ=None):
    """How this process's malloc is set: `"applied"` (it runs with `TUNABLES`),
    `"user"` (the user's own malloc tunables), `"off"` (`SMALLCODER_MALLOC_TUNING=0`),
    `"not set"` or `"unsupported"` (not glibc)."""
    environ = os.environ if environ is None else environ
    current = environ.get("GLIBC_TUNABLES", "")
    if TUNABLES in current:
        return "applied"
    if "glibc.malloc." in current:
        return "user"
    if environ.get(OPT_OUT, "1") == "0":
        return "off"
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return "unsupported"
    return "not set"


def reexec_with_tunables():
    """Replace this process by the same command with `TUNABLES` set (no return), if needed.

    Call it first thing in a command-line entry point, before any work.
    """
    tuned = tuned_environment(os.environ)
    if tuned is not None and getattr(sys, "orig_argv", None):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], tuned)
