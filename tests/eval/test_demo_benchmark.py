"""The demo benchmark: held-out demo tasks scored in the sandbox."""

import pytest

from smallcoder.eval import demo
from smallcoder.eval.runner import run_eval


def test_references_score_one_and_other_constants_score_zero(tmp_path, write_samples):
    tasks = demo.load_tasks(limit=6)
    right = write_samples(tmp_path / "right.jsonl", [(t["task_id"], " " + t["response"] + "\n\nUser: more")
                                                     for t in tasks])
    summary = run_eval(name="demo", samples=right, limit=6, output_dir=str(tmp_path / "a"), progress=False)
    assert (summary["scores"]["pass@1"], summary["passed"], summary["num_tasks"]) == (1.0, 6, 6)

    # The same function with the constant one off fails its tests (`tests` tell constants apart).
    def off_by_one(task):
        head, _, body = task["response"].rpartition("return ")
        return head + "return " + body.replace(task["task_id"].split("/")[3], "{!r}".format("x"))
    wrong = write_samples(tmp_path / "wrong.jsonl", [(t["task_id"], off_by_one(t)) for t in tasks])
    summary = run_eval(name="demo", samples=wrong, limit=6, output_dir=str(tmp_path / "b"), progress=False)
    assert summary["scores"]["pass@1"] == 0.0


def test_prompt_and_postprocess():
    task = demo.load_tasks()[0]
    assert demo.build_prompt(task) == f"User: {task['prompt']}\nAssistant:"
    assert demo.build_prompt(task, chat=False) == task["prompt"] + "\n"
    answer = " def f(n):\n    return n * 8\n\ndef g(): pass\nassert f(1) == 8"
    assert demo.postprocess(answer) == "def f(n):\n    return n * 8\n"
    assert demo.postprocess("```python\ndef f(n):\n    return n\n```\nmore") == "def f(n):\n    return n\n"


def test_held_out_tasks_and_no_data_file():
    from smallcoder.data import demo_tasks

    assert demo.load_tasks() == demo_tasks.tasks("held_out") and len(demo.load_tasks(limit=3)) == 3
    with pytest.raises(ValueError, match="generates its tasks; it takes no data file"):
        demo.load_tasks(data="tasks.jsonl")
