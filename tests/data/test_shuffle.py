"""Shuffled reading on a 40-shard dataset written here, every record tagged with its shard.

A seeded shard order per epoch, data streams on disjoint shards that together
cover the source, a shuffle buffer over interleaved shards, exact resume of all
of it, and `shuffle_buffer: 0` as the stored order.
"""

import collections
import glob
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import assert_batches_equal, batches, write_jsonl

from smallcoder.data import build_pipeline
from smallcoder.data.sources import END, SourceError, make_reader
from smallcoder.data.streams import StreamBatches, merge_states

SHARDS, PER_SHARD = 40, 150  # in stored order, the first 1,000 documents span 7 shards


def text(k, i):
    return f"s{k} d{i} " + "words " * (i % 7)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """`{"jsonl": folder, "parquet": folder}`: 40 shards of 60 tagged records each."""
    root = tmp_path_factory.mktemp("shards")
    (root / "jsonl").mkdir()
    (root / "parquet").mkdir()
    for k in range(SHARDS):
        records = [{"text": text(k, i), "shard": k} for i in range(PER_SHARD)]
        write_jsonl(root / "jsonl" / f"part-{k:03d}.jsonl", records)
        pq.write_table(
            pa.Table.from_pylist(records),
            root / "parquet" / f"part-{k:03d}.parquet",
            row_group_size=8,
        )  # 8 row groups: left-over shards split by row group
    return {kind: str(root / kind) for kind in ("jsonl", "parquet")}


def source(path, kind="jsonl", name="web", weight=1.0):
    return {"name": name, "weight": weight, "type": kind, "path": path}


def documents(tokenizer, pipeline, n):
    """The first `n` documents the pipeline's (only) source hands to packing, decoded."""
    stream = pipeline.streams[0]
    return [tokenizer.decode(stream.next_document()[:-1]) for _ in range(n)]


def shard_of(doc):
    return int(doc.split()[0][1:])


def one_epoch(spec, stream, streams, shuffle_buffer=100, seed=0):
    """`[(shard, text), ...]`: every record stream `stream` of `streams` reads in epoch 0."""
    reader = make_reader(
        spec,
        split="train",
        seed=seed,
        shard_index=stream,
        shard_count=streams,
        repeat=False,
        shuffle_buffer=shuffle_buffer,
    )
    records = []
    while (record := reader.next_record()) is not END:
        records.append((shard_of(record["text"]), record["text"]))
    return records


@pytest.mark.parametrize("buffer", [200, None, 0])
def test_the_first_documents_come_from_many_shards(shards, tokenizer, buffer):
    config = {"sources": [source(shards["jsonl"])]}
    if buffer is not None:
        config["shuffle_buffer"] = buffer
    docs = documents(
        tokenizer, build_pipeline(config, tokenizer, sequence_length=64, batch_size=2), 1000
    )
    counts = collections.Counter(map(shard_of, docs))
    if buffer == 0:  # the stored order, for contrast
        assert sorted(counts) == list(range(7))
        return
    assert len(counts) >= 10, counts
    assert max(counts.values()) <= 100, counts  # no shard dominates (stored order: 150 each)


def test_same_seed_same_order_another_seed_another_order(shards, tokenizer):
    config = {"shuffle_buffer": 300, "sources": [source(shards["jsonl"])]}

    def first(seed):
        return documents(
            tokenizer,
            build_pipeline(config, tokenizer, sequence_length=64, batch_size=2, seed=seed),
            1000,
        )

    once = first(1)
    assert first(1) == once
    other = first(2)
    assert other != once and sorted(set(other)) != sorted(set(once))  # other documents first, too


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
@pytest.mark.parametrize("streams", [2, 3, 64])
def test_streams_read_disjoint_records_that_cover_the_source(shards, kind, streams):
    """2 streams (two processes' own): whole shards each; 3: one shard left over, split
    inside (by row group for parquet); 64: more streams than shards, every shard split."""
    spec = source(shards[kind], kind)
    per_stream = [one_epoch(spec, s, streams) for s in range(streams)]
    everything = [record for records in per_stream for record in records]
    assert sorted(t for _, t in everything) == sorted(
        text(k, i) for k in range(SHARDS) for i in range(PER_SHARD)
    )
    assert all(per_stream)
    if streams == 2:
        first, second = ({k for k, _ in records} for records in per_stream)
        assert not first & second and first | second == set(range(SHARDS))
        assert len(first) == len(second) == SHARDS // 2


def test_shuffle_buffer_0_is_the_stored_order(shards, tokenizer):
    config = {"shuffle_buffer": 0, "sources": [source(shards["jsonl"])]}
    docs = documents(
        tokenizer,
        build_pipeline(config, tokenizer, sequence_length=64, batch_size=2),
        SHARDS * PER_SHARD,
    )
    assert docs == [text(k, i) for k in range(SHARDS) for i in range(PER_SHARD)]
    # One file over 2 streams: every other record, as before shuffling existed.
    path = sorted(glob.glob(shards["jsonl"] + "/*.jsonl"))[0]
    for s in range(2):
        assert [t for _, t in one_epoch(source(path), s, 2, shuffle_buffer=0)] == [
            text(0, i) for i in range(s, PER_SHARD, 2)
        ]


def test_the_order_changes_every_epoch(shards):
    spec = source(shards["jsonl"])
    reader = make_reader(
        spec, split="train", seed=0, shard_index=0, shard_count=1, repeat=True, shuffle_buffer=100
    )
    epochs = [[reader.next_record()["text"] for _ in range(SHARDS * PER_SHARD)] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    assert reader.plan(0) != reader.plan(1)


@pytest.fixture
def small_chunks(monkeypatch):
    """Tokenize 23 documents at a time, so that saved positions fall inside blocks and shards."""
    monkeypatch.setattr("smallcoder.data.documents.CHUNK_DOCUMENTS", 23)


def stream_batches(config, tokenizer, rows=None, seed=3):
    return StreamBatches(
        config, tokenizer, sequence_length=64, micro_batch=4, num_streams=2, rows=rows, seed=seed
    )


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """12 jsonl shards and 11 parquet shards (one left over for 2 streams) of 20 records each."""
    root = tmp_path_factory.mktemp("small")
    (root / "jsonl").mkdir()
    (root / "parquet").mkdir()
    for k in range(12):
        write_jsonl(root / "jsonl" / f"{k:02d}.jsonl", [{"text": text(k, i)} for i in range(20)])
    for k in range(11):
        pq.write_table(
            pa.Table.from_pylist([{"text": text(100 + k, i)} for i in range(20)]),
            root / "parquet" / f"{k:02d}.parquet",
            row_group_size=4,
        )
    return {kind: str(root / kind) for kind in ("jsonl", "parquet")}


def mixed_config(shards, buffer=37):
    return {
        "shuffle_buffer": buffer,
        "sources": [
            source(shards["jsonl"], weight=0.6),
            source(shards["parquet"], "parquet", "pq", 0.4),
        ],
    }


@pytest.mark.parametrize("buffer", [37, 0])
def test_resume_with_shuffling_is_exact_and_independent_of_processes(
    small_shards, tokenizer, buffer, small_chunks
):
    """Two 'processes' (rows 0-1 and 2-3) save their streams; one process resumes both.

    Positions are saved inside blocks, inside shards and in later epochs.
    """
    config = mixed_config(small_shards, buffer)
    processes = [stream_batches(config, tokenizer, rows) for rows in ((0, 2), (2, 4))]
    single = stream_batches(config, tokenizer)
    for n in (5, 60, 150):
        for _ in range(n):
            x, y, w = next(single)
            halves = [next(p) for p in processes]
            assert (
                x["token_ids"] == [*halves[0][0]["token_ids"], *halves[1][0]["token_ids"]]
            ).all()
        state = json.loads(json.dumps(merge_states([p.state_dict() for p in processes])))
        expected = batches(single, 40)
        for p in processes:
            batches(p, 40)
        resumed = stream_batches(config, tokenizer)
        resumed.load_state_dict(state)
        assert_batches_equal(batches(resumed, 40), expected)
        assert resumed.token_counts() == single.token_counts()
    epochs = [s.reader.epoch for p in single.pipelines for s in p.streams]
    assert min(epochs) >= 2, epochs


def test_resume_state_is_small(small_shards, tokenizer):
    """The state holds cursors, not the buffer's records: well under 2 KB per source and stream."""
    config = mixed_config(small_shards, buffer=10_000)
    stream = stream_batches(config, tokenizer)
    batches(stream, 20)
    assert len(json.dumps(stream.state_dict())) < 2 * 2 * 2048


def test_a_changed_shard_count_is_named_on_resume(tmp_path, tokenizer):
    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(4):
        write_jsonl(folder / f"{k}.jsonl", [{"text": text(k, i)} for i in range(20)])
    config = {"sources": [source(str(folder))]}
    pipeline = build_pipeline(config, tokenizer, sequence_length=16, batch_size=2)
    batches(pipeline, 3)
    state = pipeline.state_dict()
    write_jsonl(folder / "4.jsonl", [{"text": "new"}])
    with pytest.raises(SourceError, match=r"Source 'web' had 4 shards .* has 5 now"):
        build_pipeline(config, tokenizer, sequence_length=16, batch_size=2).load_state_dict(state)


def test_hf_parquet_reads_by_row_group_and_resumes(shards, small_shards, tokenizer, small_chunks):
    files = sorted(glob.glob(shards["parquet"] + "/*.parquet"))
    spec = {"name": "hf", "weight": 1.0, "type": "hf", "path": "parquet", "data_files": files}
    per_stream = [one_epoch(spec, s, 3) for s in range(3)]
    assert sorted(t for records in per_stream for _, t in records) == sorted(
        text(k, i) for k in range(SHARDS) for i in range(PER_SHARD)
    )
    spec["data_files"] = sorted(glob.glob(small_shards["parquet"] + "/*.parquet"))
    config = {"shuffle_buffer": 50, "sources": [spec]}

    def make():
        return build_pipeline(config, tokenizer, sequence_length=64, batch_size=2, seed=5)

    reference = make()
    for n in (7, 60):  # the second position is in a later epoch
        batches(reference, n)
        state = json.loads(json.dumps(reference.state_dict()))
        expected = batches(reference, 20)
        resumed = make()
        resumed.load_state_dict(state)
        assert_batches_equal(batches(resumed, 20), expected)
    assert reference.streams[0].reader.epoch >= 1


def test_gzipped_jsonl_shards_resume(tmp_path, tokenizer, small_chunks):
    """A .jsonl.gz cursor is a byte offset in the decompressed stream."""
    import gzip

    for k in range(5):
        with gzip.open(tmp_path / f"{k}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps({"text": text(k, i)}) + "\n" for i in range(30))
    config = {"shuffle_buffer": 7, "sources": [source(str(tmp_path / "*.jsonl.gz"))]}

    def make():
        return build_pipeline(config, tokenizer, sequence_length=32, batch_size=2, seed=1)

    reference = make()
    batches(reference, 9)
    state = json.loads(json.dumps(reference.state_dict()))
    assert state["sources"][0]["chunk_start"]["start"]["open"][0][1][0] > 0  # mid-file
    expected = batches(reference, 30)
    resumed = make()
    resumed.load_state_dict(state)
    assert_batches_equal(batches(resumed, 30), expected)
