"""XLA:CPU's memory-frugal scheduler is on by default (smallcoder/xla_flags.py), and with it
`remat="full"` cuts the compiled activation memory of a training step by more than half."""

import os
import subprocess
import sys

import pytest

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


def test_remat_halves_the_compiled_activation_memory(backend):
    if backend != "jax":
        pytest.skip("XLA's compiled memory analysis needs the JAX backend")
    if xla_flags.scheduler_setting() != "memory":
        pytest.skip("XLA_FLAGS asks for the concurrency-optimised scheduler")
    from smallcoder.bench.train import remat_memory, train_step_memory_analysis
    from smallcoder.models.presets import preset_config

    # Small vocabulary so the decoder blocks' activations dominate, as in the 303M model.
    config = dict(preset_config("smallcoder_test"), vocabulary_size=256, num_layers=4, intermediate_dim=256)
    m = remat_memory(config, 2, 256)
    assert m["ratio"] < 0.5, m  # measured 0.34 (0.94 with the concurrency-optimised scheduler)
    step = train_step_memory_analysis(config, 2, 256, remat="full")
    assert step["optimizer_bytes"] > 2 * step["weight_bytes"] * 0.99  # two AdamW moments (+ counters)
    assert step["peak_bytes"] >= step["argument_bytes"] + step["temp_bytes"]
    assert step["xla_cpu_scheduler"] == "memory"


def test_microbatches_cut_the_compiled_step_memory(backend):
    if backend != "jax":
        pytest.skip("in-step microbatches and XLA's memory analysis need the JAX backend")
    from smallcoder.bench.train import train_step_memory_analysis
    from smallcoder.models.presets import preset_config

    config = dict(preset_config("smallcoder_test"), vocabulary_size=256, num_layers=4, intermediate_dim=256)
    whole = train_step_memory_analysis(config, 4, 256)
    split = train_step_memory_analysis(config, 4, 256, microbatches=4)
    assert split["microbatches"] == 4 and whole["microbatches"] == 1
    # Activations of one microbatch alive at a time, plus one summed-gradient buffer.
    assert split["temp_bytes"] < 0.5 * whole["temp_bytes"], (split["temp_bytes"], whole["temp_bytes"])
