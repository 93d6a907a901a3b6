"""Hugging Face `datasets` streaming, on local files through the same code path."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import assert_batches_equal, batches, write_jsonl

from smallcoder.data import build_pipeline
from smallcoder.data.sources import SourceError


def hf_source(files, builder="json", **kw):
    return {"name": "hf", "weight": 1.0, "type": "hf", "path": builder, "data_files": files, **kw}


def json_files(tmp_path, n_files=2, n=30):
    return [write_jsonl(tmp_path / f"part{k}.jsonl",
                        [{"text": f"file {k} row {i} " * (i % 5 + 1)} for i in range(n)])
            for k in range(n_files)]


def test_streaming_json_reads_every_record(tmp_path, tokenizer):
    files = json_files(tmp_path)
    source = hf_source(files, validation={"data_files": files})
    pipeline = build_pipeline({"shuffle_buffer": 0, "sources": [source]}, tokenizer,
                              sequence_length=64,
                              batch_size=2, split="validation")
    *_, last = pipeline
    assert pipeline.stats()["sources"]["hf"] == {"records": 60, "documents": 60, "bad": {}}
    x, _, _ = last
    assert "file 1 row 29" in tokenizer.decode(x["token_ids"][x["padding_mask"] > 0])


def test_streaming_parquet_messages(tmp_path, tokenizer):
    rows = [{"conversation": [{"role": "user", "content": f"q{i}"},
                              {"role": "assistant", "content": f"a{i}"}]} for i in range(10)]
    path = str(tmp_path / "chat.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    source = hf_source([path], builder="parquet", messages="conversation")
    config = {"format": "chat", "shuffle_buffer": 0, "sources": [source]}
    x, y, w = next(build_pipeline(config, tokenizer, sequence_length=64, batch_size=1))
    assert tokenizer.decode(y[0][w[0] == 1]).startswith(" a0<|endoftext|> a1<|endoftext|>")


def test_streaming_shards_by_process(tmp_path, tokenizer):
    files = json_files(tmp_path, n_files=4, n=5)
    docs = []
    for rank in range(2):
        source = hf_source(files, validation={"data_files": files})
        p = build_pipeline({"sources": [source]}, tokenizer, sequence_length=512, batch_size=1,
                           split="validation", shard_index=rank, shard_count=2)
        list(p)
        docs.append(p.stats()["sources"]["hf"]["documents"])
    assert docs == [10, 10]


def test_streaming_resume(tmp_path, tokenizer):
    files = json_files(tmp_path, n=40)

    def make():
        return build_pipeline({"sources": [hf_source(files)]}, tokenizer, sequence_length=16, batch_size=2)

    reference = make()
    batches(reference, 11)
    state = json.loads(json.dumps(reference.state_dict()))
    expected = batches(reference, 40)  # crosses the end of the data (second epoch)
    resumed = make()
    resumed.load_state_dict(state)
    assert_batches_equal(batches(resumed, 40), expected)


@pytest.mark.parametrize("offline", [True, False])
def test_unreachable_hub_fails_fast(monkeypatch, tokenizer, offline):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    source = {"name": "web", "weight": 1.0, "type": "hf", "path": "HuggingFaceFW/fineweb-edu",
              "config": "sample-10BT"}
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"'HuggingFaceFW/fineweb-edu'.*--demo.*local"):
        build_pipeline({"sources": [source]}, tokenizer, sequence_length=16, batch_size=1)
    assert time.monotonic() - start < 10
