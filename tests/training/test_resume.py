"""A demo run killed with SIGKILL and resumed logs the same losses as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

STEPS, EVERY = 20, 5
OVERRIDES = [
    "model.preset=smallcoder_test",
    "training.sequence_length=64",
    "training.global_batch=4",
    f"training.tokens={STEPS * 4 * 64}",
    f"checkpoint.every_steps={EVERY}",
    "checkpoint.keep=2",
    "distribution.layout=none",
    "logging.tensorboard=false",
    "export.hf=false",
    "sample.max_new_tokens=0",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(output, resume=False):
    sets = [arg for item in OVERRIDES for arg in ("--set", item)]
    return [sys.executable, "-m", "smallcoder.cli", "recipe", "run", "sft", "--demo", *sets,
            "--output", str(output)] + (["--resume"] if resume else [])


def _start(output, resume=False):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(_command(output, resume), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _losses(output):
    with open(os.path.join(output, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f)}


def test_sigkill_then_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    from smallcoder.training.checkpoint import latest

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start(straight)
    victim = _start(killed)
    first = killed / "checkpoints" / f"step_{EVERY:08d}"  # Orbax renames it into place when complete
    deadline = time.time() + 120
    while not first.exists():
        assert victim.poll() is None, victim.stdout.read()
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    step, _ = latest(str(killed / "checkpoints"))
    assert step < STEPS, "the run finished before it could be killed"
    assert not (killed / "model").exists()

    resumed = _start(killed, resume=True)
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    assert f"resume: step {step} of {STEPS}" in out
    # The log of a resumed run does not claim a fresh start, and its summary says it resumed.
    assert "starting from scratch" not in out and "fresh smallcoder_test weights" not in out
    assert f"(resumed at step {step})" in out
    out, _ = reference.communicate(timeout=180)
    assert reference.returncode == 0, out

    want, got = _losses(straight), _losses(killed)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for s in range(step + 1, STEPS + 1):
        assert abs(got[s] - want[s]) <= 1e-6 * abs(want[s]), (s, got[s], want[s])
    assert json.load(open(killed / "summary.json"))["resumed_from"] == step
