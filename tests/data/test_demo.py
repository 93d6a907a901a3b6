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
