"""Data benchmarks: `bench_data` (pipeline throughput next to raw `tokenizers.encode_batch` on the
same text) and `bench_resume` (what restoring a position costs, at several depths)."""

from __future__ import annotations

import json
import os
import tempfile
import time

from smallcoder.data.config import DEFAULT_SHUFFLE_BUFFER


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


def write_shards(texts, folder, shards):
    """`texts` as `shards` jsonl files of consecutive documents (`part-00000.jsonl`, ...)."""
    os.makedirs(folder, exist_ok=True)
    for k in range(shards):
        with open(os.path.join(folder, f"part-{k:05d}.jsonl"), "w") as f:
            for text in texts[k * len(texts) // shards:(k + 1) * len(texts) // shards]:
                f.write(json.dumps({"text": text}) + "\n")
    return folder


def bench_data(tokenizer=None, *, megabytes=8.0, sequence_length=1024, batch_size=8, repeats=5,
               shards=16, shuffle_buffer=DEFAULT_SHUFFLE_BUFFER):
    """Time the pipeline (jsonl -> tokenize -> pack) and raw `encode_batch` on the same documents.

    The documents are written as `shards` jsonl files. The pipeline reads
    them shuffled (`shuffle_buffer`, see `smallcoder.data.order`) and, for
    comparison, in stored order (`shuffle_buffer: 0`). All runs are repeated
    `repeats` times, alternating; the best time of each counts (these
    machines are shared and noisy).

    The pipeline tokenizes with `encode_batch_fast` (same ids, no offsets);
    the reference is plain `encode_batch`, and `encode_batch_fast` is timed
    too (`raw_fast_tokens_per_s`, `ratio_vs_fast`) so the gain is visible.

    Returns:
        dict with `documents`, `megabytes`, `text_tokens` (without EOS),
        `raw_tokens_per_s`, `pipeline_tokens_per_s` (text tokens the shuffled
        pipeline tokenized and packed per second, same count as raw), `ratio`
        (wall time, best of `repeats`), `cpu_ratio` (process CPU seconds, all
        threads), `stored_order_tokens_per_s` and `ratio_stored_order` (the
        pipeline with `shuffle_buffer: 0`), and the `encode_batch_fast` figures.
    """
    from smallcoder.data import build_pipeline

    if tokenizer is None:
        from smallcoder.demo_tokenizer import demo_tokenizer

        tokenizer = demo_tokenizer()
    texts = bench_corpus(megabytes)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_shards(texts, os.path.join(tmp, "bench"), shards)
        source = {"name": "bench", "weight": 1.0, "type": "jsonl", "path": path,
                  "validation": {"path": path}}
        times = {"raw": [], "raw_fast": [], "pipeline": [], "stored_order": []}
        cpu = {name: [] for name in times}

        def timed(name, fn):
            wall, cpu_start = time.perf_counter(), _cpu()
            result = fn()
            times[name].append(time.perf_counter() - wall)
            cpu[name].append(_cpu() - cpu_start)
            return result

        def run_pipeline(buffer):
            config = {"shuffle_buffer": buffer, "sources": [source]}
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
            packed = timed("pipeline", lambda: run_pipeline(shuffle_buffer))
            stored = timed("stored_order", lambda: run_pipeline(0))
    for name, count in (("shuffled", packed), ("stored-order", stored)):
        if count - len(texts) != raw_tokens:
            raise AssertionError(f"the {name} pipeline packed {count - len(texts)} text tokens, "
                                 f"raw has {raw_tokens}")
    rate = {k: raw_tokens / min(v) for k, v in times.items() if v}
    result = {
        "documents": len(texts),
        "megabytes": round(sum(len(t.encode()) for t in texts) / 1e6, 2),
        "text_tokens": raw_tokens,
        "shards": shards,
        "shuffle_buffer": shuffle_buffer,
        "cores": os.cpu_count(),
        "raw_tokens_per_s": round(rate["raw"]),
        "pipeline_tokens_per_s": round(rate["pipeline"]),
        "ratio": round(rate["pipeline"] / rate["raw"], 3),
        # CPU seconds (all threads) per run: steadier than wall time on a shared machine.
        "cpu_ratio": round(min(cpu["raw"]) / min(cpu["pipeline"]), 3),
        "stored_order_tokens_per_s": round(rate["stored_order"]),
        "ratio_stored_order": round(rate["stored_order"] / rate["raw"], 3),
    }
    if times["raw_fast"]:
        result["raw_fast_tokens_per_s"] = round(rate["raw_fast"])
        result["ratio_vs_fast"] = round(rate["pipeline"] / rate["raw_fast"], 3)
    return result


def bench_resume(tokenizer=None, *, file_type="jsonl", shards=64, documents_per_shard=2000,
                 depths=(0.0, 0.01, 0.5, 0.99), shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
                 sequence_length=1024, batch_size=8, seed=0):
    """What restoring a data position costs, at several depths into a local many-shard dataset.

    Writes `shards` files (`jsonl`, or `parquet` with row groups of 500 rows)
    of `documents_per_shard` documents each (the `bench_corpus` texts,
    repeated). For each depth (a fraction of one epoch), a reader is run up to
    there without tokenizing; the pipeline state at that point (the source's
    chunk starting there, nothing carried over in the packer) is loaded into a
    fresh pipeline and `load_state_dict` + its first batch are timed.

    Returns:
        dict with `documents`, `megabytes`, `tokens_per_byte` (measured on
        the corpus), and `depths`: per depth `records`, `megabytes` and
        estimated `tokens` consumed before it, `restore_s` (load + first
        batch) and `forward_s` (reading up to it without tokenizing: what
        skipping from the start would cost).
    """
    from smallcoder.data import build_pipeline
    from smallcoder.data.sources import make_reader

    if tokenizer is None:
        from smallcoder.demo_tokenizer import demo_tokenizer

        tokenizer = demo_tokenizer()
    corpus = bench_corpus(8.0)
    texts = [corpus[i % len(corpus)] for i in range(shards * documents_per_shard)]
    sample = corpus[:2000]
    tokens_per_byte = (sum(len(e.ids) for e in tokenizer.backend.encode_batch(sample))
                       / sum(len(t.encode()) for t in sample))
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "data")
        if file_type == "jsonl":
            write_shards(texts, folder, shards)
        else:
            _write_parquet_shards(texts, folder, shards)
        source = {"name": "bench", "weight": 1.0, "type": file_type, "path": folder}
        config = {"shuffle_buffer": shuffle_buffer, "sources": [source]}

        def pipeline():
            return build_pipeline(config, tokenizer, sequence_length=sequence_length,
                                  batch_size=batch_size, seed=seed)

        with pipeline() as p:
            blank = p.state_dict()
        rows = []
        for depth in depths:
            reader = make_reader(source, split="train", seed=seed, shard_index=0, shard_count=1,
                                 repeat=True, shuffle_buffer=shuffle_buffer)
            records, size, start = int(depth * len(texts)), 0, time.perf_counter()
            for _ in range(records):
                size += len(reader.next_record()["text"].encode())
            forward = time.perf_counter() - start
            state = json.loads(json.dumps(blank))
            state["sources"][0]["chunk_start"] = reader.tell()
            with pipeline() as p:
                start = time.perf_counter()
                p.load_state_dict(state)
                next(p)
                restore = time.perf_counter() - start
            rows.append({"depth": depth, "records": records, "megabytes": round(size / 1e6, 1),
                         "tokens": round(size * tokens_per_byte), "restore_s": round(restore, 3),
                         "forward_s": round(forward, 2)})
    return {"file_type": file_type, "shards": shards, "documents": len(texts),
            "megabytes": round(sum(len(t.encode()) for t in texts) / 1e6, 1),
            "shuffle_buffer": shuffle_buffer, "tokens_per_byte": round(tokens_per_byte, 4),
            "depths": rows}


def _write_parquet_shards(texts, folder, shards):
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    for k in range(shards):
        part = texts[k * len(texts) // shards:(k + 1) * len(texts) // shards]
        pq.write_table(pa.Table.from_pydict({"text": part}),
                       os.path.join(folder, f"part-{k:05d}.parquet"), row_group_size=500)


def _cpu():
    t = os.times()
    return t.user + t.system
