"""`--data FILE`: local jsonl/parquet files as a recipe's mixture, their columns detected.

`recipe run sft --data rows.jsonl` replaces the recipe's `data.sources` with
one source per file. The columns come from `data.columns` when set (`--set
data.columns.prompt=question`), else from the file's first record:

- `format: chat`: a `messages` column (a list of `{role, content}`), or
  `prompt` + `response` columns;
- `format: text`: a `text` (or `content`) column.

Each file's weight (token share) is its share of the files' bytes, so every
file is read about once per pass. Unless validation files are given
(`--validation-data`), `data.validation_fraction` of the records is held out
for the validation loss (`DEFAULT_VALIDATION_FRACTION` when the recipe sets
none; see `smallcoder.data.holdout`).
"""

from __future__ import annotations

import gzip
import json
import os

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".jsonl.gz": "jsonl", ".json.gz": "jsonl",
            ".parquet": "parquet"}
CHAT_COLUMNS = (("messages",), ("prompt", "response"))
TEXT_COLUMNS = ("text", "content")
DEFAULT_VALIDATION_FRACTION = 0.05


def file_type(path):
    """`jsonl` or `parquet` from the file name, else a ValueError naming the file."""
    for suffix, kind in SUFFIXES.items():
        if path.endswith(suffix):
            return kind
    raise ValueError(f"--data {path}: expected a .jsonl, .json(.gz) or .parquet file.")


def first_record_columns(path):
    """The column names of the file's first record (jsonl: its first non-empty line)."""
    kind = file_type(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as e:  # pyarrow raises several types for a file that is not parquet
            raise ValueError(f"--data {path}: not a readable parquet file ({type(e).__name__}: {e}).") from e
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ValueError(f"--data {path}: line {number} is not JSON ({e}).") from e
            if not isinstance(record, dict):
                raise ValueError(f"--data {path}: line {number} is not a JSON object.")
            return list(record)
    raise ValueError(f"--data {path}: the file holds no records.")


def detect_columns(path, data_format, columns=None):
    """The source keys naming `path`'s columns: `{"messages": ...}`, `{"prompt": ..., "response": ...}`
    (chat) or `{"field": ...}` (text), from `columns` (`data.columns`) or the first record."""
    found = first_record_columns(path)
    columns = dict(columns or {})
    if data_format == "chat":
        keys = ("messages",) if "messages" in columns else ("prompt", "response")
        if any(k in columns for k in ("messages", "prompt", "response")):
            chosen = {k: columns.get(k) for k in keys}
        else:
            chosen = next(({k: k for k in keys} for keys in CHAT_COLUMNS if all(k in found for k in keys)), None)
        hint = "--set data.columns.prompt=COLUMN --set data.columns.response=COLUMN (or data.columns.messages)"
        what = "a `messages` column or `prompt` + `response` columns"
    else:
        given = columns.get("text")
        chosen = {"field": given} if given else next(({"field": k} for k in TEXT_COLUMNS if k in found), None)
        hint = "--set data.columns.text=COLUMN"
        what = "a `text` or `content` column"
    if chosen is None or any(v is None for v in chosen.values()):
        raise ValueError(f"--data {path}: format {data_format} needs {what}; its first record has "
                         f"{found}. Name the columns with {hint}.")
    missing = [v for v in chosen.values() if v not in found]
    if missing:
        raise ValueError(f"--data {path}: no column {missing[0]!r} (data.columns); its first record has {found}.")
    return chosen


def sources_from_files(paths, data_format, columns=None, prefix=""):
    """One `data.sources` entry per file: `{name, weight, type, path, <columns>}`.

    Names are the file names without their suffix (made unique), weights the
    files' shares of the bytes (summing to 1).
    """
    sources, names = [], set()
    sizes = []
    for path in paths:
        kind = file_type(path)
        if not os.path.isfile(path):
            raise ValueError(f"--data {path}: no such file.")
        base = os.path.basename(path)
        name = prefix + next(base[: -len(s)] for s in SUFFIXES if base.endswith(s))
        unique, n = name, 1
        while unique in names:
            n += 1
            unique = f"{name}-{n}"
        names.add(unique)
        sources.append({"name": unique, "weight": 0.0, "type": kind, "path": path,
                        **detect_columns(path, data_format, columns)})
        sizes.append(max(os.path.getsize(path), 1))
    total = sum(sizes)
    for source, size in zip(sources, sizes):
        source["weight"] = round(size / total, 6)
    sources[-1]["weight"] = round(1.0 - sum(s["weight"] for s in sources[:-1]), 6)
    return sources


def apply_data_files(data_config, files, validation_files=()):
    """`data_config` with its sources replaced by `files` (and its validation split by
    `validation_files`, else a held-out fraction); the demo corpora are dropped."""
    data = {k: v for k, v in data_config.items() if k not in ("sources", "demo")}
    data_format = data.get("format", "text")
    data["sources"] = sources_from_files(files, data_format, data.get("columns"))
    if validation_files:
        data["validation_sources"] = sources_from_files(validation_files, data_format, data.get("columns"),
                                                        prefix="validation-")
    elif data.get("validation_fraction") is None:
        data["validation_fraction"] = DEFAULT_VALIDATION_FRACTION
    return data
