"""The demo benchmark: the held-out demo tasks (`smallcoder.data.demo_tasks`), 0-shot.

The stage gate of `smallcoder recipe run sft --demo`: a model trained on the
`tasks` demo corpus (the train tasks) is scored on the 176 held-out tasks,
(operation, constant) pairs it never saw together, e.g.::

    User: Write a Python function multiply_by_8(n) that returns n times 8.
    Assistant: def multiply_by_8(n):
        return n * 8

Prompt: `chat_prompt(task["prompt"])` (`chat=False`: the bare instruction and
a newline). Post-processing: the first fenced block if any, the first line's
leading spaces dropped (the others keep their indentation), cut at the first
of `"\\n\\n"`, `"\\nUser:"`, `"\\nassert "`, `"\\n```"`. Program: the
completion, then the task's asserts. Untrained weights score 0.
"""

from __future__ import annotations

from smallcoder.eval.postprocess import extract_code_block, truncate_at

NAME = "demo"
REFERENCE = {}  # no model card figure: the demo trains its own model
STOPS = ("\n\n", "\nUser:", "\nassert ", "\n```")


def load_tasks(data=None, limit=None):
    """The held-out demo tasks (`demo_tasks.tasks("held_out")`), in their fixed order.

    Args:
        data: must be None (the tasks are generated, not read).
        limit: keep only the first `limit` tasks.

    Returns:
        A list of dicts with `task_id`, `prompt`, `response` (the reference),
        `entry_point`, `tests` (assert statements).
    """
    from smallcoder.data import demo_tasks

    if data is not None:
        raise ValueError("The demo benchmark generates its tasks; it takes no data file.")
    tasks = demo_tasks.tasks("held_out")
    return tasks[:limit] if limit else tasks


def build_prompt(task, chat=True):
    """The model input for one task."""
    from smallcoder.tokenizer import chat_prompt

    return chat_prompt(task["prompt"]) if chat else task["prompt"] + "\n"


def postprocess(text, task=None):
    """The code of an answer (see the module docstring)."""
    # The chat answer starts after "Assistant:": its first line has a space the others lack.
    return truncate_at(extract_code_block(text).lstrip(), STOPS).rstrip() + "\n"


def build_program(task, completion):
    """The program whose exit status decides the task: the code, then its asserts."""
    from smallcoder.data import demo_tasks

    return demo_tasks.build_program(task, completion)
