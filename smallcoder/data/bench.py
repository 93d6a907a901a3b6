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

    The pipeline tokenizes with `encode_batch_fast` (same ids, no offsets);
    the reference is plain `encode_batch`, and `encode_batch_fast` is timed
    too (`raw_fast_tokens_per_s`, `ratio_vs_fast`) so the gain is visible.

    Returns:
        dict with `documents`, `megabytes`, `text_tokens` (without EOS),
        `raw_tokens_per_s`, `pipeline_tokens_per_s` (text tokens the pipeline
        tokenized and packed per second, same count as raw), `ratio` (wall
        time, best of `repeats`), `cpu_ratio` (process CPU seconds, all
        threads), and the `encode_batch_fast` figures.
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
        times = {"raw": [], "raw_fast": [], "pipeline": []}
        cpu = {"raw": [], "raw_fast": [], "pipeline": []}

        def timed(name, fn):
            wall, cpu_start = time.perf_counter(), _cpu()
            result = fn()
            times[name].append(time.perf_counter() - wall)
            cpu[name].append(_cpu() - cpu_start)
            return result

        def run_pipeline():
            pipeline = build_pipeline(config, tokenizer, sequence_length=sequence_length,
                                      batch_size=batch_size, split="validation")
            for _ in pipeline:
                pass
            pipeline.close()
            return sum(pipeline.token_counts().values())

        backend = tokenizer.backend
        for _ in range(repeats):
            encodings = timed("raw", lambda: backend.encode_batch(texts, add_special_tokens=False))
            raw_tokens = sum(len(e.ids) for e in encodings)
            del encodings
            if hasattr(backend, "encode_batch_fast"):
                timed("raw_fast", lambda: backend.encode_batch_fast(texts, add_special_tokens=False))
            packed = timed("pipeline", run_pipeline)
    if packed - len(texts) != raw_tokens:
        raise AssertionError(f"the pipeline packed {packed - len(texts)} text tokens, raw has {raw_tokens}")
    rate = {k: raw_tokens / min(v) for k, v in times.items() if v}
    result = {
        "documents": len(texts),
        "megabytes": round(sum(len(t.encode()) for t in texts) / 1e6, 2),
        "text_tokens": raw_tokens,
        "cores": os.cpu_count(),
        "raw_tokens_per_s": round(rate["raw"]),
        "pipeline_tokens_per_s": round(rate["pipeline"]),
        "ratio": round(rate["pipeline"] / rate["raw"], 3),
        # CPU seconds (all threads) per run: steadier than wall time on a shared machine.
        "cpu_ratio": round(min(cpu["raw"]) / min(cpu["pipeline"]), 3),
    }
    if times["raw_fast"]:
        result["raw_fast_tokens_per_s"] = round(rate["raw_fast"])
        result["ratio_vs_fast"] = round(rate["pipeline"] / rate["raw_fast"], 3)
    return result


def _cpu():
    t = os.times()
    return t.user + t.system
