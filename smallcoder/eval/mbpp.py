"""MBPP (Austin et al., 2021): the test split (task_ids 11-510, 500 tasks),
3-shot with tasks 2, 3 and 4 as the shots, in the paper's format.

Each shot, and the task itself, is laid out as::

    You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:

    {test_list joined by "\\n"}
    [BEGIN]
    {code}
    [DONE]

Prompt (`build_prompt`): with `chat=True` (default: SmallCoder is an SFT
model and the card evaluates in its chat format) the user message is the three
solved shots and the task's header and tests, each block separated by `"\\n"`,
passed through `chat_prompt`; the model answers with `[BEGIN]` + code +
`[DONE]` or a fenced block. With `chat=False` (base checkpoints) the prompt is
the same text ending in `"[BEGIN]\\n"`, continued by the model.
Shot code uses `"\\n"` line endings (the data has `"\\r\\n"`).

Post-processing (`postprocess`): keep what follows the first `[BEGIN]` (if
any); keep the first fenced block's body (if any); cut at the first of
`"[DONE]"`, `"\\nYou are an expert Python programmer"`, `"\\n```"`; dedent;
drop prose lines before the first top-level `def`/`class`/`import`/`from`/`@`.

Program (`build_program`): `code + "\\n" + test_setup_code + "\\n" + asserts`,
code first because the setup of tasks 367 and 927 uses classes the code defines.
"""

from __future__ import annotations

import json
import os
import textwrap

from smallcoder.eval.postprocess import (
    drop_leading_prose,
    extract_code_block,
    truncate_at,
)

NAME = "mbpp"
REFERENCE = {"pass@1": 0.310}  # the SmallCoder-303M model card: 31.0%
HUB_ID = "google-research-datasets/mbpp"
SHOT_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)
STOPS = ("[DONE]", "\nYou are an expert Python programmer", "\n```")


def load_tasks(data=None, limit=None):
    """The MBPP test split (task_ids 11-510) plus the shots.

    Args:
        data: path to a local `mbpp.jsonl` (the Google Research release).
            If None: the `SMALLCODER_MBPP_DATA` environment variable if set,
            else `datasets.load_dataset("google-research-datasets/mbpp",
            "full")` from the Hugging Face Hub (a clear error, within seconds,
            when the Hub is offline or unreachable).
        limit: keep only the first `limit` test tasks.

    Returns:
        A list of task dicts (`task_id` int, `text`, `code`, `test_list`,
        `test_setup_code`), each with `shots`: the three shot tasks.
    """
    data = data or os.environ.get("SMALLCODER_MBPP_DATA") or None
    rows = _read_jsonl(data) if data else _load_from_hub()
    by_id = {int(r["task_id"]): r for r in rows}
    missing = [i for i in (*SHOT_IDS, *TEST_IDS) if i not in by_id]
    if missing:
        where = data or HUB_ID
        raise ValueError(
            f"MBPP data {where!r} lacks task_ids {missing[:5]}{'...' if len(missing) > 5 else ''}: "
            "it must be the full release (task_ids 1-974), e.g. mbpp.jsonl."
        )
    shots = [by_id[i] for i in SHOT_IDS]
    tasks = [dict(by_id[i], task_id=i, shots=shots) for i in TEST_IDS]
    return tasks[:limit] if limit else tasks


def _read_jsonl(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No MBPP file at {path!r}. Pass --data pointing to mbpp.jsonl "
            "(google-research/mbpp/mbpp.jsonl)."
        )
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _load_from_hub():
    from smallcoder import hub_access

    hint = (
        "Pass --data PATH (or set SMALLCODER_MBPP_DATA) to a local mbpp.jsonl, "
        "e.g. ../shared/data/mbpp/mbpp.jsonl."
    )
    reason = hub_access.unavailable_reason(datasets=True)
    if reason:
        raise RuntimeError(f"Cannot use the Hugging Face Hub to load {HUB_ID} ({reason}). {hint}")
    import datasets

    try:
        splits = datasets.load_dataset(HUB_ID, "full")
    except Exception as e:  # network, auth or cache errors: say what to do
        raise RuntimeError(f"Loading {HUB_ID} from the Hub failed ({e}). {hint}") from e
    return [row for split in splits.values() for row in split]


def _block(task, with_code):
    text = task["text"].strip()
    tests = "\n".join(task["test_list"])
    block = (
        f"You are an expert Python programmer, and here is your task: {text} "
        f"Your code should pass these tests:\n\n{tests}\n"
    )
    if with_code:
        code = task["code"].replace("\r\n", "\n").strip("\n")
        block += f"[BEGIN]\n{code}\n[DONE]"
    return block


def build_prompt(task, chat=True):
    """The model input for one task (see the module docstring)."""
    from smallcoder.tokenizer import chat_prompt

    shots = "\n".join(_block(s, with_code=True) for s in task["shots"])
    if chat:
        return chat_prompt(shots + "\n" + _block(task, with_code=False).rstrip("\n"))
    return shots + "\n" + _block(task, with_code=False) + "[BEGIN]\n"


def postprocess(text, task=None):
    """The code of one answer (see the module docstring)."""
    if "[BEGIN]" in text:
        text = text.split("[BEGIN]", 1)[1]
    code = truncate_at(extract_code_block(text), STOPS)
    return drop_leading_prose(textwrap.dedent(code.strip("\n"))).rstrip() + "\n"


def build_program(task, completion):
    """Code, then the task's setup code, then its three asserts."""
    setup = task.get("test_setup_code") or ""
    return completion + "\n" + setup + "\n" + "\n".join(task["test_list"]) + "\n"
