"""Tests for the demo programming tasks: references pass in the sandbox, the split holds out
unseen (operation, constant) pairs, tests tell constants apart, generation is deterministic."""

import pytest

from smallcoder.data import demo_tasks
from smallcoder.data.demo_tasks import (
    ARGUMENT_NAMES,
    OPERATIONS_WITH_CONSTANT,
    build_program,
    tasks,
)


def _run_all(programs):
    from smallcoder.eval.execution import Executor
    from smallcoder.eval.sandbox import SandboxLimits

    with Executor(SandboxLimits(timeout_s=10)) as executor:
        futures = [executor.submit(p) for p in programs]
        return [f.result() for f in futures]


def _one_per_operation(found):
    """The first task of each operation (kind/op in the task id)."""
    seen = {}
    for t in found:
        seen.setdefault(tuple(t["task_id"].split("/")[1:3]), t)
    return list(seen.values())


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_references_pass_their_tests_in_the_sandbox(split):
    """The program the scorer runs (`build_program`) passes with the reference; every
    operation once through the sandbox (all tasks are checked in-process below)."""
    found = _one_per_operation(tasks(split))
    assert len(found) == (39 if split == "train" else 22)
    results = _run_all([build_program(t, t["response"]) for t in found])
    failed = [(t["task_id"], r.status) for t, r in zip(found, results) if r.status != "passed"]
    assert failed == []


def test_a_wrong_answer_fails_in_the_sandbox():
    task = next(t for t in tasks("held_out") if t["entry_point"] == "add_6")
    wrong = task["response"].replace("+ 6", "+ 5")
    assert wrong != task["response"]
    statuses = [r.status for r in _run_all([build_program(task, wrong), build_program(task, "")])]
    assert [s.split(":")[0] for s in statuses] == ["failed", "failed"]


def test_sizes_and_fields():
    train, held_out = tasks("train"), tasks("held_out")
    assert (len(train), len(held_out)) == (596, 176)
    for t in train + held_out:
        assert set(t) == {"task_id", "prompt", "response", "entry_point", "tests"}
        assert t["response"].startswith(f"def {t['entry_point']}(")
        assert f" {t['entry_point']}(" in t["prompt"]
        assert len(t["tests"]) >= demo_tasks.MIN_TESTS
        assert all(s.startswith(f"assert {t['entry_point']}(") for s in t["tests"])


def test_held_out_is_disjoint_from_train():
    train, held_out = tasks("train"), tasks("held_out")
    for field in ("task_id", "prompt", "response", "entry_point"):
        assert not {t[field] for t in train} & {t[field] for t in held_out}, field
    # Every held-out pair comes with all its argument names, so no held-out function body is
    # trained under another argument name either.
    def bodies(found):
        return {(tuple(t["task_id"].split("/")[1:3]), t["response"].split("return ", 1)[1]
                 .replace(t["task_id"].split("/")[-1], "ARG")) for t in found}

    assert not bodies(train) & bodies(held_out)


def test_held_out_pairs_are_seen_apart_in_training():
    """Each held-out operation is trained with other constants, and each held-out constant with
    other operations of the same kind of constant: what makes the held-out pairs learnable."""
    train_pairs = {(op.key, op.kind, k) for op, k in demo_tasks.combinations("train")}
    held_pairs = [(op.key, op.kind, k) for op, k in demo_tasks.combinations("held_out")]
    assert len(held_pairs) == 44
    for key, kind, k in held_pairs:
        assert (key, kind, k) not in train_pairs
        assert any(p[:2] == (key, kind) for p in train_pairs)
        assert any(p[2] == k and p[:2] != (key, kind) for p in train_pairs)
    for op in OPERATIONS_WITH_CONSTANT:  # the split leaves most of each operation for training
        trained = sum((op.key, op.kind, k) in train_pairs for k in op.constants)
        assert trained == len(op.constants) - len(op.constants) // demo_tasks.HOLD_OUT_EVERY


def _passes(code, task_tests):
    scope = {}
    exec(code, scope)  # our own template code, not a model's output
    try:
        exec("\n".join(task_tests), scope)
    except AssertionError:
        return False
    return True


def test_tests_tell_the_constant_apart():
    """Every reference passes its tests (in-process: our own template code), and the reference of
    the same operation with any other constant fails them."""
    for split in ("train", "held_out"):
        for task in tasks(split):
            parts = task["task_id"].split("/")  # demo/kind/op/constant/arg
            if len(parts) != 5:
                continue
            _, kind, key, constant, argument = parts
            op = next(o for o in OPERATIONS_WITH_CONSTANT if (o.key, o.kind) == (key, kind))
            assert _passes(task["response"], task["tests"]), task["task_id"]
            for other in op.constants:
                if str(other) == constant:
                    continue
                rival = demo_tasks.make_task(op, other, argument)["response"]
                rival = rival.replace(f"def {rival.split('(')[0][4:]}(", f"def {task['entry_point']}(")
                assert not _passes(rival, task["tests"]), (task["task_id"], other)


def test_deterministic_and_seeded():
    assert tasks("train", seed=3) == tasks("train", seed=3)
    a, b = tasks("held_out", seed=0), tasks("held_out", seed=1)
    assert sorted(t["task_id"] for t in a) == sorted(t["task_id"] for t in b)
    assert [t["task_id"] for t in a] != [t["task_id"] for t in b]
    assert {t["task_id"]: t["tests"] for t in a} != {t["task_id"]: t["tests"] for t in b}
    # Pinned: the same tasks in every process and Python version (str seeds hash with sha512).
    by_id = {t["task_id"]: t for t in a}
    assert by_id["demo/int/multiply/8/n"] == {
        "task_id": "demo/int/multiply/8/n",
        "prompt": "Write a Python function multiply_by_8(n) that returns n times 8.",
        "response": "def multiply_by_8(n):\n    return n * 8",
        "entry_point": "multiply_by_8",
        "tests": ["assert multiply_by_8(20) == 160", "assert multiply_by_8(3) == 24",
                  "assert multiply_by_8(5) == 40"],
    }


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="Unknown demo task split 'validation'"):
        tasks("validation")


def test_argument_names_cover_every_kind():
    assert {op.kind for op in OPERATIONS_WITH_CONSTANT} == set(ARGUMENT_NAMES)


def test_lookup_by_id_and_by_prompt():
    held_out = tasks("held_out")
    task = held_out[5]
    assert demo_tasks.task_by_id(task["task_id"]) == task
    assert demo_tasks.find_task(task["prompt"]) == task
    assert demo_tasks.find_task("Write a Python function that returns the sum of a list of numbers.") is None
    with pytest.raises(KeyError):
        demo_tasks.task_by_id("demo/int/nope/1/n")
    task["prompt"] = "changed"  # callers get copies: the cached tasks stay as they were
    assert tasks("held_out")[5]["prompt"] != "changed"
