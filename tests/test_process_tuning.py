"""Importing smallcoder changes nothing in the process; `tune_process()` and the `smallcoder`
command apply the XLA and malloc tuning, and `smallcoder -v` says so."""

import os
import subprocess
import sys

from smallcoder import malloc_tuning, xla_flags

ALL_MODULES = """
import importlib, os, pkgutil, sys
import smallcoder
before = dict(os.environ)
importlib.import_module("smallcoder.cli")
print("light", sorted(set(os.environ.items()) ^ set(before.items())))
import jax, keras, keras_hub  # their own import-time settings (TensorFlow's) happen here
before = dict(os.environ)
for info in pkgutil.walk_packages(smallcoder.__path__, "smallcoder."):
    if info.name != "smallcoder._decode_kernels":  # a C library for XLA, loaded with ctypes
        importlib.import_module(info.name)
print("all", sorted(set(os.environ.items()) ^ set(before.items())), len(sys.modules))
"""


def _clean_env(**extra):
    drop = ("XLA_FLAGS", "GLIBC_TUNABLES", malloc_tuning.OPT_OUT, "KERAS_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"KERAS_BACKEND": "jax", **extra}


def _python(code, env):
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout


def test_import_smallcoder_leaves_os_environ_unchanged():
    code = ("import os; before = dict(os.environ); import smallcoder; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    assert _python(code, _clean_env()).strip() == "[]"


def test_importing_every_module_leaves_os_environ_unchanged():
    lines = _python(ALL_MODULES, _clean_env()).splitlines()
    assert lines[-2] == "light []"
    assert lines[-1].startswith("all [] ")


def test_tune_process_sets_the_scheduler_flag_keeps_other_flags_and_a_user_setting():
    code = ("import os, smallcoder; r = smallcoder.tune_process(malloc=False); "
            "print(r['xla_scheduler']); print(os.environ['XLA_FLAGS'])")
    assert _python(code, _clean_env()).splitlines() == ["applied", xla_flags.FLAG]
    other = "--xla_force_host_platform_device_count=2"
    lines = _python(code, _clean_env(XLA_FLAGS=other)).splitlines()
    assert lines == ["applied", f"{other} {xla_flags.FLAG}"]
    user = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    assert _python(code, _clean_env(XLA_FLAGS=user)).splitlines() == ["user", user]


def test_tune_process_says_too_late_once_jax_runs():
    code = ("import jax; jax.devices(); import smallcoder; "
            "print(smallcoder.tune_process(malloc=False)['xla_scheduler'])")
    assert _python(code, _clean_env()).strip() == "too_late"


def test_apply_and_scheduler_setting_on_a_given_environment():
    env = {}
    assert xla_flags.apply(env) == "applied" and xla_flags.scheduler_setting(env) == "memory"
    assert xla_flags.apply(env) == "user" and env["XLA_FLAGS"] == xla_flags.FLAG  # not twice
    assert xla_flags.scheduler_setting({}) == "default"
    assert xla_flags.scheduler_setting(
        {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}) == "concurrency"


def test_the_command_tunes_itself_and_says_so_with_verbose():
    env = _clean_env()
    env.pop("KERAS_BACKEND")
    command = [sys.executable, "-m", "smallcoder.cli", "-v", "recipe", "--help"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "process tuning: KERAS_BACKEND=jax\n" in out.stderr
    assert f"process tuning: XLA_FLAGS += {xla_flags.FLAG}" in out.stderr
    if malloc_tuning.tuned_environment({}) is not None:  # Linux with glibc: re-executed once
        assert f"process tuning: GLIBC_TUNABLES has {malloc_tuning.TUNABLES}" in out.stderr
    assert "Usage:" in out.stdout
    quiet = subprocess.run([sys.executable, "-m", "smallcoder.cli", "recipe", "--help"], env=env,
                           capture_output=True, text=True, check=True)
    assert "process tuning" not in quiet.stderr
