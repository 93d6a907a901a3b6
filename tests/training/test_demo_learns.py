"""The quickstart's demo learns: `recipe run sft --demo`, as shipped, scores above zero on
held-out demo tasks (untrained weights score 0), so the demo cannot silently stop learning."""

import pytest

from smallcoder.recipes import load_recipe
from smallcoder.training import run_stage


@pytest.mark.slow
def test_the_sft_demo_learns_the_held_out_tasks(tmp_path):
    lines = []
    recipe = load_recipe("sft", demo=True, overrides=["export.hf=false", "logging.tensorboard=false"])
    summary = run_stage(recipe, output_dir=str(tmp_path), echo=lines.append)

    assert summary["steps"] == 120  # the demo's own budget
    gate = summary["eval"]["demo"]
    assert gate["tasks"] == 176 and gate["pass@1"] > 0, "\n".join(lines)
    validation = summary["validation"]  # the loss on the held-out tasks' reference answers
    assert validation["loss"] < summary["first_loss"] / 4
    assert summary["sample"]["split"] == "held_out"
