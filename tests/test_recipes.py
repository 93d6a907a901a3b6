"""Recipes: the model card's budgets and derived steps; bad recipes fail early, naming file and key."""

import os
import shutil

import pytest
from click.testing import CliRunner

from smallcoder.cli import main
from smallcoder.recipes import RecipeError, load_recipe, parse_tokens, recipes_dir

CARD = {"base": ("6.3B", 24032), "code": ("7.5B", 28610), "math": ("10.0B", 38146), "sft": ("6.0B", 22888)}


@pytest.mark.parametrize("stage", list(CARD))
def test_recipe_show_prints_the_model_card_budget_and_derived_steps(stage):
    result = CliRunner().invoke(main, ["recipe", "show", stage])
    assert result.exit_code == 0, result.output
    budget, steps = CARD[stage]
    assert f"tokens:            {budget} " in result.output
    assert f"steps:             {steps:,} = tokens // tokens per step" in result.output
    recipe = load_recipe(stage, check_init=False)
    assert recipe.steps == steps == parse_tokens(budget) // (256 * 1024)
    assert recipe["training.sequence_length"] == 1024
    assert f"warmup steps:      {recipe.warmup_steps:,}" in result.output


def test_stages_chain_and_share_defaults():
    chain = [load_recipe(s, check_init=False)["init_from"] for s in CARD]
    assert chain == [None, "base", "code", "math"]
    code = load_recipe("code", check_init=False)
    assert code.init_from_dir() == os.path.join("runs", "base", "model")
    assert code.decay_steps == round(0.2 * code.steps)  # wsd
    demo = load_recipe("code", demo=True)
    assert demo.init_from_dir() == os.path.join("runs", "demo", "base", "model")
    assert demo["model.preset"] == "smallcoder_demo" and demo["data.demo"][0]["path"] == "code"


def test_set_overrides_are_parsed_and_reported():
    recipe = load_recipe("sft", demo=True, overrides=["training.tokens=1M", "optimizer.clipnorm=null"])
    assert recipe.tokens == 1_000_000 and recipe["optimizer.clipnorm"] is None
    assert recipe.where("training.tokens") == "--set"
    with pytest.raises(RecipeError, match=r"--set: training\.tokenz: unknown key"):
        load_recipe("sft", overrides=["training.tokenz=1M"], check_init=False)
    with pytest.raises(RecipeError, match=r"--set: optimizer\.beta_1: must be a number"):
        load_recipe("sft", overrides=["optimizer.beta_1=high"], check_init=False)


@pytest.fixture
def recipe_dir(tmp_path):
    shutil.copy(os.path.join(recipes_dir(), "_defaults.yaml"), tmp_path / "_defaults.yaml")

    def write(text):
        path = tmp_path / "stage.yaml"
        path.write_text("extends: _defaults\n" + text)
        return str(path)

    return write


GOOD_DATA = """
training: {tokens: 1M}
data:
  format: text
  sources:
    - {name: a, weight: 0.5, type: jsonl, path: a.jsonl}
    - {name: b, weight: 0.5, type: jsonl, path: b.jsonl}
"""


def test_a_good_custom_recipe_loads(recipe_dir):
    recipe = load_recipe(recipe_dir(GOOD_DATA))
    assert recipe.steps == 1_000_000 // (256 * 1024)


@pytest.mark.parametrize("text,key,message", [
    (GOOD_DATA + "optimizer: {learning_rat: 1.0e-3}\n", "optimizer.learning_rat", "unknown key"),
    (GOOD_DATA + "training2: 3\n", "training2", "unknown key"),
    (GOOD_DATA + "optimizer: {beta_2: fast}\n", "optimizer.beta_2", "must be a number"),
    (GOOD_DATA + "checkpoint: {every_steps: 1.5}\n", "checkpoint.every_steps", "must be an integer"),
    (GOOD_DATA + "schedule: {type: linear}\n", "schedule.type", "must be one of"),
    (GOOD_DATA + "model: {remat: partial}\n", "model.remat", "must be one of null, none, full; got 'partial'"),
    (GOOD_DATA + "model: {remat: true}\n", "model.remat", "must be one of null, none, full; got True"),
    (GOOD_DATA + "distribution: {layout: fsdp, mesh: 2by4}\n", "distribution.mesh", "DATAxMODEL"),
    (GOOD_DATA.replace("weight: 0.5, type: jsonl, path: b", "weight: 0.4, type: jsonl, path: b"),
     r"data.sources\[1\].weight", "sum to 0.9"),
    (GOOD_DATA.replace("1M", "lots"), "training.tokens", "token count"),
    (GOOD_DATA.replace("{tokens: 1M}", "{tokens: 1M, global_batch: 10, gradient_accumulation_steps: 3}"),
     "training.gradient_accumulation_steps", "must divide global_batch"),
])
def test_bad_recipes_name_the_file_and_key(recipe_dir, text, key, message):
    path = recipe_dir(text)
    with pytest.raises(RecipeError if "data" not in key else ValueError, match=message) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: ")
    assert f": {key.replace(chr(92), '')}: " in str(info.value).replace("\\", "")


@pytest.mark.parametrize("value,remat", [("null", None), ("none", None), ("full", "full")])
def test_model_remat_is_a_recipe_key(recipe_dir, value, remat):
    assert load_recipe("base", check_init=False).remat is None  # the default
    recipe = load_recipe(recipe_dir(GOOD_DATA + f"model: {{remat: {value}}}\n"))
    assert recipe.remat == remat
    assert load_recipe("base", overrides=[f"model.remat={value}"], check_init=False).remat == remat


def test_a_key_given_twice_is_an_error(recipe_dir):
    with pytest.raises(RecipeError, match="'training' appears twice"):
        load_recipe(recipe_dir(GOOD_DATA + "training: {global_batch: 8}\n"))


def test_an_error_in_the_defaults_names_the_defaults_file(recipe_dir, tmp_path):
    with open(tmp_path / "_defaults.yaml", "a") as f:
        f.write("\nlogging2: {}\n")
    with pytest.raises(RecipeError, match=r"_defaults\.yaml: logging2: unknown key"):
        load_recipe(recipe_dir(GOOD_DATA))


def test_missing_init_from_checkpoint_is_an_error_before_anything_starts(recipe_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = recipe_dir(GOOD_DATA + "init_from: base\n")
    with pytest.raises(RecipeError, match=r"stage\.yaml: init_from: no checkpoint at 'runs/base/model'.*"
                                          r"smallcoder recipe run base"):
        load_recipe(path)
    # --demo: not an error, the runner starts from scratch and says so.
    assert load_recipe(path, demo=True, overrides=["data.demo=[{name: d, weight: 1.0, type: demo, path: prose}]"])
    result = CliRunner().invoke(main, ["recipe", "run", path])
    assert result.exit_code != 0 and "init_from: no checkpoint" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_copied_stage_file_extends_the_package_defaults(tmp_path):
    shutil.copy(os.path.join(recipes_dir(), "sft.yaml"), tmp_path / "my_sft.yaml")  # no _defaults.yaml beside it
    copied = load_recipe(str(tmp_path / "my_sft.yaml"), check_init=False)
    packaged = load_recipe("sft", check_init=False)
    assert copied.config == packaged.config and copied.steps == 22_888
    assert copied.where("model.preset") == os.path.join(recipes_dir(), "_defaults.yaml")
    assert copied.name == "my_sft" and copied.output_dir == os.path.join("runs", "my_sft")


def test_recipe_names_resolve_in_order_env_cwd_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMALLCODER_RECIPES", raising=False)
    assert load_recipe("sft", check_init=False).path == os.path.join(recipes_dir(), "sft.yaml")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "sft.yaml").write_text("extends: _defaults\ntraining: {tokens: 1B}\n"
                                                   "data: {sources: [{name: a, weight: 1.0, type: jsonl, path: a}]}\n")
    assert load_recipe("sft", check_init=False).tokens == 10**9  # ./recipes first; its _defaults from the package
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "sft.yaml").write_text((tmp_path / "recipes" / "sft.yaml").read_text().replace("1B", "2B"))
    monkeypatch.setenv("SMALLCODER_RECIPES", str(tmp_path / "env"))
    assert load_recipe("sft", check_init=False).tokens == 2 * 10**9
    assert load_recipe("code", check_init=False).path == os.path.join(recipes_dir(), "code.yaml")
    with pytest.raises(FileNotFoundError, match=r"No recipe 'cod' \(looked in .*env, recipes, .*\); known recipes: "
                                                r"base, code, math, sft"):
        load_recipe("cod")


def test_the_run_header_names_the_output_folder_of_this_run():
    recipe = load_recipe("sft", demo=True)
    assert recipe.describe().endswith(f"output:            {os.path.join('runs', 'demo', 'sft')}")
    assert recipe.describe("elsewhere/sft").endswith("output:            elsewhere/sft")


@pytest.mark.parametrize("text,key,message", [
    ("model: {lora: {rank: 0}}\n", "model.lora.rank", "must be a positive integer"),
    ("model: {lora: {rank: 4, targets: [query, attention]}}\n", "model.lora.targets", "must be a non-empty list"),
    ("model: {lora: {rank: 4, alpha: -1}}\n", "model.lora.alpha", "must be positive"),
    ("model: {lora: {rank: 4, dropout: 0.1}}\n", "model.lora.dropout", "unknown key"),
    ("eval: {every_steps: 0}\n", "eval.every_steps", "must be at least 1 or null"),
    ("eval: {validation_batches: -1}\n", "eval.validation_batches", "must be 0 \\(no validation\\)"),
])
def test_lora_and_validation_keys_are_checked(recipe_dir, text, key, message):
    with pytest.raises(RecipeError, match=f": {key}: {message}"):
        load_recipe(recipe_dir(GOOD_DATA + text))


def _hf_folder(folder, model_type="llama"):
    import json

    os.makedirs(folder)
    config = {"model_type": model_type, "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 128}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return str(folder)


def test_init_from_and_model_preset_take_every_model_source(recipe_dir, tmp_path, monkeypatch):
    from smallcoder.training.runner import backbone_config

    hf = _hf_folder(tmp_path / "hf")
    for key in ("init_from", "model.preset"):
        recipe = load_recipe(recipe_dir(GOOD_DATA), overrides=[f"{key}={hf}"])  # checked: a Hugging Face folder
        assert recipe.model_source() == hf
        assert backbone_config(recipe, hf)["hidden_dim"] == 16  # read from config.json, nothing built
    with pytest.raises(RecipeError, match=r"--set: init_from: .*model_type is 'gpt2'"):
        load_recipe(recipe_dir(GOOD_DATA), overrides=[f"init_from={_hf_folder(tmp_path / 'gpt2', 'gpt2')}"])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(RecipeError, match=r"--set: init_from: .*is not a Keras preset folder .* nor a Hugging Face"):
        load_recipe(recipe_dir(GOOD_DATA), overrides=[f"init_from={tmp_path / 'empty'}"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RecipeError, match=r"--set: model.preset: 'someone/model' is not a local folder, and as a "
                                          r"Hugging Face Hub id: cannot download 'someone/model' from the Hugging Face "
                                          r"Hub \(HF_HUB_OFFLINE is set, and it is not in the local Hub cache\)\. "
                                          r"Pass a local folder"):
        load_recipe(recipe_dir(GOOD_DATA), overrides=["model.preset=someone/model"])


def test_the_recipe_can_set_the_eos_token(recipe_dir, demo_tokenizer):
    from smallcoder.training import TrainingError
    from smallcoder.training.runner import run_tokenizer

    recipe = load_recipe(recipe_dir(GOOD_DATA), overrides=["model.eos_token=<fim_pad>"])
    tokenizer = run_tokenizer(recipe, demo_tokenizer, 4096)
    assert tokenizer.eos_token == "<fim_pad>" and tokenizer.eos_token_id == demo_tokenizer.token_to_id("<fim_pad>")
    assert run_tokenizer(load_recipe(recipe_dir(GOOD_DATA)), demo_tokenizer, 4096) is demo_tokenizer
    with pytest.raises(TrainingError, match=r"--set: model.eos_token: The tokenizer has no '<eot>' token"):
        run_tokenizer(load_recipe(recipe_dir(GOOD_DATA), overrides=["model.eos_token=<eot>"]), demo_tokenizer, 4096)
    with pytest.raises(TrainingError, match=r"the tokenizer has 4,096 tokens but the model only 100 embeddings"):
        run_tokenizer(recipe, demo_tokenizer, 100)
