"""Fine-tuning a Hugging Face checkpoint on a jsonl file: full and LoRA, validation loss, exports,
resume, and the Hub id that cannot be reached."""

import inspect
import json
import json.encoder
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml
from finetune_helpers import hf_logits, keras_logits, rows, write_llama, write_rows
from run_helpers import wait_for_checkpoint

from smallcoder.recipes import load_recipe
from smallcoder.training import run_stage

STEPS, EVERY = 20, 5
OVERRIDES = [
    "training.sequence_length=64",
    "training.global_batch=8",
    f"training.tokens={STEPS * 8 * 64}",
    f"eval.every_steps={EVERY}",
    "checkpoint.every_steps=10",
    "model.dtype=float32",
    "optimizer.learning_rate=3.0e-3",
    "eval.tasks=[]",
    "sample.max_new_tokens=0",
    "logging.tensorboard=false",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """`(hf folder, rows.jsonl)`: a random Llama written by transformers, and 200 conversations."""
    folder = tmp_path_factory.mktemp("finetune")
    records = rows(200)
    data = write_rows(folder / "rows.jsonl", records)
    texts = [inspect.getsource(json.encoder)] + [f"{r['prompt']} {r['response']}" for r in records]
    return write_llama(folder / "hf", texts), data


def _metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _token_ids():
    return np.random.default_rng(0).integers(1, 400, (2, 24))


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable.value)


def test_fine_tune_a_hugging_face_folder_on_a_jsonl_file(checkpoint, tmp_path):
    from smallcoder.convert import load_hf
    from smallcoder.models.causal_lm import SmallCoderCausalLM

    hf, data = checkpoint
    run = str(tmp_path / "run")
    lines = []
    recipe = load_recipe("sft", data_files=[data], overrides=[f"init_from={hf}", *OVERRIDES])
    summary = run_stage(recipe, output_dir=run, echo=lines.append)

    records = _metrics(run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    validated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in validated] == [5, 10, 15, 20]
    assert validated[-1]["val_loss"] < validated[0]["val_loss"]
    assert all(r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"])) for r in validated)
    assert summary["validation"]["loss"] == validated[-1]["val_loss"] and summary["validation"]["step"] == STEPS
    text = "\n".join(lines)
    assert f"model: initialised from {hf} (Hugging Face folder)" in text
    assert "validation: " in text and "every 5 steps and at the end" in text

    # recipe.yaml records what was loaded: the weights, the tokenizer and EOS of the checkpoint.
    with open(os.path.join(run, "recipe.yaml")) as f:
        saved_text = f.read()
    assert f"weights from {hf}; tokenizer {hf} (" in saved_text and "EOS '<|endoftext|>' (id 0)" in saved_text
    saved = yaml.safe_load(saved_text)
    assert saved["init_from"] == hf and saved["model"]["tokenizer"] == hf
    assert saved["model"]["eos_token"] == "<|endoftext|>"
    assert saved["data"]["sources"] == [{"name": "rows", "weight": 1.0, "type": "jsonl", "path": data,
                                         "prompt": "prompt", "response": "response"}]
    assert saved["data"]["validation_fraction"] == 0.05

    # The HF export is our final model, as transformers loads it; and training changed it.
    final = SmallCoderCausalLM.from_preset(os.path.join(run, "model"))
    ours = keras_logits(final, _token_ids())
    assert np.max(np.abs(hf_logits(summary["hf"], _token_ids()) - ours)) <= 1e-4
    assert np.max(np.abs(keras_logits(load_hf(hf), _token_ids()) - ours)) > 1e-2


def test_lora_trains_the_adapters_only_and_exports_them_merged(checkpoint, tmp_path):
    from smallcoder.convert import load_hf
    from smallcoder.models.causal_lm import SmallCoderCausalLM
    from smallcoder.models.presets import preset_config
    from smallcoder.training.checkpoint import Checkpoints
    from smallcoder.training.lora import adapter_parameter_count

    hf, data = checkpoint
    run = str(tmp_path / "run")
    recipe = load_recipe("sft", data_files=[data], overrides=[f"init_from={hf}", *OVERRIDES, "model.lora.rank=4"])
    summary = run_stage(recipe, output_dir=run, echo=lambda line: None)
    assert summary["lora"]["trainable_parameters"] == adapter_parameter_count(preset_config(hf), 4) == 2 * (
        (64 * 4 * 4 + 4 * 16) + (64 * 2 * 4 + 4 * 16))  # 2 layers x (query a (D, N, r) + b (r, H) + value)
    validated = [r for r in _metrics(run) if "val_loss" in r]
    assert validated[-1]["val_loss"] < validated[0]["val_loss"]

    # Only the adapted kernels changed; every other weight is bit-identical to the checkpoint's.
    base, merged = load_hf(hf), SmallCoderCausalLM.from_preset(os.path.join(run, "model"))
    assert [v.path for v in base.weights] == [v.path for v in merged.weights]
    for before, after in zip(base.weights, merged.weights):
        adapted = before.path.split("/")[-2] in ("query", "value")
        assert np.array_equal(_numpy(before), _numpy(after)) != adapted, before.path

    # The checkpoint holds the adapters and their AdamW moments only.
    store = Checkpoints(os.path.join(run, "checkpoints"))
    saved = set(store.manager.item_metadata(STEPS)["state"].keys())
    store.close()
    adapters = {f"transformer_layer_{i}/attention/{t}/lora_kernel_{ab}" for i in range(2) for t in ("query", "value")
                for ab in "ab"}
    assert {k for k in saved if not k.startswith("optimizer/")} == adapters
    moments = {k for k in saved if k.startswith("optimizer/")} - {"optimizer/iteration", "optimizer/learning_rate"}
    assert len(moments) == 2 * len(adapters) and all("lora_kernel" in k for k in moments)

    # The base checkpoint + the adapters file (keras-hub's load_lora_weights) is the trained model,
    # and the merged exports equal it.
    adapted = load_hf(hf)
    adapted.backbone.load_lora_weights(summary["lora"]["adapters"])
    want = keras_logits(adapted, _token_ids())
    assert np.max(np.abs(keras_logits(merged, _token_ids()) - want)) <= 1e-4
    assert np.max(np.abs(hf_logits(summary["hf"], _token_ids()) - want)) <= 1e-4
    assert np.max(np.abs(keras_logits(base, _token_ids()) - want)) > 1e-3


def test_early_stop_on_the_validation_loss(checkpoint, tmp_path):
    hf, data = checkpoint
    run = str(tmp_path / "run")
    lines = []
    # Learning rate 0: the validation loss never improves, so the second evaluation stops the run.
    recipe = load_recipe("sft", data_files=[data], overrides=[
        f"init_from={hf}", *OVERRIDES, "eval.every_steps=2", "eval.early_stop_patience=1",
        "optimizer.learning_rate=0.0", "export.hf=false"])
    summary = run_stage(recipe, output_dir=run, echo=lines.append)
    assert summary["steps"] == 4 and summary["tokens"] == 4 * 8 * 64
    assert summary["validation"]["stopped_at"] == 4 and summary["validation"]["best_step"] == 2
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3, 4]
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["step_00000004"]  # the stop is saved
    assert "early stop: at step 4" in "\n".join(lines)
    again = []
    run_stage(recipe, output_dir=run, resume=True, echo=again.append)
    assert "resume: the run stopped early at step 4 (validation loss); nothing left to train" in "\n".join(again)


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_a_hub_id_offline_fails_at_once_in_one_line(checkpoint, tmp_path, offline):
    _, data = checkpoint
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if offline == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: the connection is refused
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "smallcoder.cli", "recipe", "run", "sft", "--data", data,
         "--set", "init_from=Beebey/smallcoder-303m", "--output", str(tmp_path / "run")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - started < 60  # no minutes of download retries
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "init_from: 'Beebey/smallcoder-303m' is not a local folder" in line
    assert "Hugging Face Hub" in line and "Pass a local folder" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # two runs side by side, each compiling its programs
def test_lora_resume_after_sigkill_gives_the_losses_of_an_uninterrupted_run(checkpoint, tmp_path):
    from smallcoder.training.checkpoint import latest

    hf, data = checkpoint
    sets = [arg for item in [f"init_from={hf}", *OVERRIDES, "model.lora.rank=4", "checkpoint.every_steps=5",
                             "export.hf=false", "distribution.layout=none"] for arg in ("--set", item)]

    def start(output, resume=False):
        command = [sys.executable, "-m", "smallcoder.cli", "recipe", "run", "sft", "--data", data, *sets,
                   "--output", str(output)] + (["--resume"] if resume else [])
        return subprocess.Popen(command, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference, victim = start(straight), start(killed)
    first = killed / "checkpoints" / f"step_{EVERY:08d}"
    wait_for_checkpoint([victim], first, timeout=300)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    step, _ = latest(str(killed / "checkpoints"))
    assert step < STEPS, "the run finished before it could be killed"

    resumed = start(killed, resume=True)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"resume: step {step} of {STEPS}" in out and "frozen base initialised from" in out
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out

    want, got = ({r["step"]: r for r in _metrics(run)} for run in (straight, killed))
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for s in range(step + 1, STEPS + 1):
        for key in ("loss", "val_loss"):
            if key in want[s]:
                assert abs(got[s][key] - want[s][key]) <= 1e-6 * abs(want[s][key]), (s, key)
    assert "val_loss" in got[STEPS]
