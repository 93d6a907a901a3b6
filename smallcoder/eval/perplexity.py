"""Perplexity with a sliding window over the model's context.

Each document is tokenized on its own. Windows of `window` tokens (default
the model's context, 1024) start every `stride` tokens (at most `window - 1`);
a window scores only the tokens the previous window did not, so every token
after a document's first is scored exactly once, with at least
`window - stride` tokens of context (as in the Hugging Face perplexity guide,
except that no token is skipped at window starts). The result is token-weighted over all
documents: `perplexity = exp(sum NLL / scored tokens)`.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


def sliding_windows(num_tokens, window, stride):
    """`[(begin, end, first_scored)]` for a document of `num_tokens` tokens.

    The window covers tokens `[begin, end)` and scores tokens
    `[first_scored, end)`. Windows start every `min(stride, window - 1)`
    tokens, so each scored token has at least one token of context in its
    window and every token after the document's first is scored exactly once.
    """
    if not 0 < stride or window < 2:
        raise ValueError(
            f"Need stride > 0 and window >= 2, got stride={stride}, window={window}."
        )
    step = min(stride, window - 1)
    spans, begin, scored_until = [], 0, 1
    while scored_until < num_tokens:
        end = min(begin + window, num_tokens)
        spans.append((begin, end, scored_until))
        scored_until = end
        begin += step
    return spans


def token_nll(causal_lm, token_ids, padding_mask):
    """Next-token NLL. `token_ids`, `padding_mask`: int32 (B, T) -> float64 (B, T - 1)
    where entry `t` is the NLL of token `t + 1` given tokens `<= t`.

    The forward pass is compiled (`predict_on_batch`, one compilation per
    shape); the log-softmax runs in NumPy one row at a time.
    """
    logits = causal_lm.predict_on_batch(
        {"token_ids": token_ids, "padding_mask": padding_mask}
    )
    nll = np.zeros((token_ids.shape[0], token_ids.shape[1] - 1))
    for row in range(token_ids.shape[0]):
        z = np.asarray(logits[row, :-1], "float32")  # (T - 1, V)
        z = z - z.max(-1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(-1))
        nll[row] = log_norm - z[np.arange(len(z)), token_ids[row, 1:]]
    return nll


def perplexity(causal_lm, texts, window=None, stride=512, batch_size=4, progress=False):
    """Token-weighted perplexity of `causal_lm` over `texts`.

    Args:
        causal_lm: a `SmallCoderCausalLM` with a tokenizer.
        texts: an iterable of document strings.
        window: tokens per window; default (and at most) the model's context.
        stride: tokens between window starts (capped at `window - 1`).
        batch_size: windows per forward pass.

    Returns:
        `{"perplexity", "nll_per_token", "tokens", "documents", "window",
        "stride"}` (`tokens` = scored tokens).
    """
    from tqdm.auto import tqdm

    context = causal_lm.backbone.max_sequence_length
    window = window or context
    if window > context:
        raise ValueError(
            f"window={window} exceeds the model's {context}-token context."
        )
    total_nll, total_tokens, documents, pending = 0.0, 0, 0, []

    def flush():
        nonlocal total_nll, total_tokens
        length = max(len(ids) for ids, _ in pending)
        length = min(window, -(-length // 64) * 64)  # fewer distinct shapes to compile
        token_ids = np.zeros((batch_size, length), "int32")
        mask = np.zeros((batch_size, length), "int32")
        for row, (ids, _) in enumerate(pending):
            token_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        nll = token_nll(causal_lm, token_ids, mask)
        for row, (ids, skip) in enumerate(pending):
            # nll[row, t] scores token t + 1; score tokens skip..len(ids)-1.
            scored = nll[row, skip - 1 : len(ids) - 1]
            total_nll += float(scored.sum())
            total_tokens += len(scored)
        pending.clear()

    for text in tqdm(texts, desc="perplexity", disable=not progress, unit="doc"):
        ids = causal_lm.tokenizer.encode(text)
        documents += 1
        for begin, end, first in sliding_windows(len(ids), window, stride):
            pending.append((ids[begin:end], first - begin))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    if total_tokens == 0:
        raise ValueError("No tokens to score: every document is shorter than 2 tokens.")
    nll = total_nll / total_tokens
    return {
        "perplexity": math.exp(nll),
        "nll_per_token": nll,
        "tokens": total_tokens,
        "documents": documents,
        "window": window,
        "stride": min(stride, window - 1),
    }


_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".md", ".py", ".gz", ".parquet", ".csv")


def read_texts(source, text_field="text", split="train", limit=None):
    """Documents from a local file or a Hugging Face dataset.

    Args:
        source: a `.txt` file (one document), a `.jsonl` file (one document per
            line, in `text_field`), or a dataset id `owner/name` or
            `owner/name:config` streamed with `datasets.load_dataset`.
        limit: at most this many documents.

    Returns:
        An iterator of document strings. A missing file, or a name that is
        neither a file nor a dataset id, raises here, before anything is read.
    """
    import itertools

    if os.path.exists(source):
        if source.endswith((".jsonl", ".json")):
            rows = _jsonl_texts(source, text_field)
        else:
            with open(source, encoding="utf-8") as f:
                rows = iter([f.read()])
    elif _looks_like_a_file(source):
        raise FileNotFoundError(f"No file {source!r} (--data); pass an existing .txt or .jsonl file, "
                                "or a dataset id such as owner/name.")
    else:
        rows = _dataset_texts(source, text_field, split)
    return itertools.islice(rows, limit)


def _looks_like_a_file(source):
    """Not a dataset id (`owner/name[:config]`): a file suffix, a path prefix, or not exactly one `/`."""
    name = source.partition(":")[0]
    return (source.endswith(_FILE_SUFFIXES) or source.startswith((".", "/", "~"))
            or name.count("/") != 1)


def _jsonl_texts(path, field):
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}: line {number}: not valid JSON ({e}).") from None
                if not isinstance(row, dict) or field not in row:
                    raise ValueError(f"{path}: line {number} has no {field!r} key (--text-field).")
                yield row[field]


def _dataset_texts(source, field, split):
    from smallcoder import hub_access

    if "/" not in source and ":" not in source:
        raise FileNotFoundError(
            f"No file {source!r}, and it is not a dataset id (owner/name)."
        )
    reason = hub_access.unavailable_reason(datasets=True)
    if reason:
        raise RuntimeError(
            f"Cannot use the Hugging Face Hub to stream {source!r} ({reason}). "
            "Pass a local .txt or .jsonl file instead."
        )
    import datasets

    name, _, config = source.partition(":")
    return (row[field] for row in datasets.load_dataset(name, config or None, split=split, streaming=True))
