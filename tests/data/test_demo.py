"""Demo corpora: offline, deterministic, held-out part disjoint from train."""

from smallcoder.data import demo


def test_validation_is_held_out_and_disjoint():
    for kind in ("prose", "code", "math", "sft"):
        train, validation = demo.demo_keys(kind, "train"), demo.demo_keys(kind, "validation")
        assert train and validation and not set(train) & set(validation)
        assert 0.02 < len(validation) / (len(train) + len(validation)) < 0.08
        assert demo.demo_keys(kind, "validation") == validation  # deterministic


def test_sft_function_instruction():
    source = (
        'def clamp(x, lo=0, hi=1):\n    """Return x limited to [lo, hi].\n\n    More text."""\n'
        '    return max(lo, min(hi, x))\n\ndef _private():\n    """Hidden helper function."""\n'
    )
    import ast

    pairs = demo.function_instructions(source, ast.parse(source))
    assert pairs == [("Write a Python function clamp(x, lo=0, hi=1) that returns x limited to [lo, hi].",
                      source.split("\n\ndef _private")[0])]


def test_math_problems_are_worked_and_deterministic():
    for i in range(12):
        question, answer = demo.math_problem(i)
        assert (question, answer) == demo.math_problem(i)
        assert question.endswith(("?", ".")) and "The answer is" in answer
    records = demo.demo_records("sft", ("math", 3))
    assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant"]


def test_tasks_corpus_trains_on_train_tasks_and_validates_on_the_held_out_ones():
    from smallcoder.data import demo_tasks

    for split, task_split in (("train", "train"), ("validation", "held_out")):
        keys = demo.demo_keys("tasks", split)
        expected = demo_tasks.tasks(task_split)
        assert len(keys) == len(expected)
        chats = [demo.demo_records("tasks", key)[0]["messages"] for key in keys]
        assert [(c[0]["content"], c[1]["content"]) for c in chats] == [
            (t["prompt"], t["response"]) for t in expected]
        assert [[m["role"] for m in c] for c in chats[:3]] == [["user", "assistant"]] * 3


def test_tasks_corpus_is_a_chat_source():
    import pytest

    from smallcoder.data import validate_data_config

    source = {"name": "t", "weight": 1.0, "type": "demo", "path": "tasks"}
    validate_data_config({"format": "chat", "sources": [source]}, "recipe.yaml")
    with pytest.raises(ValueError, match="the tasks demo is conversations; use it with format: chat"):
        validate_data_config({"format": "text", "sources": [source]}, "recipe.yaml")
