"""glibc malloc setting for the large, short-lived buffers of XLA:CPU and torch.

With glibc's defaults a buffer above the mmap threshold (the 3-800 MB
activations, gradients and logits of a training step) gets fresh 4 KiB pages
from the kernel and gives them back when freed, so every step faults its
working set in again page by page. `glibc.malloc.hugetlb=1` (glibc >= 2.35)
makes malloc ask for transparent huge pages (`madvise(MADV_HUGEPAGE)`), 2 MiB
per fault. Measured on the 303M 4x1024 step (4 microbatches, 2 cores): minor
page faults 1.53 million -> 5 thousand per step, kernel time 6.1-7.4 s ->
3.6-4.1 s, step 50.0-51.9 s -> 48.7-49.6 s. (Also keeping freed memory in
the process, `mmap_max=0` and a huge `trim_threshold`, measured no faster.)

glibc reads `GLIBC_TUNABLES` only when a process starts, so the `smallcoder`
command re-executes itself once with it set (`reexec_with_tunables`). A
user's own `glibc.malloc.*` tunables, or `SMALLCODER_MALLOC_TUNING=0`, leave
the process as it is. Library users can export it themselves::

    export GLIBC_TUNABLES=glibc.malloc.hugetlb=1

Systems whose transparent huge pages are `never` (see
/sys/kernel/mm/transparent_hugepage/enabled) get no effect and no harm.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = "glibc.malloc.hugetlb=1"
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


def reexec_with_tunables():
    """Replace this process by the same command with `TUNABLES` set (no return), if needed.

    Call it first thing in a command-line entry point, before any work.
    """
    tuned = tuned_environment(os.environ)
    if tuned is not None and getattr(sys, "orig_argv", None):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], tuned)
