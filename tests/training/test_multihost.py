"""A pod rehearsed on one machine: `recipe run` as 2 JAX processes x 2 CPU devices.

Each run is real: separate processes joined by `--coordinator`, gloo
collectives, Orbax checkpoints written by both. The references are
1-process x 4-device runs of the same recipe (same mesh shape, same data
streams, so the same global batches).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from run_helpers import wait_for_checkpoint

pytestmark = [pytest.mark.jax_only, pytest.mark.slow]

STEPS, EVERY = 16, 4
RECIPE = [
    "model.preset=smallcoder_test",
    "training.sequence_length=48",
    "training.global_batch=8",
    f"training.tokens={STEPS * 8 * 48}",
    f"checkpoint.every_steps={EVERY}",
    f"eval.every_steps={EVERY}",  # validation: a collective over streams that end at different batches
    "eval.validation_batches=null",  # the whole split (the demo caps it)
    "eval.tasks=[]",
    "logging.tensorboard=false",
    "export.hf=false",
    "sample.max_new_tokens=0",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(output, processes, devices_per_process, layout, mesh, *, resume=False, heartbeat=None,
           extra=()):
    """Start the run's processes; return their Popen objects (process 0 first)."""
    sets = [*RECIPE, f"distribution.layout={layout}", f"distribution.mesh={mesh}", *extra]
    command = [sys.executable, "-m", "smallcoder.cli", "recipe", "run", "sft", "--demo",
               "--output", str(output), *[a for s in sets for a in ("--set", s)]]
    if resume:
        command.append("--resume")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    job = []
    if processes > 1:
        job = ["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", str(processes)]
        if heartbeat:
            job += ["--heartbeat-timeout", str(heartbeat)]
    started = []
    for rank in range(processes):
        rank_flags = ["--process-id", str(rank)] if processes > 1 else []
        started.append(subprocess.Popen(command + job + rank_flags, cwd=REPO, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return started


def _finish(processes, timeout=300):
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    for rank, (p, out) in enumerate(zip(processes, outputs)):
        assert p.returncode == 0, f"process {rank}:\n{out[-3000:]}"
    return outputs


def _losses(output):
    with open(os.path.join(output, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"one line per step, in order: {steps}"
    return {r["step"]: r["loss"] for r in records}


def _validation(output):
    """`{step: val_loss}` of a run."""
    with open(os.path.join(output, "metrics.jsonl")) as f:
        return {r["step"]: r["val_loss"] for r in map(json.loads, f) if "val_loss" in r}


def _assert_close(got, want, tolerance, steps):
    assert sorted(got) == list(range(1, STEPS + 1)) == sorted(want)
    worst = max(abs(got[s] - want[s]) for s in steps)
    assert worst <= tolerance, {s: (got[s], want[s]) for s in steps}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted runs: fsdp on 4x1, 1 and 2 processes."""
    root = tmp_path_factory.mktemp("multihost")
    one, two = root / "one-fsdp", root / "two-fsdp"
    _finish(_start(one, 1, 4, "fsdp", "4x1"))
    outputs = _finish(_start(two, 2, 2, "fsdp", "4x1"))
    return {"root": root, "one": _losses(one), "two": _losses(two), "one_dir": one, "two_dir": two,
            "outputs": outputs}


def test_two_processes_train_like_one_process_with_one_writer(runs):
    _assert_close(runs["two"], runs["one"], 1e-5, range(1, STEPS + 1))
    two = runs["two_dir"]
    # Validation: the same batches and the same loss on 2 processes as on one.
    got, want = _validation(two), _validation(runs["one_dir"])
    assert sorted(got) == sorted(want) == list(range(EVERY, STEPS + 1, EVERY))
    assert all(abs(got[s] - want[s]) <= 1e-5 for s in got), (got, want)
    assert {"recipe.yaml", "metrics.jsonl", "summary.json", "model", "checkpoints"} <= set(os.listdir(two))
    summary = json.load(open(two / "summary.json"))
    assert summary["processes"] == 2 and summary["steps"] == STEPS
    # Token accounting sums both processes' streams: the same count as one process.
    alone = json.load(open(runs["one_dir"] / "summary.json"))
    assert summary["tokens_per_source"] == alone["tokens_per_source"]
    assert summary["tokens_per_source"]["demo-tasks"] >= STEPS * 8 * 48
    # Both processes wrote their own shards of the arrays; process 0 alone the meta.
    state = two / "checkpoints" / f"step_{STEPS:08d}" / "state"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(state))
    process_0, process_1 = runs["outputs"]
    assert "topology: 2 process(es) x 2 cpu device(s) = 4 devices" in process_0
    assert "batch (data) axis crosses processes" in process_0
    assert "topology" not in process_1 and "== sft" not in process_1  # process 1 is quiet


def test_two_processes_with_lora_on_a_2x2_fsdp_tensor_mesh(tmp_path):
    """Frozen weights split over both axes (tensor parallel across the processes), adapters with their layouts."""
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ("model.lora.rank=4", "model.lora.targets=[query, value, feedforward_output]")
    _finish(_start(one, 1, 4, "fsdp_tensor", "2x2", extra=extra))
    _finish(_start(two, 2, 2, "fsdp_tensor", "2x2", extra=extra))
    _assert_close(_losses(two), _losses(one), 1e-5, range(1, STEPS + 1))
    summary = json.load(open(two / "summary.json"))  # the adapters gathered from both processes, merged
    assert summary["lora"]["rank"] == 4 and os.path.isfile(two / "adapters.lora.h5")
    assert os.path.isfile(two / "model" / "model.weights.h5")


def test_a_lost_process_ends_the_job_which_resumes_on_two_processes_or_four_devices(runs, tmp_path):
    lost = tmp_path / "lost"
    processes = _start(lost, 2, 2, "fsdp", "4x1", heartbeat=10)
    first = lost / "checkpoints" / f"step_{EVERY:08d}"  # renamed into place once complete
    wait_for_checkpoint(processes, first, timeout=180)  # training is under way
    processes[1].send_signal(signal.SIGKILL)
    lost_at = time.time()
    out = processes[0].communicate(timeout=120)[0]
    assert time.time() - lost_at < 120
    assert processes[0].returncode != 0
    assert "Error: process 1 of 2 is lost" in out, out[-3000:]
    processes[1].wait()

    from smallcoder.training.checkpoint import latest

    step, _ = latest(str(lost / "checkpoints"))
    assert EVERY <= step < STEPS, "the run finished before it could be killed"
    assert not (lost / "model").exists()
    on_four_devices = tmp_path / "four-devices"  # the same checkpoint on another process count
    shutil.copytree(lost, on_four_devices)

    outputs = _finish(_start(lost, 2, 2, "fsdp", "4x1", resume=True))
    assert f"resume: step {step} of {STEPS}" in outputs[0]
    assert "starting from scratch" not in outputs[0] and "fresh smallcoder_test" not in outputs[0]
    _assert_close(_losses(lost), runs["two"], 1e-6, range(step + 1, STEPS + 1))
    assert all(abs(_validation(lost)[s] - v) <= 1e-6 for s, v in _validation(runs["two_dir"]).items() if s > step)
    assert json.load(open(lost / "summary.json"))["resumed_from"] == step

    _finish(_start(on_four_devices, 1, 4, "fsdp", "4x1", resume=True))
    _assert_close(_losses(on_four_devices), runs["two"], 1e-5, range(step + 1, STEPS + 1))


def test_bench_train_runs_as_a_two_process_job():
    """Two processes x 2 devices: the same first loss as this process on a 4x1 mesh of its own."""
    import keras

    from smallcoder.bench.train import keras_train_step
    from smallcoder.distribution import make_distribution
    from smallcoder.models.presets import preset_config

    config = preset_config("smallcoder_test")
    mesh = make_distribution(config, "fsdp", "4x1", keras.distribution.list_devices()[:4])
    step, _ = keras_train_step(config, 8, 64, distribution=mesh)
    one_process_first_loss = step()

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    job = ["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2"]
    bench = [sys.executable, "-m", "smallcoder.cli", "bench", "train", "--preset", "smallcoder_test",
             "--batch", "8", "--seq", "64", "--steps", "2", "--layout", "fsdp", "--mesh", "4x1", "--json"]
    started = [subprocess.Popen(bench + job + ["--process-id", str(rank)], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for rank in range(2)]
    outputs = _finish(started, timeout=240)
    two = [json.loads(line) for line in outputs[0].splitlines() if line.startswith("{")][0]
    assert two["processes"] == 2 and two["mesh"] == "4x1"
    assert "{" not in outputs[1]  # process 0 alone reports
    assert abs(two["ours"]["first_loss"] - one_process_first_loss) <= 1e-5
