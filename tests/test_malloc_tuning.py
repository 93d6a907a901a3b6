"""The `smallcoder` command re-executes itself once under glibc's huge-page malloc tunable."""

import os
import subprocess
import sys

import pytest

from smallcoder.malloc_tuning import OPT_OUT, TUNABLES, tuned_environment

pytestmark = pytest.mark.skipif(tuned_environment({}) is None, reason="Linux with glibc only")

SCRIPT = ("import os; from smallcoder.malloc_tuning import reexec_with_tunables; "
          "print('start', flush=True); reexec_with_tunables(); print(os.environ.get('GLIBC_TUNABLES'))")


def _run(env):
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          check=True).stdout.split("\n")


def test_reexecutes_once_with_the_tunable():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    lines = _run(env)
    assert lines[:3] == ["start", "start", TUNABLES]  # two starts: one re-exec, no loop


def test_keeps_other_tunables_and_respects_the_users_malloc_settings_and_opt_out():
    assert tuned_environment({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=4096"})["GLIBC_TUNABLES"] == (
        "glibc.rtld.optional_static_tls=4096:" + TUNABLES)
    assert tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) is None
    assert tuned_environment({OPT_OUT: "0"}) is None
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | {OPT_OUT: "0"}
    assert _run(env)[:2] == ["start", "None"]


REFAULT_SCRIPT = """
import resource
import numpy as np

def faults_of_one_cycle():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = np.ones(64 * 2**20, np.float32)  # 256 MiB, every page touched
    del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_one_cycle()  # the first cycle maps the memory in
print(min(faults_of_one_cycle() for _ in range(3)))
"""


def _refaults(glibc_tunables):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | {"GLIBC_TUNABLES": glibc_tunables}
    out = subprocess.run([sys.executable, "-c", REFAULT_SCRIPT], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_freed_buffers_stay_in_the_process_so_the_next_step_does_not_fault_them_in_again():
    # What the tuned training step relies on (see malloc_tuning): a 256 MiB
    # buffer freed and allocated again costs no page faults. With glibc's
    # defaults or hugetlb=1 alone it is unmapped and faulted in again (640
    # faults here, numpy asking for huge pages; 65536 with 4 KiB pages).
    assert _refaults("glibc.malloc.hugetlb=1") >= 100
    assert _refaults(TUNABLES) < 20
