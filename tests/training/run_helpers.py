"""Helpers for tests that kill training runs."""

import time


def wait_for_checkpoint(processes, checkpoint, timeout):
    """Wait until `checkpoint` exists (Orbax renames it into place once complete) while `processes` run."""
    deadline = time.time() + timeout
    while not checkpoint.exists():
        assert all(p.poll() is None for p in processes), processes[0].stdout.read()[-3000:]
        assert time.time() < deadline, f"no checkpoint within {timeout} s"
        time.sleep(0.01)
