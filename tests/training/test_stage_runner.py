"""The stage runner end to end on the demo data (any backend), NaN handling, and `plan`."""

import json
import os
import re

import keras
import pytest

from smallcoder.recipes import load_recipe
from smallcoder.training import TrainingError, run_stage

TINY = [
    "model.preset=smallcoder_test",
    "training.sequence_length=32",
    "training.global_batch=8",  # splits over the 8 fake JAX devices (layout data)
    "training.tokens=2560",  # 10 steps
    "checkpoint.every_steps=4",
    "sample.max_new_tokens=4",
    "schedule.warmup=0.2",
    "eval.tasks=[]",
]


def test_demo_stage_trains_checkpoints_exports_and_summarises(tmp_path):
    lines = []
    gate = ["eval.tasks=[demo]", "eval.limit=4"]  # the sft demo's gate on 4 held-out demo tasks
    recipe = load_recipe("sft", demo=True, overrides=[*TINY, *gate])
    summary = run_stage(recipe, output_dir=str(tmp_path), echo=lines.append)

    assert summary["steps"] == 10 and summary["tokens"] == 10 * 8 * 32
    assert set(summary["tokens_per_source"]) == {"demo-tasks"}
    assert 0 < summary["tokens_per_source"]["demo-tasks"] <= summary["tokens"] + 8 * 32
    assert summary["first_loss"] > summary["last_loss"] > 0
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == list(range(1, 11))
    assert records[0]["learning_rate"] < records[1]["learning_rate"]  # warmup
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_00000004", "step_00000008", "step_00000010"]
    assert summary["checkpoint"].endswith("step_00000010")

    from smallcoder.models.causal_lm import SmallCoderCausalLM

    reloaded = SmallCoderCausalLM.from_preset(str(tmp_path / "model"))
    assert reloaded.backbone.count_params() == 598_336
    if summary["hf"]:
        assert os.path.isfile(os.path.join(summary["hf"], "config.json"))
    assert summary["sample"]["prompt"].startswith("User: ")
    # The sample is a held-out demo task, run against its tests (10 steps of a 0.6M model fail them).
    assert {k: summary["sample"][k] for k in ("task_id", "split", "passed")} == {
        "task_id": "demo/int/multiply/8/n", "split": "held_out", "passed": False}
    gate = summary["eval"]["demo"]
    assert gate["tasks"] == 4 and gate["pass@1"] == gate["passed"] / 4
    assert os.path.isfile(tmp_path / "eval" / "demo" / "demo_results.jsonl")
    text = "\n".join(lines)
    assert "starting from scratch" in text  # no demo checkpoint of the math stage here
    assert "tokens  demo-tasks" in text and "loss    first" in text
    assert f"eval    demo       pass@1 {gate['pass@1']:.3f} ({gate['passed']} of 4 tasks passed)" in text
    assert "sample  demo/int/multiply/8/n (held-out task): fails its tests (failed" in text
    if keras.config.backend() != "jax":
        assert "needs the JAX backend" in text
    if os.path.isdir(tmp_path / "tensorboard"):
        assert os.listdir(tmp_path / "tensorboard")


def test_a_remat_recipe_trains(tmp_path):
    lines = []
    # 10 steps (TINY): over 4 warm-up steps the loss need not fall (it rose on one GPU's initialisation).
    recipe = load_recipe("sft", demo=True, overrides=[*TINY, "model.remat=full", "export.hf=false",
                                                       "checkpoint.every_steps=100"])
    if keras.config.backend() == "tensorflow":
        with pytest.raises(TrainingError, match=r"--set: model\.remat: 'full' is not supported on the TensorFlow"):
            run_stage(recipe, output_dir=str(tmp_path), echo=lines.append)
        return
    summary = run_stage(recipe, output_dir=str(tmp_path), echo=lines.append)
    assert summary["steps"] == 10 and summary["first_loss"] > summary["last_loss"] > 0
    assert "model: remat full" in "\n".join(lines)
    with open(tmp_path / "model" / "config.json") as f:
        assert json.load(f)["config"]["remat"] == "full"
    # The recipe's key wins over the saved config when a later stage loads it.
    from smallcoder.models.causal_lm import SmallCoderCausalLM

    assert SmallCoderCausalLM.from_preset(str(tmp_path / "model"), remat=None).backbone.remat is None


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe = load_recipe("sft", demo=True, overrides=[
        *TINY, "optimizer.learning_rate=1.0e+30", "schedule.type=constant", "schedule.warmup=0",
        "optimizer.clipnorm=null", "checkpoint.every_steps=1", "checkpoint.keep=1"])
    with pytest.raises(TrainingError, match=r"Loss became NaN at step (\d+).*last good checkpoint is") as info:
        run_stage(recipe, output_dir=str(tmp_path), echo=lambda line: None)
    bad = int(re.search(r"NaN at step (\d+)", str(info.value)).group(1))
    assert os.listdir(tmp_path / "checkpoints") == [f"step_{bad - 1:08d}"]
    assert not (tmp_path / "model").exists()


def test_a_full_run_folder_needs_resume_or_another_output(tmp_path):
    recipe = load_recipe("sft", demo=True, overrides=TINY)
    recipe.demo = False  # the guard is for real runs; demo runs start over
    os.makedirs(tmp_path / "checkpoints" / "step_00000004")
    open(tmp_path / "checkpoints" / "step_00000004" / "state.json", "w").close()
    with pytest.raises(TrainingError, match="Pass --resume"):
        run_stage(recipe, output_dir=str(tmp_path), echo=lambda line: None)


def test_plan_of_the_303m_model():
    from smallcoder.plan import format_plan, parameter_count, plan
    from smallcoder.training.runner import backbone_config

    recipe = load_recipe("base", check_init=False)
    config = backbone_config(recipe, None)
    assert parameter_count(config) == 302_027_520  # the model card's count
    p = plan(recipe, config, (8, 1), "tpu-v4", mfu=0.4)
    m = p["memory"]
    assert m["parameters"] == pytest.approx(4 * 302_027_520 / 8)
    assert m["optimizer"] == 2 * m["parameters"] and m["activations_remat"] < m["activations"]
    assert p["fits_remat"] and not p["fits"]  # 32 sequences x 1024 per v4 chip needs remat
    assert p["remat"] is None and not p["fits_recipe"] and "set model.remat: full" in format_plan(p)
    with_remat = plan(load_recipe("base", overrides=["model.remat=full"], check_init=False), config, (8, 1),
                      "tpu-v4")
    assert with_remat["remat"] == "full" and with_remat["fits_recipe"]
    assert "model.remat       full -> the run fits" in format_plan(with_remat)
    flops = p["flops"]
    assert p["wall_s"] == pytest.approx(flops / (8 * 275e12 * 0.4))
    two_d = plan(recipe, config, (2, 4), "h100", layout="fsdp_tensor")["memory"]
    assert two_d["parameters"] == pytest.approx(m["parameters"])  # 8-way either way
    assert plan(recipe, config, (2, 4), "h100", layout="tensor")["memory"]["parameters"] == pytest.approx(
        2 * m["parameters"])  # 4-way on the model axis, replicated over data
    # A v4-32 slice: 16 chips on 4 hosts. Each host copies its 4 chips' shards when it checkpoints.
    pod = plan(recipe, config, (16, 1), "tpu-v4", hosts=4)
    state = pod["memory"]["parameters"] + pod["memory"]["optimizer"]
    assert pod["host_memory"]["checkpoint"] == pytest.approx(4 * state, rel=1e-6)
    assert pod["host_memory"]["export"] == 8 * 302_027_520
    assert "memory per host (4 host(s), 4 device(s) each)" in format_plan(pod)
    with pytest.raises(ValueError, match="do not split evenly over 3 hosts"):
        plan(recipe, config, (16, 1), "tpu-v4", hosts=3)


def test_plan_with_lora_keeps_gradients_and_optimizer_state_for_the_adapters_only():
    from smallcoder.plan import format_plan, plan
    from smallcoder.training.runner import backbone_config

    full_recipe = load_recipe("sft", check_init=False)
    recipe = load_recipe("sft", overrides=["model.lora.rank=8"], check_init=False)
    config = backbone_config(recipe)
    full, lora = plan(full_recipe, config, (8, 1), "tpu-v4"), plan(recipe, config, (8, 1), "tpu-v4")
    adapters = 2_396_160  # 24 layers x (query + value) x (a (768, 8, 8) + b (8, 96))
    assert lora["trained_parameters"] == adapters and full["trained_parameters"] == 302_027_520
    m = lora["memory"]
    assert m["parameters"] == pytest.approx(4 * (302_027_520 + adapters) / 8)
    assert m["gradients"] == pytest.approx(4 * adapters / 8) and m["optimizer"] == pytest.approx(8 * adapters / 8)
    assert m["activations"] == full["memory"]["activations"] and m["total"] < full["memory"]["total"]
    assert lora["flops"] < full["flops"]  # no weight gradients for the frozen kernels
    assert "lora              rank 8 on query, value: 2,396,160 trained parameters (0.79%)" in format_plan(lora)


def test_recipe_run_all_demo_chains_the_stages(tmp_path):
    from click.testing import CliRunner

    from smallcoder.cli import main

    sets = [*TINY, "training.tokens=512", "sample.max_new_tokens=0", "export.hf=false",
            "logging.tensorboard=false", "model.dtype=mixed_bfloat16"]
    args = ["recipe", "run", "all", "--demo", "--output", str(tmp_path)]
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for stage in ("base", "code", "math", "sft"):
        assert os.path.isfile(tmp_path / stage / "model" / "model.weights.h5"), stage
    assert "no demo checkpoint of stage" not in result.output.split("=== stage code")[1]
    for previous, stage in (("base", "code"), ("code", "math"), ("math", "sft")):
        section = result.output.split(f"=== stage {stage}")[1]
        assert f"model: initialised from {tmp_path / previous / 'model'}" in section
    with open(tmp_path / "sft" / "model" / "config.json") as f:
        assert json.load(f)["config"]["dtype"]["config"]["name"] == "mixed_bfloat16"


@pytest.mark.slow
def test_eval_gate_stores_scores_and_reports_a_gate_that_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLCODER_MBPP_DATA", str(tmp_path / "missing-mbpp.jsonl"))
    lines = []
    recipe = load_recipe("sft", demo=True, overrides=[*TINY, "eval.tasks=[humaneval, mbpp]", "eval.limit=1"])
    summary = run_stage(recipe, output_dir=str(tmp_path / "run"), echo=lines.append)

    humaneval = summary["eval"]["humaneval"]
    assert "error" not in humaneval and 0.0 <= humaneval["pass@1"] <= 1.0
    assert os.path.isdir(tmp_path / "run" / "eval" / "humaneval")
    assert "missing-mbpp.jsonl" in summary["eval"]["mbpp"]["error"]
    assert any("eval: mbpp could not run" in line for line in lines)
    assert os.path.isdir(tmp_path / "run" / "model")  # the stage's weights were kept
