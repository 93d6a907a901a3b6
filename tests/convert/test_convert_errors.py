"""Bad checkpoints and unsupported configs: clear errors, nothing written."""

import json
import os
import shutil
import time

import pytest


@pytest.fixture(scope="module")
def single(make_hf_checkpoint):
    return make_hf_checkpoint(kv_heads=2, tied=False, sharded=False)


@pytest.fixture(scope="module")
def sharded(make_hf_checkpoint):
    return make_hf_checkpoint(kv_heads=2, tied=False, sharded=True)


def _copy(src, tmp_path, edit_config=None):
    folder = str(tmp_path / "src")
    shutil.copytree(src, folder)
    if edit_config:
        path = os.path.join(folder, "config.json")
        with open(path) as f:
            config = json.load(f)
        edit_config(config)
        with open(path, "w") as f:
            json.dump(config, f)
    return folder


def _assert_cli_fails_cleanly(src, tmp_path, match):
    """`convert hf-to-keras` exits with an error matching `match`; no folder appears."""
    from click.testing import CliRunner

    from smallcoder.cli import main

    out_parent = tmp_path / "out"
    out_parent.mkdir()
    result = CliRunner().invoke(main, ["convert", "hf-to-keras", src, str(out_parent / "keras")])
    assert result.exit_code != 0
    assert match in result.output, result.output
    assert os.listdir(out_parent) == []


def _set(key, value):
    return lambda config: config.__setitem__(key, value)


def _v4_rope_scaling(config):
    # transformers 4 layout: rope_theta and rope_scaling at the top level.
    config.pop("rope_parameters", None)
    config["rope_theta"] = 10000.0
    config["rope_scaling"] = {"type": "linear", "factor": 2.0}


UNSUPPORTED = {
    "attention_bias": (_set("attention_bias", True), "attention_bias"),
    "mlp_bias": (_set("mlp_bias", True), "mlp_bias"),
    "hidden_act": (_set("hidden_act", "gelu"), "hidden_act"),
    "head_dim": (_set("head_dim", 32), "head_dim"),
    "rope_parameters": (
        _set("rope_parameters", {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}),
        "rope_parameters.rope_type",
    ),
    "rope_scaling": (_v4_rope_scaling, "rope_scaling.rope_type"),
    "model_type": (_set("model_type", "mistral"), "model_type"),
}


@pytest.mark.parametrize("field", list(UNSUPPORTED))
def test_unsupported_config_is_refused(field, single, tmp_path):
    from smallcoder.convert import load_hf

    edit, match = UNSUPPORTED[field]
    src = _copy(single, tmp_path, edit)
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        load_hf(src)
    _assert_cli_fails_cleanly(src, tmp_path, match)


def test_transformers_4_rope_theta_is_read(single, tmp_path):
    from smallcoder.convert.hf_config import backbone_kwargs_from_hf

    with open(os.path.join(single, "config.json")) as f:
        config = json.load(f)
    config.pop("rope_parameters")
    config.update(rope_theta=123456.0, rope_scaling=None)
    assert backbone_kwargs_from_hf(config)["rope_max_wavelength"] == 123456.0


@pytest.mark.parametrize("which", ["single", "sharded"])
def test_truncated_safetensors_is_refused(which, single, sharded, tmp_path):
    from smallcoder.convert import load_hf

    src = _copy(single if which == "single" else sharded, tmp_path)
    files = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    path = os.path.join(src, files[-1])
    os.truncate(path, os.path.getsize(path) - 100)
    with pytest.raises(ValueError, match=f"{files[-1]} is truncated"):
        load_hf(src)
    _assert_cli_fails_cleanly(src, tmp_path, "truncated")


def test_weights_not_matching_config_are_refused(single, tmp_path):
    from smallcoder.convert import load_hf

    src = _copy(single, tmp_path, _set("intermediate_size", 96))
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(128, 64\)"):
        load_hf(src)
    _assert_cli_fails_cleanly(src, tmp_path, "gate_proj")


def test_missing_layer_is_refused(single, tmp_path):
    from smallcoder.convert import load_hf

    src = _copy(single, tmp_path, _set("num_hidden_layers", 3))
    with pytest.raises(ValueError, match=r"model\.layers\.2\."):
        load_hf(src)


def test_unexpected_bias_tensors_are_refused(make_hf_checkpoint, tmp_path):
    from smallcoder.convert import load_hf

    with_bias = make_hf_checkpoint(attention_bias=True)
    src = _copy(with_bias, tmp_path, _set("attention_bias", False))
    with pytest.raises(ValueError, match=r"self_attn\.\w_proj\.bias"):
        load_hf(src)


def test_no_safetensors_is_refused(single, tmp_path):
    from smallcoder.convert import load_hf

    src = _copy(single, tmp_path)
    os.remove(os.path.join(src, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="No model.safetensors"):
        load_hf(src)


def test_save_hf_refusals_leave_nothing(single, tmp_path):
    from smallcoder.convert import load_hf, save_hf

    causal_lm = load_hf(single)
    with pytest.raises(ValueError, match="int8"):
        save_hf(causal_lm, str(tmp_path / "new" / "hf"), dtype="int8")
    assert os.listdir(tmp_path) == []

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_hf(causal_lm, str(existing))
    assert os.listdir(existing) == ["keep.txt"]


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_repo_id_offline_fails_fast(how, monkeypatch):
    from smallcoder.convert import load_hf

    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    start = time.monotonic()
    with pytest.raises(OSError, match="Pass a local folder"):
        load_hf("smallcoder-tests/no-such-model")
    assert time.monotonic() - start < 15


def test_missing_local_path_is_refused():
    from smallcoder.convert import load_hf

    with pytest.raises(FileNotFoundError, match="No folder"):
        load_hf("./no/such/folder")
