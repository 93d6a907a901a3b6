"""Offline demo corpora built from the running Python's standard library.

One stand-in per curriculum stage, deterministic for a Python version:

- `prose` (base): the `pydoc_data` reference topics and each stdlib module's
  docstrings (module, classes, functions), one document per topic/module;
- `code`  (code): stdlib source files, tests excluded, one document per file;
- `math`  (math): generated arithmetic and algebra word problems with worked
  answers;
- `sft`   (sft): `Write a Python function name(args) that <first docstring
  sentence>` -> the function's code (top-level stdlib functions, via `ast`),
  plus the math problems as question/answer chats;
- `tasks` (sft, `--demo`): small synthetic Python functions with tests
  (`smallcoder.data.demo_tasks`), `Write a Python function add_3(n) that ...`
  -> its two-line reference.

Items are split by a hash of their name: 1 in 20 is held out for
`split="validation"`, the rest are `train`. The `tasks` corpus keeps its own
split instead: `validation` is the held-out tasks (`demo_tasks.tasks("held_out")`),
the ones the demo stage gate scores in the sandbox.
"""

from __future__ import annotations

import ast
import functools
import os
import random
import re
import sysconfig
import threading
import zlib

MATH_PROBLEMS = 20_000  # math items per corpus (the held-out 5% among them)
SFT_MATH_PROBLEMS = 1_000
_TASK_SPLITS = {"train": "train", "validation": "held_out"}  # split -> demo_tasks split
_EXCLUDED_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "turtledemo"}


def _is_validation(name):
    return zlib.crc32(name.encode()) % 20 == 0


@functools.lru_cache(maxsize=1)
def stdlib_files():
    """Relative paths of stdlib `.py` files (sorted; tests, idlelib, lib2to3 excluded)."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _EXCLUDED_DIRS and not d.startswith("lib2to3")
        )
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return tuple(found)


def _read_stdlib(relpath):
    with open(os.path.join(sysconfig.get_paths()["stdlib"], relpath), "rb") as f:
        return f.read()


def demo_keys(kind, split):
    """The item keys of demo corpus `kind` for `split` ("train" or "validation")."""
    from pydoc_data import topics

    if kind == "prose":
        keys = [("topic", t) for t in sorted(topics.topics)] + [("doc", f) for f in stdlib_files()]
    elif kind == "code":
        keys = [("file", f) for f in stdlib_files()]
    elif kind == "math":
        keys = [("math", i) for i in range(MATH_PROBLEMS)]
    elif kind == "sft":
        keys = [("functions", f) for f in stdlib_files()]
        keys += [("math", i) for i in range(SFT_MATH_PROBLEMS)]
    elif kind == "tasks":
        from smallcoder.data import demo_tasks

        return [("task", t["task_id"]) for t in demo_tasks.tasks(_TASK_SPLITS[split])]
    else:
        raise ValueError(f"Unknown demo corpus {kind!r}; expected prose, code, math, sft or tasks.")
    want = split == "validation"
    return [k for k in keys if _is_validation(f"{k[0]}:{k[1]}") == want]


def demo_records(kind, key):
    """The records (dicts with `text` or `messages`) of one demo item."""
    from smallcoder.data.sources import BadRecord

    what, name = key
    if what == "task":
        from smallcoder.data import demo_tasks

        task = demo_tasks.task_by_id(name)
        return [{"messages": [{"role": "user", "content": task["prompt"]},
                              {"role": "assistant", "content": task["response"]}]}]
    if what == "topic":
        from pydoc_data import topics

        return [{"text": topics.topics[name]}]
    if what == "math":
        question, answer = math_problem(name)
        if kind == "sft":
            return [{"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}]}]
        return [{"text": f"Problem: {question}\nSolution: {answer}"}]
    try:
        if what == "file":
            return [{"text": _read_stdlib(name).decode("utf-8")}]
        if what == "doc":
            text = _module_docstrings(name)
            return [{"text": text}] if text else []
        pairs = _module_functions(name)
    except (UnicodeDecodeError, SyntaxError, OSError):
        return [BadRecord("undecodable")]
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in pairs]


# CPython 3.11's parser is not safe to run in two threads at once ("AST
# constructor recursion depth mismatch"); the pipeline parses in a background
# prefetch thread, so every parse takes this lock.
_PARSE_LOCK = threading.Lock()


def _parse(source):
    with _PARSE_LOCK:
        return ast.parse(source)


@functools.lru_cache(maxsize=None)  # small strings, parsed once per process
def _module_docstrings(relpath):
    source = _read_stdlib(relpath).decode("utf-8")
    docs = [ast.get_docstring(n) for n in ast.walk(_parse(source))
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return "\n\n".join(d for d in docs if d)


@functools.lru_cache(maxsize=None)
def _module_functions(relpath):
    source = _read_stdlib(relpath).decode("utf-8")
    return tuple(function_instructions(source, _parse(source)))


# === SFT pairs from functions ===
_THIRD_PERSON = {"Return": "returns", "Get": "gets", "Create": "creates", "Convert": "converts",
                 "Make": "makes", "Compute": "computes", "Check": "checks", "Add": "adds",
                 "Remove": "removes", "Find": "finds", "Read": "reads", "Write": "writes",
                 "Build": "builds", "Parse": "parses", "Test": "tests", "Set": "sets",
                 "Split": "splits", "Format": "formats", "Print": "prints", "Open": "opens",
                 "Load": "loads", "Decode": "decodes", "Encode": "encodes", "Yield": "yields",
                 "Run": "runs", "Call": "calls", "Copy": "copies", "Raise": "raises",
                 "Generate": "generates", "Determine": "determines", "Translate": "translates"}


def _first_sentence(doc):
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.!?])\s", paragraph)[0].rstrip(".")
    if not 10 <= len(sentence) <= 200 or sentence.startswith((">>>", "(", ":")):
        return None
    first, _, rest = sentence.partition(" ")
    first = _THIRD_PERSON.get(first, first[:1].lower() + first[1:])
    return f"{first} {rest}".strip()


def function_instructions(source, tree):
    """`(instruction, code)` pairs for the documented public top-level functions of a module."""
    pairs = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        sentence = _first_sentence(doc) if doc else None
        code = ast.get_source_segment(source, node)
        if not sentence or not code or len(code) > 4000:
            continue
        prompt = f"Write a Python function {node.name}({ast.unparse(node.args)}) that {sentence}."
        pairs.append((prompt, code))
    return pairs


# === Math word problems ===
_NAMES = ["Ada", "Ben", "Chen", "Dana", "Eli", "Fatima", "Grace", "Hiro", "Ines", "Jonas"]
_ITEMS = [("pencil", "pencils"), ("apple", "apples"), ("notebook", "notebooks"),
          ("ticket", "tickets"), ("book", "books"), ("cup of tea", "cups of tea")]


def math_problem(i):
    """Problem `i` (deterministic): `(question, worked answer ending 'The answer is N.')`."""
    rng = random.Random(f"smallcoder-math-{i}")
    name = rng.choice(_NAMES)
    kind = i % 6
    if kind == 0:
        price, count = rng.randint(2, 20), rng.randint(2, 12)
        paid = (price * count // 10 + 1 + rng.randint(0, 3)) * 10
        one, many = rng.choice(_ITEMS)
        q = (f"{name} buys {count} {many} at ${price} per {one} and pays with ${paid}. "
             "How much change does " + name + " get?")
        cost = price * count
        a = (f"The {many} cost {count} × {price} = {cost} dollars. "
             f"The change is {paid} − {cost} = {paid - cost} dollars. The answer is {paid - cost}.")
    elif kind == 1:
        x, a_, b = rng.randint(-20, 20), rng.randint(2, 12), rng.randint(-50, 50)
        c = a_ * x + b
        q = f"Solve for x: {a_}x {'+' if b >= 0 else '−'} {abs(b)} = {c}."
        a = (f"Subtract {b} from both sides: {a_}x = {c} − ({b}) = {c - b}. "
             f"Divide by {a_}: x = {c - b} / {a_} = {x}. The answer is {x}.")
    elif kind == 2:
        speed, hours = rng.randint(30, 120), rng.randint(2, 9)
        q = f"A train travels at {speed} km per hour for {hours} hours. How far does it go?"
        a = f"Distance = speed × time = {speed} × {hours} = {speed * hours} km. The answer is {speed * hours}."
    elif kind == 3:
        w, h = rng.randint(2, 40), rng.randint(2, 40)
        q = f"A rectangle is {w} m wide and {h} m long. What are its area and perimeter?"
        a = (f"Area = {w} × {h} = {w * h} square metres. Perimeter = 2 × ({w} + {h}) = "
             f"{2 * (w + h)} metres. The answer is {w * h} and {2 * (w + h)}.")
    elif kind == 4:
        pct, base = rng.choice([5, 10, 15, 20, 25, 40, 50, 75]), rng.randint(1, 40) * 20
        q = f"{name} saves {pct}% of a ${base} prize. How many dollars is that?"
        a = f"{pct}% of {base} is {pct} / 100 × {base} = {pct * base // 100}. The answer is {pct * base // 100}."
    else:
        x, y = rng.randint(-9, 9), rng.randint(-9, 9)
        p, q_ = rng.randint(2, 5), rng.randint(2, 5)
        s, d = x + y, p * x - q_ * y
        q = f"Solve the system: x + y = {s} and {p}x − {q_}y = {d}."
        a = (f"From the first equation, y = {s} − x. Substitute: {p}x − {q_}({s} − x) = {d}, so "
             f"{p + q_}x = {d} + {q_ * s} = {d + q_ * s}, x = {x}. Then y = {s} − {x} = {y}. "
             f"The answer is x = {x}, y = {y}.")
    return q, a
