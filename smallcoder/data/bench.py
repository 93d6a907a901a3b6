"""`bench_data`: pipeline throughput next to raw `tokenizers.encode_batch` on the same text."""

from __future__ import annotations

import json
import os
import tempfile
import time


def bench_corpus(megabytes):
    """About `megabytes` MB of demo text, a third each of stdlib code files, prose and math problems.

    Document sizes range from ~200 bytes (math) to ~100 KB (code), so the
    per-document costs of the pipeline show.
    """
    from smallcoder.data import demo

    texts = []
    for kind in ("code", "prose", "math"):
        size = 0
        for key in demo.demo_keys(kind, "train"):
            for record in demo.demo_records(kind, key):
                if isinstance(record, dict) and record.get("text"):
                    texts.append(record["text"])
                    size += len(record["text"].encode())
            if size >= megabytes * 1e6 / 3:
                break
    return texts


def bench_data(tokenizer=None, *, megabytes=8.0, sequence_length=1024, batch_size=8, repeats=5):
    """Time the pipeline (jsonl -> tokenize -> pack) and raw `encode_batch` on the same documents.

    Both runs are repeated `repeats` times, alternating; the best time of each
    counts (these machines are shared and noisy).

    Returns:
        dict with `documents`, `megabytes`, `text_tokens` (without EOS),
        `raw_tokens_per_s`, `pipeline_tokens_per_s` (text tokens the pipeline
        tokenized and packed per second, same count as raw) and `ratio`.
    """
    from smallcoder.data import build_pipeline

    if tokenizer is None:
        from smallcoder.demo_tokenizer import demo_tokenizer

        tokenizer = demo_tokenizer()
    texts = bench_corpus(megabytes)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.jsonl")
        with open(path, "w") as f:
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
        config = {"sources": [{"name": "bench", "weight": 1.0, "type": "jsonl", "path": path,
                               "validation": {"path": path}}]}
        raw_times, pipe_times, raw_tokens, packed = [], [], 0, 0
        for _ in range(repeats):
            start = time.perf_counter()
            encodings = tokenizer.backend.encode_batch(texts, add_special_tokens=False)
            raw_times.append(time.perf_counter() - start)
            raw_tokens = sum(len(e.ids) for e in encodings)
            del encodings

            start = time.perf_counter()
            pipeline = build_pipeline(config, tokenizer, sequence_length=sequence_length,
                                      batch_size=batch_size, split="validation")
            for _ in pipeline:
                pass
            pipe_times.append(time.perf_counter() - start)
            packed = sum(pipeline.token_counts().values())
    if packed - len(texts) != raw_tokens:
        raise AssertionError(f"the pipeline packed {packed - len(texts)} text tokens, raw has {raw_tokens}")
    raw_rate, pipe_rate = raw_tokens / min(raw_times), raw_tokens / min(pipe_times)
    return {
        "documents": len(texts),
        "megabytes": round(sum(len(t.encode()) for t in texts) / 1e6, 2),
        "text_tokens": raw_tokens,
        "raw_tokens_per_s": round(raw_rate),
        "pipeline_tokens_per_s": round(pipe_rate),
        "ratio": round(pipe_rate / raw_rate, 3),
        "cores": os.cpu_count(),
    }
