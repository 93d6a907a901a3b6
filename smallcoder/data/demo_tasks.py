"""Synthetic programming tasks for the demo: small Python functions with tests.

Each task asks for one function in one sentence, e.g.::

    prompt:   Write a Python function multiply_by_7(n) that returns n times 7.
    response: def multiply_by_7(n):
                  return n * 7
    tests:    ["assert multiply_by_7(3) == 21", ...]

A task is an *operation* (`multiply_by`), its *constant* (`7`, or a letter
such as `'c'` for string operations; none for operations like `sum`) and an
*argument name* (`n`). The function name is made from the operation and the
constant (`multiply_by_7`, `count_c`).

Split (fixed, independent of the seed): a (operation, constant) pair is
held out when `(operation index + constant index) % HOLD_OUT_EVERY == 0`, so a
quarter of each operation's constants, and a quarter of the operations
that use each constant, are held out. Training tasks are every other pair
with every argument name, plus the operations without a constant;
held-out tasks are the held-out pairs with every argument name. A held-out
task therefore never occurs in training, not even under another argument
name: passing it takes combining an operation and a constant that were only
seen apart.

Tests are computed from an independent Python function per operation (not
from the reference code), and their inputs are picked so that the same
operation with any other constant fails at least one of them.

The seed drives the test inputs and the order of the tasks; the split and
the set of tasks do not depend on it.

Example:
>>> held_out = tasks("held_out")
>>> task = held_out[0]
>>> sorted(task)
['entry_point', 'prompt', 'response', 'task_id', 'tests']
"""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Callable

HOLD_OUT_EVERY = 4
NUMBERS = tuple(range(2, 10))  # constants of numeric operations
LETTERS = tuple("abcdefgh")  # constants of string operations
ARGUMENT_NAMES = {
    "int": ("x", "n", "num", "value"),
    "str": ("s", "text", "word", "name"),
    "list": ("xs", "nums", "values", "items"),
}
MIN_TESTS = 3
_CANDIDATES = 64  # random inputs drawn per task to pick the tests from


@dataclasses.dataclass(frozen=True)
class Operation:
    """One kind of function.

    Args:
        key: short id, part of the task id.
        kind: the argument's type: "int", "str" or "list".
        name: the function name, `{k}` standing for the constant.
        does: what it returns, `{a}` the argument, `{k}` the constant.
        body: the returned expression, same placeholders.
        expected: `expected(argument, constant)`, the value the tests assert
            (written independently of `body`).
        constants: the constants the operation takes; `(None,)` for none.
    """

    key: str
    kind: str
    name: str
    does: str
    body: str
    expected: Callable
    constants: tuple = (None,)


def _q(c):
    return repr(c)  # a letter constant as it appears in text and code: 'c'


OPERATIONS_WITH_CONSTANT = (
    Operation("add", "int", "add_{k}", "returns {a} plus {k}", "{a} + {k}",
              lambda a, k: a + k, NUMBERS),
    Operation("subtract", "int", "subtract_{k}", "returns {a} minus {k}", "{a} - {k}",
              lambda a, k: a - k, NUMBERS),
    Operation("multiply", "int", "multiply_by_{k}", "returns {a} times {k}", "{a} * {k}",
              lambda a, k: a * k, NUMBERS),
    Operation("power", "int", "power_{k}", "returns {a} to the power of {k}", "{a} ** {k}",
              lambda a, k: a**k, NUMBERS),
    Operation("mod", "int", "mod_{k}", "returns the remainder of {a} divided by {k}", "{a} % {k}",
              lambda a, k: a % k, NUMBERS),
    Operation("div", "int", "div_{k}", "returns {a} divided by {k}, rounded down", "{a} // {k}",
              lambda a, k: a // k, NUMBERS),
    Operation("divisible", "int", "is_divisible_by_{k}", "returns True if {a} is divisible by {k}",
              "{a} % {k} == 0", lambda a, k: a % k == 0, NUMBERS),
    Operation("greater", "int", "is_greater_than_{k}", "returns True if {a} is greater than {k}",
              "{a} > {k}", lambda a, k: a > k, NUMBERS),
    Operation("less", "int", "is_less_than_{k}", "returns True if {a} is less than {k}",
              "{a} < {k}", lambda a, k: a < k, NUMBERS),
    Operation("repeat", "str", "repeat_{k}", "returns {a} repeated {k} times", "{a} * {k}",
              lambda a, k: "".join([a] * k), NUMBERS),
    Operation("first", "str", "first_{k}", "returns the first {k} characters of {a}", "{a}[:{k}]",
              lambda a, k: "".join(list(a)[:k]), NUMBERS),
    Operation("last", "str", "last_{k}", "returns the last {k} characters of {a}", "{a}[-{k}:]",
              lambda a, k: "".join(list(a)[max(len(a) - k, 0):]), NUMBERS),
    Operation("count", "str", "count_{k}", "returns the number of times {q} occurs in {a}",
              "{a}.count({q})", lambda a, k: sum(1 for c in a if c == k), LETTERS),
    Operation("prefix", "str", "prefix_{k}", "returns {a} with {q} added at the start", "{q} + {a}",
              lambda a, k: f"{k}{a}", LETTERS),
    Operation("suffix", "str", "suffix_{k}", "returns {a} with {q} added at the end", "{a} + {q}",
              lambda a, k: f"{a}{k}", LETTERS),
    Operation("starts", "str", "starts_with_{k}", "returns True if {a} starts with {q}",
              "{a}.startswith({q})", lambda a, k: a[:1] == k, LETTERS),
    Operation("ends", "str", "ends_with_{k}", "returns True if {a} ends with {q}",
              "{a}.endswith({q})", lambda a, k: a[-1:] == k, LETTERS),
    Operation("remove", "str", "remove_{k}", "returns {a} with every {q} removed",
              "{a}.replace({q}, '')", lambda a, k: "".join(c for c in a if c != k), LETTERS),
    Operation("add_each", "list", "add_{k}_to_each", "returns a list with {k} added to each element of {a}",
              "[v + {k} for v in {a}]", lambda a, k: list(map(lambda v: v + k, a)), NUMBERS),
    Operation("multiply_each", "list", "multiply_each_by_{k}",
              "returns a list with each element of {a} multiplied by {k}", "[v * {k} for v in {a}]",
              lambda a, k: list(map(lambda v: v * k, a)), NUMBERS),
    Operation("keep_greater", "list", "keep_greater_than_{k}",
              "returns the elements of {a} that are greater than {k}", "[v for v in {a} if v > {k}]",
              lambda a, k: list(filter(lambda v: v > k, a)), NUMBERS),
    Operation("contains", "list", "contains_{k}", "returns True if {k} is in {a}", "{k} in {a}",
              lambda a, k: a.count(k) > 0, NUMBERS),
)

OPERATIONS_WITHOUT_CONSTANT = (
    Operation("double", "int", "double", "returns {a} times 2", "{a} * 2", lambda a, k: a + a),
    Operation("square", "int", "square", "returns {a} to the power of 2", "{a} ** 2", lambda a, k: a * a),
    Operation("negate", "int", "negate", "returns {a} with its sign flipped", "-{a}", lambda a, k: 0 - a),
    Operation("is_even", "int", "is_even", "returns True if {a} is even", "{a} % 2 == 0",
              lambda a, k: a % 2 == 0),
    Operation("is_odd", "int", "is_odd", "returns True if {a} is odd", "{a} % 2 == 1",
              lambda a, k: a % 2 == 1),
    Operation("upper", "str", "to_upper", "returns {a} in upper case", "{a}.upper()",
              lambda a, k: "".join(c.upper() for c in a)),
    Operation("lower", "str", "to_lower", "returns {a} in lower case", "{a}.lower()",
              lambda a, k: "".join(c.lower() for c in a)),
    Operation("reverse", "str", "reverse_string", "returns {a} reversed", "{a}[::-1]",
              lambda a, k: "".join(reversed(a))),
    Operation("length", "str", "string_length", "returns the number of characters in {a}", "len({a})",
              lambda a, k: sum(1 for _ in a)),
    Operation("sum", "list", "total", "returns the sum of the elements of {a}", "sum({a})",
              lambda a, k: _fold(a, lambda x, y: x + y, 0)),
    Operation("max", "list", "largest", "returns the largest element of {a}", "max({a})",
              lambda a, k: sorted(a)[-1]),
    Operation("min", "list", "smallest", "returns the smallest element of {a}", "min({a})",
              lambda a, k: sorted(a)[0]),
    Operation("count", "list", "list_length", "returns the number of elements in {a}", "len({a})",
              lambda a, k: sum(1 for _ in a)),
    Operation("sorted", "list", "sort_list", "returns the elements of {a} sorted in increasing order",
              "sorted({a})", lambda a, k: _insertion_sort(a)),
    Operation("reverse", "list", "reverse_list", "returns the elements of {a} in reverse order", "{a}[::-1]",
              lambda a, k: list(reversed(a))),
    Operation("even", "list", "keep_even", "returns the even elements of {a}", "[v for v in {a} if v % 2 == 0]",
              lambda a, k: list(filter(lambda v: v % 2 == 0, a))),
    Operation("odd", "list", "keep_odd", "returns the odd elements of {a}", "[v for v in {a} if v % 2 == 1]",
              lambda a, k: list(filter(lambda v: v % 2 == 1, a))),
)


def _fold(values, f, start):
    for v in values:
        start = f(start, v)
    return start


def _insertion_sort(values):
    out = []
    for v in values:
        i = len(out)
        while i > 0 and out[i - 1] > v:
            i -= 1
        out.insert(i, v)
    return out


def is_held_out(operation_index, constant_index):
    """Whether the pair (`OPERATIONS_WITH_CONSTANT[operation_index]`, its
    `constant_index`-th constant) belongs to the held-out split."""
    return (operation_index + constant_index) % HOLD_OUT_EVERY == 0


def _fill(template, operation, constant, argument):
    return template.format(a=argument, k=constant, q=_q(constant))


def _candidate_inputs(rng, kind):
    """Distinct inputs of `kind` in a random order: every int in 0..20, or
    `_CANDIDATES` random strings over `LETTERS` / lists of ints in 0..12."""
    if kind == "int":
        return rng.sample(range(21), 21)
    out = []
    for _ in range(_CANDIDATES):
        if kind == "str":
            value = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 10)))
        else:
            value = [rng.randint(0, 12) for _ in range(rng.randint(3, 7))]
        if value not in out:
            out.append(value)
    return out


def pick_test_inputs(operation, constant, rng):
    """Inputs for the tests: at least `MIN_TESTS`, enough that the operation with any
    other of its constants gives a different result on one of them.

    Raises:
        ValueError: when none of the random candidates tells `constant` from another one.
    """
    candidates = _candidate_inputs(rng, operation.kind)
    rivals = [c for c in operation.constants if c != constant]
    chosen = []
    for value in candidates:  # greedy: keep an input when it tells apart a rival not yet told apart
        want = operation.expected(value, constant)
        told = [r for r in rivals if operation.expected(value, r) != want]
        if told:
            chosen.append(value)
            rivals = [r for r in rivals if r not in told]
        if not rivals:
            break
    if rivals:
        raise ValueError(f"No test input tells {operation.key} {constant!r} from {rivals!r}.")
    for value in candidates:
        if len(chosen) >= MIN_TESTS:
            break
        if value not in chosen:
            chosen.append(value)
    return chosen


def make_task(operation, constant, argument, seed=0):
    """The task dict of one (operation, constant, argument name).

    Returns:
        `{"task_id", "prompt", "response", "entry_point", "tests"}`; `tests` is
        a list of `assert` statements.
    """
    name = _fill(operation.name, operation, constant, argument)
    signature = f"{name}({argument})"
    key = operation.kind + "/" + operation.key + ("" if constant is None else f"/{constant}")
    rng = random.Random(f"{seed}:{key}/{argument}")  # str seeds are stable across runs
    inputs = pick_test_inputs(operation, constant, rng)
    tests = [f"assert {name}({v!r}) == {operation.expected(v, constant)!r}" for v in inputs]
    return {
        "task_id": f"demo/{key}/{argument}",
        "prompt": f"Write a Python function {signature} that {_fill(operation.does, operation, constant, argument)}.",
        "response": f"def {signature}:\n    return {_fill(operation.body, operation, constant, argument)}",
        "entry_point": name,
        "tests": tests,
    }


def combinations(split):
    """`(operation, constant)` pairs of `split` ("train" or "held_out"), in a fixed order."""
    if split not in ("train", "held_out"):
        raise ValueError(f"Unknown demo task split {split!r}; expected 'train' or 'held_out'.")
    want = split == "held_out"
    pairs = [(op, k) for i, op in enumerate(OPERATIONS_WITH_CONSTANT)
             for j, k in enumerate(op.constants) if is_held_out(i, j) == want]
    if not want:
        pairs += [(op, None) for op in OPERATIONS_WITHOUT_CONSTANT]
    return pairs


def tasks(split, seed=0):
    """All tasks of `split` ("train" or "held_out"), shuffled by `seed` (a new list).

    Every (operation, constant) pair of the split with every argument name of
    its kind: 596 train and 176 held-out tasks.
    """
    return [dict(t) for t in _tasks(split, seed)]


@functools.lru_cache(maxsize=8)  # ~0.5 s to make; the data pipeline asks per record
def _tasks(split, seed):
    out = [make_task(op, k, a, seed) for op, k in combinations(split) for a in ARGUMENT_NAMES[op.kind]]
    random.Random(seed).shuffle(out)
    return tuple(out)


def task_by_id(task_id, seed=0):
    """The task (either split) with `task_id`.

    Raises:
        KeyError: no demo task has that id.
    """
    return dict(_by_id(seed)[task_id])


def find_task(prompt, seed=0):
    """The task (either split) whose prompt is `prompt`, or None."""
    return next((dict(t) for t in _by_id(seed).values() if t["prompt"] == prompt), None)


@functools.lru_cache(maxsize=2)
def _by_id(seed):
    return {t["task_id"]: t for split in ("train", "held_out") for t in _tasks(split, seed)}


def chat_record(task):
    """The task as an SFT record: `{"prompt", "response"}`."""
    return {"prompt": task["prompt"], "response": task["response"]}


def code_document(task):
    """The task as plain code for pretraining: the reference, then its tests."""
    return task["response"] + "\n\n\n" + "\n".join(task["tests"]) + "\n"


def build_program(task, completion):
    """The program the sandbox runs: the completion, then the task's asserts."""
    return completion + "\n\n\n" + "\n".join(task["tests"]) + "\n"

