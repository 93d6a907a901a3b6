import time

import pytest

from smallcoder.eval import humaneval
from smallcoder.eval.runner import run_eval
from smallcoder.tokenizer import chat_prompt

TASK = {
    "task_id": "demo/0",
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
}


def program_passes(completion):
    from smallcoder.eval.sandbox import SandboxLimits, run_program

    program = humaneval.build_program(TASK, humaneval.postprocess(completion, TASK))
    return run_program(program, SandboxLimits(timeout_s=5)).passed


def test_loads_164_problems_and_prompts_in_chat_format():
    tasks = humaneval.load_tasks()
    assert len(tasks) == 164 and tasks[0]["task_id"] == "HumanEval/0"
    assert humaneval.build_prompt(tasks[0]) == chat_prompt(tasks[0]["prompt"])
    assert humaneval.build_prompt(tasks[0], chat=False) == tasks[0]["prompt"]
    assert len(humaneval.load_tasks(limit=5)) == 5


@pytest.mark.parametrize(
    "answer,expected",
    [
        # A function body is cut at the Codex stop sequences.
        ("    return a + b\n\ndef other():\n    pass\n", "    return a + b\n"),
        ("    return a + b\nprint(add(1, 2))", "    return a + b"),
        ("    return a + b\n# tests\nassert False", "    return a + b"),
        # A body indented less than 4 spaces (the chat answer's leading space).
        (" return a + b", "    return a + b"),
        # A full function in a fence, after prose; helpers kept, demo code cut.
        (
            " Here you go:\n```python\ndef helper(x):\n    return x\n\ndef add(a, b):\n"
            "    return helper(a) + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n```\nDone.",
            "\ndef helper(x):\n    return x\n\ndef add(a, b):\n    return helper(a) + b\n",
        ),
        # Prose before an unfenced full function is dropped.
        (
            "Sure.\ndef add(a, b):\n    return a + b\n",
            "\ndef add(a, b):\n    return a + b\n",
        ),
        # An unclosed fence runs to the end.
        (
            "```py\ndef add(a, b):\n    return a + b",
            "\ndef add(a, b):\n    return a + b\n",
        ),
    ],
)
def test_postprocess(answer, expected):
    completion = humaneval.postprocess(answer, TASK)
    assert completion == expected
    assert humaneval.postprocess(completion, TASK) == completion  # idempotent
    assert program_passes(answer)


def test_wrong_or_empty_answers_fail():
    assert not program_passes("")
    assert not program_passes("    return a - b")


def test_canonical_solutions_score_one(tmp_path, write_samples):
    tasks = humaneval.load_tasks()
    samples = write_samples(
        tmp_path / "canonical.jsonl",
        [(t["task_id"], t["canonical_solution"]) for t in tasks],
    )
    start = time.monotonic()
    summary = run_eval(
        name="humaneval", samples=samples, output_dir=tmp_path / "out", progress=False
    )
    assert summary["scores"] == {"pass@1": 1.0}
    assert summary["num_tasks"] == summary["passed"] == 164
    assert summary["reference"]["pass@1"] == 0.274
    assert time.monotonic() - start < 60


def test_empty_completions_score_zero(tmp_path, write_samples):
    tasks = humaneval.load_tasks(limit=20)
    samples = write_samples(
        tmp_path / "empty.jsonl", [(t["task_id"], "") for t in tasks]
    )
    summary = run_eval(
        name="humaneval", samples=samples, limit=20, output_dir=tmp_path, progress=False
    )
    assert summary["scores"] == {"pass@1": 0.0}
    assert summary["failed"] == 20
