"""`smallcoder data inspect` through click's CliRunner, offline."""

import json
import os

import pytest
from click.testing import CliRunner

from smallcoder.cli import main

SFT_RECIPE = """
training: {sequence_length: 1024}
demo: {training: {sequence_length: 256}}
data:
  format: chat
  overlong: truncate
  sources:
    - {name: code-instruct, weight: 1.0, type: hf, path: nvidia/OpenCodeInstruct, prompt: input, response: output}
  demo:
    - {name: stdlib-sft, weight: 1.0, type: demo, path: sft}
"""


@pytest.fixture
def recipes_dir(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "sft.yaml").write_text(SFT_RECIPE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_inspect_sft_demo(recipes_dir, demo_tokenizer):
    result = CliRunner().invoke(main, ["data", "inspect", "sft", "--demo", "--batches", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("── batch") == 4  # 2 batches x 2 rows
    assert "⟦doc 1⟧«User: " in result.output and "\nAssistant:»" in result.output
    assert "<|endoftext|>" in result.output and '"batches": 2' in result.output


def test_inspect_json(recipes_dir, demo_tokenizer):
    result = CliRunner().invoke(main, ["data", "inspect", "sft", "--demo", "--json", "--batches", "2",
                                       "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    order, *lines = [json.loads(line) for line in result.output.splitlines()]
    assert order["order"]["sources"]["stdlib-sft"]["first_documents"]
    assert [b["batch"] for b in lines] == [0, 1]
    for b in lines:
        for key in ("token_ids", "segment_ids", "targets", "loss_mask"):
            assert len(b[key]) == 3 and all(len(row) == 256 for row in b[key])
        # The loss never covers a prompt: every trained row has untrained tokens before it.
        for ids, mask in zip(b["targets"], b["loss_mask"]):
            assert sum(mask) > 0 and mask[0] == 0
            assert all(t == demo_tokenizer.eos_token_id for t, m in zip(ids, mask) if m and t == 0)


def test_inspect_without_network_names_dataset(recipes_dir):
    from smallcoder.tokenizer import train_tokenizer

    train_tokenizer(["hello world"] * 3, 300).save(str(recipes_dir / "tok"))
    result = CliRunner().invoke(main, ["data", "inspect", "sft", "--tokenizer", str(recipes_dir / "tok")],
                                env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code != 0
    assert "nvidia/OpenCodeInstruct" in result.output and "--demo" in result.output


def test_unknown_recipe(recipes_dir):
    result = CliRunner().invoke(main, ["data", "inspect", "nope", "--demo"])
    assert result.exit_code != 0 and "No recipe 'nope' (looked in recipes, " in result.output


REPO_RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")


@pytest.mark.skipif(not os.path.isfile(os.path.join(REPO_RECIPES, "sft.yaml")),
                    reason="the repository recipes are not there yet")
@pytest.mark.parametrize("name", ["sft", "base"])
def test_inspect_repository_recipe_demo(name, monkeypatch, demo_tokenizer):
    monkeypatch.setenv("SMALLCODER_RECIPES", REPO_RECIPES)
    result = CliRunner().invoke(main, ["data", "inspect", name, "--demo", "--json"])
    assert result.exit_code == 0, result.output
    order, batch = map(json.loads, result.output.splitlines())
    assert order["order"]["streams"] == 8  # the demo's micro-batch of 8 (sft: 16): auto gives 8 streams
    assert len(batch["token_ids"][0]) == (128 if name == "sft" else 256)  # the recipe's demo sequence length


def test_bench_data_runs(demo_tokenizer):
    result = CliRunner().invoke(main, ["bench", "data", "--megabytes", "0.05", "--repeats", "1", "--json",
                                       "--sequence-length", "64"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["text_tokens"] > 0 and figures["ratio"] > 0 and figures["cpu_ratio"] > 0
