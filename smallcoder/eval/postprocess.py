"""Turning a model's answer into code: fenced-block extraction, stop sequences,
indentation. Shared by HumanEval and MBPP; each step is idempotent, so scoring
already-processed completions again gives the same program.
"""

from __future__ import annotations

import re
import textwrap

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(?:def |async def |class |import |from |@)", re.M)


def extract_code_block(text):
    """The body of the first fenced block (```python, ```py or bare ```).

    A block the model did not close runs to the end of the text. Text without
    a fence is returned unchanged.
    """
    match = _FENCE.search(text)
    return match.group(2) if match else text


def truncate_at(text, stops):
    """`text` up to the earliest of the `stops` strings (all kept if none occur)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def drop_leading_prose(code):
    """If `code` does not compile, drop the lines before its first top-level
    `def`/`class`/`import`/`from`/`@` (prose such as "Here is the function:").

    Code that compiles is returned unchanged (so `MAX = 3000` before a `def`
    stays).
    """
    try:
        compile(code, "<completion>", "exec")
        return code
    except (SyntaxError, ValueError):
        pass
    match = _CODE_START.search(code)
    return code[match.start() :] if match else code


def indent_body(code, width=4):
    """Make a function body indented: if its first non-blank line is indented
    by fewer than `width` spaces (and no tab), dedent it and indent by `width`.
    """
    first = next((line for line in code.splitlines() if line.strip()), "")
    indent = first[: len(first) - len(first.lstrip())]
    if "\t" in indent or len(indent) >= width:
        return code
    return textwrap.indent(textwrap.dedent(code), " " * width)
