"""Bad input on the command line: one line naming file / key / flag and what to do, no traceback,
nothing left behind."""

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from smallcoder.cli import main
from smallcoder.recipes import recipes_dir


def one_line_error(result):
    """The error line of a failed command, after checking that it is the only thing said about it."""
    # An uncaught exception also exits with 1 under CliRunner, but leaves it in `exception`.
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exc_info)
    assert "Traceback" not in result.output
    lines = result.output.rstrip("\n").splitlines()
    assert lines[-1].startswith("Error: "), result.output
    return lines[-1]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder outside the repository (so `runs/` would appear here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMALLCODER_RECIPES", raising=False)
    return tmp_path


def copied_sft(folder, replace=()):
    """recipes/sft.yaml copied into `folder` alone (no _defaults.yaml beside it), edited."""
    text = open(os.path.join(recipes_dir(), "sft.yaml")).read()
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    (folder / "my_sft.yaml").write_text(text)
    return "my_sft.yaml"


@pytest.mark.parametrize("args", [["recipe", "show"], ["recipe", "run"], ["data", "inspect"]])
def test_mixture_weights_that_do_not_sum_to_one(elsewhere, args):
    path = copied_sft(elsewhere, [("weight: 0.4", "weight: 0.5")])
    line = one_line_error(CliRunner().invoke(main, [*args, path]))
    assert line == (f"Error: {path}: data.sources[2].weight: source weights sum to 1.1; they are token "
                    "shares and must sum to 1.")
    assert os.listdir(elsewhere) == [path]


@pytest.mark.parametrize("args", [["recipe", "show"], ["data", "inspect"]])
def test_a_corrupt_yaml_file(elsewhere, args):
    (elsewhere / "bad.yaml").write_text("data: [1, 2\n  foo: }\n")
    line = one_line_error(CliRunner().invoke(main, [*args, "bad.yaml"]))
    assert line.startswith("Error: bad.yaml: line 2, column 6: not valid YAML: ")


def test_an_unknown_set_key_blames_set(elsewhere):
    line = one_line_error(CliRunner().invoke(main, ["recipe", "show", "sft", "--set", "nonexistent.key=1"]))
    assert line.startswith("Error: --set: nonexistent: unknown key; expected one of ")


def test_run_base_without_a_tokenizer_says_demo_runs_offline(elsewhere):
    line = one_line_error(CliRunner().invoke(main, ["recipe", "run", "base"]))
    assert "_defaults.yaml: model.tokenizer: not set" in line and "run with --demo" in line
    line = one_line_error(CliRunner().invoke(main, ["recipe", "run", "base", "--set", "model.tokenizer=nope.json"]))
    assert line == ("Error: --set: model.tokenizer: no tokenizer file at 'nope.json'; point it at a "
                    "tokenizer.json or a folder holding one.")
    assert os.listdir(elsewhere) == []


def test_run_with_an_unreachable_dataset(elsewhere, demo_tokenizer, monkeypatch):
    from smallcoder import hub_access

    monkeypatch.setattr(hub_access, "reachable", lambda timeout=3.0: False)
    demo_tokenizer.save(str(elsewhere / "tok"))
    result = CliRunner().invoke(main, ["recipe", "run", "base", "--output", "other/base",
                                       "--set", "model.preset=smallcoder_test", "--set", "model.tokenizer=tok"])
    line = one_line_error(result)
    assert line.startswith("Error: Source 'fineweb-edu': cannot reach the Hugging Face hub") and "--demo" in line
    assert "output:            other/base\n" in result.output  # the folder this run writes, not runs/base
    assert not (elsewhere / "other").exists()  # checked before the run folder is made


@pytest.mark.parametrize("data", ["missing.jsonl", "data/missing.jsonl"])
def test_perplexity_of_a_missing_file(elsewhere, data):
    line = one_line_error(CliRunner().invoke(main, ["eval", "perplexity", "--model", "smallcoder_test",
                                                    "--data", data]))
    assert line.startswith(f"Error: No file '{data}' (--data)")


def test_generate_beyond_the_context_names_the_cli_flags():
    prompt = "x " * 100
    line = one_line_error(CliRunner().invoke(main, ["generate", "--model", "smallcoder_test", "--raw",
                                                    "--max-new-tokens", "1000", prompt]))
    assert "--max-new-tokens 1000 exceeds the 1024-token context" in line and "--truncate-prompt" in line
    result = CliRunner().invoke(main, ["generate", "--model", "smallcoder_test", "--raw", "--max-new-tokens",
                                       "1000", "--truncate-prompt", prompt])
    assert result.exit_code == 0, result.output


def test_a_missing_model_folder_is_reported_before_keras_is_imported():
    code = ("import sys\nfrom smallcoder.cli import main\n"
            "try:\n    main(['generate', '--model', '/does/not/exist', 'hi'], standalone_mode=False)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n"
            "print('keras imported:', 'keras' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == [
        "ClickException '/does/not/exist' is neither a built-in preset (smallcoder_303m, smallcoder_demo, "
        "smallcoder_tiny, smallcoder_test) nor a folder.",
        "keras imported: False",
    ], result.stdout + result.stderr


def test_the_command_prints_nothing_but_the_error_on_stderr(tmp_path):
    """TensorFlow's native start-up lines (absl, CUDA drivers, CPU features) are silenced by the CLI."""
    script = shutil.which("smallcoder", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the smallcoder console script is not installed beside this interpreter")
    result = subprocess.run([script, "generate", "--model", "smallcoder_test", "--max-new-tokens", "2000", "hi"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("Error: --max-new-tokens 2000 leaves no room for a prompt in the 1024-token "
                             "context; lower it.\n")
