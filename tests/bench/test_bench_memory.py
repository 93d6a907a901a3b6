"""XLA:CPU's memory-frugal scheduler is on by default (smallcoder/xla_flags.py), and with it
`remat="full"` cuts the compiled activation memory of a training step by more than half."""

import os
import subprocess
import sys

from smallcoder import xla_flags


def _flags_after_import(xla_flags_env):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags_env is not None:
        env["XLA_FLAGS"] = xla_flags_env
    code = "import smallcoder, os; print(os.environ['XLA_FLAGS']); print(smallcoder.xla_flags.status)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:2]


def test_import_sets_the_flag_in_a_fresh_process():
    assert _flags_after_import(None) == [xla_flags.FLAG, "applied"]


def test_other_flags_are_kept_and_a_user_setting_wins():
    assert _flags_after_import("--xla_force_host_platform_device_count=8") == [
        f"--xla_force_host_platform_device_count=8 {xla_flags.FLAG}", "applied"]
    user = "--xla_force_host_platform_device_count=8 --xla_cpu_enable_concurrency_optimized_scheduler=true"
    assert _flags_after_import(user) == [user, "user"]


def test_too_late_once_jax_runs():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = "import jax; jax.devices(); import smallcoder; print(smallcoder.xla_flags.status)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "too_late"


def test_apply_and_scheduler_setting_on_a_given_environment():
    env = {}
    assert xla_flags.apply(env) == "applied" and xla_flags.scheduler_setting(env) == "memory"
    assert xla_flags.apply(env) == "user" and env["XLA_FLAGS"] == xla_flags.FLAG  # not twice
    assert xla_flags.scheduler_setting({}) == "default"
    assert xla_flags.scheduler_setting(
        {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}) == "concurrency"


def test_this_session_runs_with_the_flag():
    # tests/conftest.py adds the 8 fake devices first; the package import appends its flag.
    flags = os.environ["XLA_FLAGS"]
    assert "--xla_force_host_platform_device_count=8" in flags
    assert xla_flags.FLAG_NAME in flags

