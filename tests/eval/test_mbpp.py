import gzip
import hashlib

import pytest

from smallcoder.eval import mbpp
from smallcoder.eval.runner import run_eval
from smallcoder.tokenizer import chat_prompt

HEADER = "You are an expert Python programmer, and here is your task: "
UPSTREAM_SHA256 = "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f"


@pytest.fixture(autouse=True)
def _packaged_data(monkeypatch):
    monkeypatch.delenv("SMALLCODER_MBPP_DATA", raising=False)


def test_test_split_and_three_shot_prompt():
    tasks = mbpp.load_tasks()
    assert [t["task_id"] for t in tasks] == list(range(11, 511))
    task = tasks[0]
    assert [s["task_id"] for s in task["shots"]] == [2, 3, 4]
    raw = mbpp.build_prompt(task, chat=False)
    assert raw.startswith(HEADER + "Write a function to find the similar elements")
    assert raw.count(HEADER) == 4 and raw.count("[DONE]") == 3
    assert raw.endswith('assert remove_Occ("PHP","P") == "H"\n[BEGIN]\n')
    assert "\r" not in raw
    assert (
        "Your code should pass these tests:\n\nassert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
        in raw
    )
    chat = mbpp.build_prompt(task)
    assert chat == chat_prompt(raw[: -len("\n[BEGIN]\n")])


@pytest.mark.parametrize(
    "answer",
    [
        " [BEGIN]\ndef f(x):\n    return x\n[DONE]\nYou are an expert Python programmer",
        "```python\ndef f(x):\n    return x\n```\nThis returns x.",
        "def f(x):\n    return x\n[DONE]",
        "Here it is:\ndef f(x):\n    return x\n",
    ],
)
def test_postprocess(answer):
    assert mbpp.postprocess(answer) == "def f(x):\n    return x\n"


def test_postprocess_keeps_globals_before_functions():
    code = "MAX = 3\r\ndef f():\r\n\treturn MAX"
    assert mbpp.postprocess(code) == code + "\n"


def test_reference_code_passes(tmp_path, write_samples):
    tasks = mbpp.load_tasks(limit=30)
    samples = write_samples(
        tmp_path / "ref.jsonl", [(t["task_id"], t["code"]) for t in tasks]
    )
    summary = run_eval(
        name="mbpp",
        samples=samples,
        limit=30,
        output_dir=tmp_path,
        progress=False,
    )
    assert summary["scores"] == {"pass@1": 1.0} and summary["num_tasks"] == 30


@pytest.mark.slow
def test_reference_code_passes_on_the_whole_test_split(
    tmp_path, write_samples
):
    tasks = mbpp.load_tasks()
    samples = write_samples(
        tmp_path / "ref.jsonl", [(t["task_id"], t["code"]) for t in tasks]
    )
    summary = run_eval(
        name="mbpp",
        samples=samples,
        output_dir=tmp_path,
        progress=False,
    )
    assert summary["num_tasks"] == 500 and summary["scores"] == {"pass@1": 1.0}


def test_empty_completions_score_zero(tmp_path, write_samples):
    tasks = mbpp.load_tasks(limit=10)
    samples = write_samples(
        tmp_path / "empty.jsonl", [(t["task_id"], "") for t in tasks]
    )
    summary = run_eval(
        name="mbpp",
        samples=samples,
        limit=10,
        output_dir=tmp_path,
        progress=False,
    )
    assert summary["scores"] == {"pass@1": 0.0}


def test_the_packaged_copy_is_the_upstream_release():
    with gzip.open(mbpp.PACKAGED, "rb") as f:
        content = f.read()
    assert hashlib.sha256(content).hexdigest() == UPSTREAM_SHA256  # smallcoder/eval/data/README.md
    assert len(content.splitlines()) == 974


def test_eval_mbpp_runs_offline_with_no_data_flag(tmp_path, write_samples, monkeypatch):
    """`smallcoder eval mbpp` needs neither the Hub nor --data: the package ships MBPP."""
    from click.testing import CliRunner

    from smallcoder.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens there
    tasks = mbpp.load_tasks(limit=3)
    samples = write_samples(tmp_path / "ref.jsonl", [(t["task_id"], t["code"]) for t in tasks])
    result = CliRunner().invoke(main, ["eval", "mbpp", "--samples", samples, "--limit", "3",
                                       "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "passed 3, failed 0" in result.output


def test_data_path_from_the_environment(monkeypatch, tmp_path):
    plain = tmp_path / "mbpp.jsonl"
    with gzip.open(mbpp.PACKAGED, "rb") as f:
        plain.write_bytes(f.read())
    monkeypatch.setenv("SMALLCODER_MBPP_DATA", str(plain))
    assert len(mbpp.load_tasks(limit=3)) == 3
    monkeypatch.setenv("SMALLCODER_MBPP_DATA", str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        mbpp.load_tasks()


def test_bad_local_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="mbpp.jsonl"):
        mbpp.load_tasks(str(tmp_path / "missing.jsonl"))
    partial = tmp_path / "partial.jsonl"
    partial.write_text('{"task_id": 2, "text": "t", "code": "", "test_list": []}\n')
    with pytest.raises(ValueError, match="lacks task_ids"):
        mbpp.load_tasks(str(partial))
    partial.write_text('{"task_id": 2}\nnot json\n')
    with pytest.raises(ValueError, match="partial.jsonl: line 2: not a JSON object"):
        mbpp.load_tasks(str(partial))
