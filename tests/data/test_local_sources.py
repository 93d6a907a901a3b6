"""Local sources: parquet, gzipped jsonl, text files; one pass reads every document once."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from smallcoder.data import build_pipeline


def read_all(tokenizer, source):
    source = {"name": "s", "weight": 1.0, **source, "validation": {"path": source["path"]}}
    pipeline = build_pipeline({"shuffle_buffer": 0, "sources": [source]}, tokenizer,
                              sequence_length=512, batch_size=1,
                              split="validation")
    rows = [x["token_ids"][0][x["padding_mask"][0] > 0] for x, _, _ in pipeline]
    assert len(rows) == 1  # everything fits one window here
    return tokenizer.decode(rows[0]).split("<|endoftext|>")[:-1], pipeline.stats()["sources"]["s"]


def test_parquet(tmp_path, tokenizer):
    for k in range(2):  # two files, several row groups each
        table = pa.Table.from_pylist([{"content": f"p{k} row {i}", "n": i} for i in range(7)])
        pq.write_table(table, tmp_path / f"part{k}.parquet", row_group_size=3)
    docs, stats = read_all(tokenizer, {"type": "parquet", "path": str(tmp_path), "field": "content"})
    assert docs == [f"p{k} row {i}" for k in range(2) for i in range(7)]


def test_jsonl_gz_and_glob(tmp_path, tokenizer):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps({"body": f"gz {i}"}) for i in range(3)) + "\n\n")
    docs, _ = read_all(tokenizer, {"type": "jsonl", "path": str(tmp_path / "*.jsonl.gz"), "field": "body"})
    assert docs == ["gz 0", "gz 1", "gz 2"]


def test_text_files(tmp_path, tokenizer):
    (tmp_path / "b.txt").write_text("second file")
    (tmp_path / "a.md").write_text("first file")
    (tmp_path / "empty.txt").write_text("  \n")
    docs, stats = read_all(tokenizer, {"type": "text", "path": str(tmp_path)})
    assert docs == ["first file", "second file"] and stats["bad"] == {"empty": 1}
