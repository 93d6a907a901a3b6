"""A demo run killed with SIGKILL and resumed logs the same losses as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys

import pytest
from run_helpers import wait_for_checkpoint

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
    "eval.tasks=[]",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(output, resume=False, recipe=("sft", "--demo"), extra=()):
    sets = [arg for item in [*OVERRIDES, *extra] for arg in ("--set", item)]
    return [sys.executable, "-m", "smallcoder.cli", "recipe", "run", *recipe, *sets,
            "--output", str(output)] + (["--resume"] if resume else [])


def _start(output, resume=False, recipe=("sft", "--demo"), extra=()):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(_command(output, resume, recipe, extra), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _losses(output):
    with open(os.path.join(output, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f)}


def _kill_after_first_checkpoint(output, recipe, extra=()):
    """Start a run, SIGKILL it once its first checkpoint is complete; return the step it holds."""
    from smallcoder.training.checkpoint import latest

    victim = _start(output, recipe=recipe, extra=extra)
    # Orbax renames a checkpoint into place when it is complete.
    first = output / "checkpoints" / f"step_{EVERY:08d}"
    wait_for_checkpoint([victim], first, timeout=120)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    step, _ = latest(str(output / "checkpoints"))
    assert step < STEPS, "the run finished before it could be killed"
    assert not (output / "model").exists()
    return step


def _check_resumed_equals_straight(straight, killed, step):
    want, got = _losses(straight), _losses(killed)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for s in range(step + 1, STEPS + 1):
        assert abs(got[s] - want[s]) <= 1e-6 * abs(want[s]), (s, got[s], want[s])
    assert json.load(open(killed / "summary.json"))["resumed_from"] == step


def test_sigkill_then_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start(straight)
    step = _kill_after_first_checkpoint(killed, ("sft", "--demo"))

    resumed = _start(killed, resume=True)
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    assert f"resume: step {step} of {STEPS}" in out
    # The log of a resumed run does not claim a fresh start, and its summary says it resumed.
    assert "starting from scratch" not in out and "fresh smallcoder_test weights" not in out
    assert f"(resumed at step {step})" in out
    out, _ = reference.communicate(timeout=180)
    assert reference.returncode == 0, out
    _check_resumed_equals_straight(straight, killed, step)


SHUFFLED_RECIPE = """
extends: _defaults
model: {{tokenizer: {tokenizer}}}
data:
  format: text
  shuffle_buffer: 23
  sources:
    - {{name: web, weight: 0.7, type: jsonl, path: {web}}}
    - {{name: notes, weight: 0.3, type: parquet, path: {notes}}}
eval: {{tasks: []}}
"""


@pytest.mark.slow  # the data order does not depend on the backend: run once, in the JAX session
def test_sigkill_then_resume_with_shuffled_local_shards(tmp_path):
    """Shuffled reading (shard order, 16 shards interleaved, blocks of 23) resumes exactly too.

    One data stream and 4 rows of 512 tokens take ~1,000 short documents of the
    jsonl source by the checkpoint, past its first tokenized chunk (512), so
    the checkpoint's position lies inside a block, inside shards.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from smallcoder.tokenizer import train_tokenizer

    texts = {k: [f"s{k} d{i}" + " x" * (i % 3) for i in range(200)] for k in range(30)}
    (tmp_path / "web").mkdir()
    (tmp_path / "notes").mkdir()
    for k in range(20):
        with open(tmp_path / "web" / f"{k:02d}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts[k])
    for k in range(20, 30):
        pq.write_table(pa.Table.from_pydict({"text": texts[k]}),
                       tmp_path / "notes" / f"{k}.parquet", row_group_size=8)
    all_texts = [t for shard in texts.values() for t in shard]
    train_tokenizer(all_texts, 500).save(str(tmp_path / "tok"))
    recipe = tmp_path / "shuffled.yaml"
    recipe.write_text(SHUFFLED_RECIPE.format(tokenizer=tmp_path / "tok", web=tmp_path / "web",
                                             notes=tmp_path / "notes"))
    run = (str(recipe),)
    extra = ["model.dtype=float32", "training.data_streams=1", "training.sequence_length=512",
             f"training.tokens={STEPS * 4 * 512}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = _start(straight, recipe=run, extra=extra)
    step = _kill_after_first_checkpoint(killed, run, extra)
    resumed = _start(killed, resume=True, recipe=run, extra=extra)
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out
    assert f"resume: step {step} of {STEPS}" in out
    out, _ = reference.communicate(timeout=180)
    assert reference.returncode == 0, out
    _check_resumed_equals_straight(straight, killed, step)
