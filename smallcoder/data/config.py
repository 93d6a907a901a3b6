"""The recipe `data:` section: its schema and validation.

Schema (every key but `sources` optional)::

    data:
      format: text            # text | chat
      document_masking: true  # attention and RoPE positions stay inside a document
      overlong: truncate      # chat only: truncate | drop examples longer than the window
      shuffle_buffer: 10000   # records per shuffled block, per source and stream; 0 = stored order
      sources:                # token shares; weights sum to 1
        - name: fineweb-edu   # unique; the key of token_counts()
          weight: 1.0
          type: hf            # hf | tfds | jsonl | parquet | text | pyfiles | demo
          path: HuggingFaceFW/fineweb-edu   # hub id / tfds name / file, folder or glob
          config: sample-10BT # hf, tfds: dataset config
          split: train        # hf, tfds: split name (default train)
          data_files: ...     # hf: files for a packaged builder (path: json | parquet | ...)
          data_dir: ...       # tfds: where prepared datasets live
          field: text         # text format: the column holding the document
          messages: messages  # chat format: a list of {role, content} ...
          prompt: input       #   ... or a prompt column ...
          response: output    #   ... and a response column
          validation: {split: test}   # overrides used for split="validation"
      demo:                   # what --demo uses (default: prose for text, sft for chat)
        - {name: stdlib-prose, weight: 1.0, type: demo, path: prose}
      validation_fraction: 0.05   # jsonl/parquet sources without `validation:` hold out this
                                  # fraction of their records (by content, `holdout`) for split="validation"
      validation_sources: [...]   # the validation split's own sources (replaces the above)
      columns: {prompt: question, response: answer}   # columns of `--data` files (`files`)

The validation split of a run (`split="validation"`) is `validation_sources`
when given, else per source: its `validation:` overrides, its held-out
fraction (jsonl, parquet), or the demo corpora's own held-out part.
"""

from __future__ import annotations

import math

FORMATS = ("text", "chat")
OVERLONG = ("truncate", "drop")
SOURCE_TYPES = ("hf", "tfds", "jsonl", "parquet", "text", "pyfiles", "demo")
DEMO_KINDS = ("prose", "code", "math", "sft", "tasks")
DEMO_CHAT_KINDS = ("sft", "tasks")  # conversations; the others are plain text

DEFAULT_SHUFFLE_BUFFER = 10_000  # ~40 MB of raw web documents per source and stream

TOP_KEYS = {"format", "document_masking", "overlong", "shuffle_buffer", "sources", "demo",
            "validation_fraction", "validation_sources", "columns"}
HOLDOUT_TYPES = ("jsonl", "parquet")  # what data.validation_fraction applies to
COLUMN_KEYS = ("messages", "prompt", "response", "text")
SOURCE_KEYS = {
    "name": str,
    "weight": (int, float),
    "type": str,
    "path": str,
    "config": str,
    "split": str,
    "data_files": (str, list, dict),
    "data_dir": str,
    "field": str,
    "messages": str,
    "prompt": str,
    "response": str,
    "validation": dict,
}
_ONLY_FOR = {
    "config": ("hf", "tfds"),
    "split": ("hf", "tfds"),
    "data_files": ("hf",),
    "data_dir": ("tfds",),
    "field": ("hf", "tfds", "jsonl", "parquet"),
    "messages": ("hf", "tfds", "jsonl", "parquet"),
    "prompt": ("hf", "tfds", "jsonl", "parquet"),
    "response": ("hf", "tfds", "jsonl", "parquet"),
    "validation": ("hf", "tfds", "jsonl", "parquet", "text", "pyfiles"),  # demo has its own
}
DEFAULT_DEMO = {
    "text": [{"name": "stdlib-prose", "weight": 1.0, "type": "demo", "path": "prose"}],
    "chat": [{"name": "stdlib-sft", "weight": 1.0, "type": "demo", "path": "sft"}],
}


def _fail(where, key, message):
    raise ValueError(f"{where}: {key}: {message}")


def _type_name(types):
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({"str": "a string", "int": "a number", "float": "a number",
                        "list": "a list", "dict": "a mapping"}[t.__name__] for t in types)


def _validate_source(source, where, key, data_format):
    if not isinstance(source, dict):
        _fail(where, key, f"must be a mapping with name/weight/type/path, got {source!r}.")
    for k, value in source.items():
        if k not in SOURCE_KEYS:
            _fail(where, f"{key}.{k}", f"unknown key; expected one of {sorted(SOURCE_KEYS)}.")
        expected = SOURCE_KEYS[k]
        if isinstance(value, bool) or not isinstance(value, expected):
            _fail(where, f"{key}.{k}", f"must be {_type_name(expected)}, got {value!r}.")
    for k in ("name", "weight", "type", "path"):
        if k not in source:
            _fail(where, f"{key}.{k}", "missing (every source needs name, weight, type, path).")
    kind = source["type"]
    if kind not in SOURCE_TYPES:
        _fail(where, f"{key}.type", f"unknown source type {kind!r}; expected one of {list(SOURCE_TYPES)}.")
    weight = source["weight"]
    if not (math.isfinite(weight) and weight > 0):
        _fail(where, f"{key}.weight", f"must be a positive number, got {weight!r}.")
    for k, types in _ONLY_FOR.items():
        if k in source and kind not in types:
            _fail(where, f"{key}.{k}", f"does not apply to type {kind!r} (only {list(types)}).")
    if kind == "demo" and source["path"] not in DEMO_KINDS:
        _fail(where, f"{key}.path", f"unknown demo corpus {source['path']!r}; expected one of {list(DEMO_KINDS)}.")
    if data_format == "chat":
        if kind in ("text", "pyfiles") or (kind == "demo" and source["path"] not in DEMO_CHAT_KINDS):
            _fail(where, f"{key}.type", f"a {kind} source ({source['path']}) holds plain text; "
                  "format: chat needs conversations (demo path: sft or tasks, or messages / prompt+response columns).")
        if "field" in source:
            _fail(where, f"{key}.field", "format: chat reads `messages` or `prompt`+`response`, not `field`.")
        if ("prompt" in source) != ("response" in source):
            _fail(where, f"{key}.prompt", "give both `prompt` and `response` columns, or `messages`.")
        if "messages" in source and "prompt" in source:
            _fail(where, f"{key}.messages", "give `messages` or `prompt`+`response`, not both.")
    else:
        for k in ("messages", "prompt", "response"):
            if k in source:
                _fail(where, f"{key}.{k}", "only for format: chat; text sources read `field`.")
        if kind == "demo" and source["path"] in DEMO_CHAT_KINDS:
            _fail(where, f"{key}.path", f"the {source['path']} demo is conversations; use it with format: chat.")
    if source.get("validation"):
        for k in source["validation"]:
            if k in ("name", "weight", "type", "validation") or k not in SOURCE_KEYS:
                _fail(where, f"{key}.validation.{k}", "validation may override only where the "
                      "data is read from (path, config, split, data_files, data_dir, field, ...).")
        merged = {k: v for k, v in source.items() if k != "validation"}
        _validate_source({**merged, **source["validation"]}, where,
                         f"{key}.validation", data_format)


def _validate_sources(sources, where, key, data_format):
    if not isinstance(sources, list) or not sources:
        _fail(where, key, "must be a non-empty list of sources.")
    names = set()
    for i, source in enumerate(sources):
        _validate_source(source, where, f"{key}[{i}]", data_format)
        if source["name"] in names:
            _fail(where, f"{key}[{i}].name", f"duplicate source name {source['name']!r}; names must be unique.")
        names.add(source["name"])
    total = sum(s["weight"] for s in sources)
    if abs(total - 1.0) > 1e-6:
        _fail(where, f"{key}[{len(sources) - 1}].weight",
              f"source weights sum to {total:g}; they are token shares and must sum to 1.")


def validate_data_config(data_config: dict, where: str) -> None:
    """Check a recipe's `data:` section; raise `ValueError("{where}: data.<key>: ...")`.

    Unknown keys, wrong types, unknown source types or demo corpora, duplicate
    names and weights not summing to 1 are errors. `where` names the file.
    """
    if not isinstance(data_config, dict):
        _fail(where, "data", f"must be a mapping, got {type(data_config).__name__}.")
    for k in data_config:
        if k not in TOP_KEYS:
            _fail(where, f"data.{k}", f"unknown key; expected one of {sorted(TOP_KEYS)}.")
    data_format = data_config.get("format", "text")
    if data_format not in FORMATS:
        _fail(where, "data.format", f"must be one of {list(FORMATS)}, got {data_format!r}.")
    if not isinstance(data_config.get("document_masking", True), bool):
        _fail(where, "data.document_masking", "must be true or false.")
    if data_config.get("overlong", "truncate") not in OVERLONG:
        _fail(where, "data.overlong", f"must be one of {list(OVERLONG)}, got {data_config['overlong']!r}.")
    buffer = data_config.get("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER)
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 0:
        _fail(where, "data.shuffle_buffer",
              f"must be a whole number >= 0 (0 = stored order), got {buffer!r}.")
    if "sources" in data_config:
        _validate_sources(data_config["sources"], where, "data.sources", data_format)
    fraction = data_config.get("validation_fraction")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 <= fraction < 1):
        _fail(where, "data.validation_fraction", f"must be a fraction in [0, 1) or null, got {fraction!r}.")
    if "validation_sources" in data_config:
        _validate_sources(data_config["validation_sources"], where, "data.validation_sources", data_format)
    columns = data_config.get("columns")
    if columns is not None:
        if not isinstance(columns, dict) or any(k not in COLUMN_KEYS or not isinstance(v, str)
                                                for k, v in columns.items()):
            _fail(where, "data.columns", f"must map some of {list(COLUMN_KEYS)} to column names, got {columns!r}.")
    if "demo" in data_config:
        _validate_sources(data_config["demo"], where, "data.demo", data_format)
        for i, source in enumerate(data_config["demo"]):
            if source["type"] != "demo":
                _fail(where, f"data.demo[{i}].type", "demo sources must have type: demo (offline).")


def resolve_sources(data_config, demo, split):
    """The source specs a pipeline reads: `sources` or `demo`, with validation overrides.

    With `data.validation_fraction`, jsonl/parquet sources without their own
    `validation:` get `holdout: fraction` on both splits: the training split
    skips the held-out records, the validation split reads only them.
    """
    data_format = data_config.get("format", "text")
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}.")
    if demo:
        sources = data_config.get("demo") or DEFAULT_DEMO[data_format]
    else:
        if "sources" not in data_config:
            raise ValueError("data.sources: missing; list the sources to read, or run with --demo.")
        sources = data_config["sources"]
    separate = not demo and data_config.get("validation_sources")
    if split == "validation" and separate:
        return [{k: v for k, v in s.items() if k != "validation"} for s in separate]
    fraction = data_config.get("validation_fraction") or 0
    resolved = []
    for i, source in enumerate(sources):
        source = dict(source)
        overrides = source.pop("validation", None)
        held_out = fraction and source["type"] in HOLDOUT_TYPES and not overrides and not separate
        if held_out:
            source["holdout"] = fraction
        elif split == "validation" and source["type"] != "demo":
            if not overrides:
                raise ValueError(
                    f"data.sources[{i}].validation: missing; split='validation' needs where "
                    f"source {source['name']!r} keeps held-out data, e.g. validation: {{split: test}}"
                    + (" (or data.validation_fraction, for jsonl and parquet files)."
                       if source["type"] in HOLDOUT_TYPES else ".")
                )
            source.update(overrides)
        resolved.append(source)
    return resolved
