"""Record readers: one per source type, each seekable to a saved position.

A reader yields raw records (a dict, or `str`/`bytes` for whole-file
sources) one at a time from `next_record()`, for one data stream (shard
`shard_index` of `shard_count`, see `smallcoder.data.streams`). `tell()` is
a JSON-serialisable position of the next record and `seek(position)` returns
there exactly, which is what exact resume rests on. A training reader
repeats (epoch += 1) when it runs out; a validation reader returns `END`
after one pass.

Every type but `demo` is a `ShardedReader`: its source is a list of shards
(files; a Hugging Face dataset's data files; a tfds split's files), read in
the order `smallcoder.data.order` gives (seeded shard order, this stream's
shards, interleaved, then shuffled in blocks of `shuffle_buffer` records).
Its positions are `{"epoch", "shards", "block", "start", "index"}`, where
`start` holds each open shard's cursor: a byte offset (jsonl), a
`(row group, row)` (parquet) or a record count (file, `datasets`, tfds).
The demo corpora keep `[epoch, index]` over their own seeded item order.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import json
import os
import random

from smallcoder.data import holdout
from smallcoder.data.order import EpochOrder, shard_plan

END = object()  # a non-repeating reader has no more records
PARQUET_BATCH_ROWS = 256  # rows decoded at a time per open parquet shard


class Several(list):
    """Several records made from one item (a demo module gives many examples)."""


class BadRecord:
    """A record that could not be read; `reason` is counted by the pipeline."""

    def __init__(self, reason):
        self.reason = reason


class SourceError(RuntimeError):
    """A source cannot be opened or read; the message names it and says what to do."""


def _files(spec, suffixes):
    """Sorted files under `path`: a file, a folder (searched recursively) or a glob."""
    path = os.path.expanduser(spec["path"])
    if os.path.isdir(path):
        found = [
            os.path.join(d, f)
            for d, _, names in os.walk(path)
            for f in names
            if f.endswith(suffixes)
        ]
    elif any(c in path for c in "*?["):
        found = glob.glob(path, recursive=True)
    elif os.path.isfile(path):
        found = [path]
    else:
        found = []
    found = sorted(f for f in found if os.path.isfile(f))
    if not found:
        raise SourceError(
            f"Source {spec['name']!r}: no {'/'.join(suffixes)} files at {spec['path']!r}. "
            "Check `path` (a file, folder or glob), or run with --demo."
        )
    return found


def record_columns(spec):
    """The columns a record needs: `field`, `messages` or `prompt` + `response` (else both)."""
    named = [spec[k] for k in ("field", "messages", "prompt", "response") if k in spec]
    return named or ["text", "messages"]


class ShardedReader:
    """Base of readers over a list of shards, in the order of `smallcoder.data.order`.

    Subclasses set `self.shards` (one entry per shard, in stored order) and
    define `_read_shard(shard, part, parts, cursor)` (an iterator of `(item,
    cursor after it)`, only part `part` of `parts` of the shard, from `cursor`,
    `None` = its start), `_load(item)` (the record) and `shard_name(shard)`.
    Items are cheap (lines, paths, rows); `_load` parses them once they are
    handed out.
    """

    def __init__(self, spec, *, split, seed, shard_index, shard_count, repeat, shuffle_buffer=0):
        self.spec, self.split, self.seed, self.repeat = spec, split, seed, repeat
        self.shard_index, self.shard_count = shard_index, shard_count
        self.shuffle_buffer = shuffle_buffer
        self.key = f"{seed}/{spec['name']}"
        self.epoch = 0
        self.last_shard = None  # the shard of the record `next_record` returned last
        self._order = None
        self._records = 0  # records read this epoch; none at its end means no data
        self._holdout = spec.get("holdout")  # data.validation_fraction, see smallcoder.data.holdout
        self._validation = split == "validation"

    def plan(self, epoch):
        """`[(shard, part, parts), ...]` this stream reads in `epoch` (see `order.shard_plan`)."""
        return shard_plan(
            len(self.shards),
            key=self.key,
            epoch=epoch,
            stream=self.shard_index,
            streams=self.shard_count,
            shuffle=self.shuffle_buffer > 0,
        )

    def shard_name(self, shard):
        """A short name of a shard: a file's path under the source's folder, or its file name."""
        path, root = str(self.shards[shard]), os.path.expanduser(self.spec["path"])
        return os.path.relpath(path, root) if os.path.isdir(root) else os.path.basename(path)

    def _read_shard(self, shard, part, parts, cursor):
        raise NotImplementedError

    def _load(self, item):
        return item

    def seek(self, position):
        if position and position.get("shards", len(self.shards)) != len(self.shards):
            raise SourceError(
                f"Source {self.spec['name']!r} had {position['shards']} shards when this position "
                f"was saved and has {len(self.shards)} now, so its order differs; restore the "
                "files it had, or start a new run."
            )
        self.epoch = position["epoch"] if position else 0
        at = position if position and "block" in position else None
        self._order = EpochOrder(
            self.plan(self.epoch),
            self._read_shard,
            shuffle_buffer=self.shuffle_buffer,
            block_key=f"{self.key}/{self.shard_index}/{self.epoch}",
            position=at,
        )
        self._records = 0 if at is None or (at["block"] == 0 and at["index"] == 0) else 1

    def tell(self):
        if self._order is None:
            return {
                "epoch": self.epoch,
                "shards": len(self.shards),
                "block": 0,
                "start": None,
                "index": 0,
            }
        return {"epoch": self.epoch, "shards": len(self.shards), **self._order.tell()}

    def _empty_message(self):
        return (
            f"Source {self.spec['name']!r} has no records for data stream {self.shard_index} of "
            f"{self.shard_count} ({len(self.shards)} shard(s): empty files, or fewer records than "
            "training.data_streams?)."
        )

    def next_record(self):
        if self._order is None:
            self.seek(None)
        while True:
            got = self._order.next()
            if got is not None:
                item, self.last_shard = got
                if self._holdout and holdout.is_held_out(item, self._holdout) != self._validation:
                    continue  # data.validation_fraction: the other split's record (by content)
                self._records += 1
                return self._load(item)
            if not self.repeat:
                return END
            if not self._records:
                raise SourceError(self._empty_message())
            self.seek({"epoch": self.epoch + 1})


class JsonlReader(ShardedReader):
    """JSON Lines (`.jsonl`, `.json`, `.jsonl.gz`): one record per line; a shard is a file.

    Cursors are `(byte offset, lines read)`; a gzip file seeks by
    decompressing up to the offset (at most the file).
    """

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.shards = _files(spec, (".jsonl", ".json", ".jsonl.gz", ".json.gz"))

    def _read_shard(self, shard, part, parts, cursor):
        path = self.shards[shard]
        offset, lines = cursor or (0, 0)
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            f.seek(offset)
            for line in f:
                offset += len(line)
                if not line.strip():
                    continue
                lines += 1
                if parts == 1 or (lines - 1) % parts == part:
                    yield line, (offset, lines)

    def _load(self, line):
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            return BadRecord("undecodable")
        except ValueError:
            return BadRecord("invalid_json")
        return record if isinstance(record, dict) else BadRecord("not_a_mapping")


def parquet_rows(path, columns, part, parts, cursor, opener=open):
    """Rows (dicts) of one parquet file from `cursor` = `(row group position, row)`, with cursors.

    Only the `columns` the file has are read (all when it has none of them).
    Part `part` of `parts` is every `parts`-th row group when the file has
    enough of them, else every `parts`-th row. Seeking reads one row group.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    position, row = cursor or (0, 0)
    with opener(path, "rb") as f:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        wanted = [c for c in columns if c in names] or None
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        by_group = parts > 1 and len(sizes) >= parts
        groups = [g for g in range(len(sizes)) if not by_group or g % parts == part]
        first_rows = list(itertools.accumulate([0] + sizes))  # file row of each group's row 0
        by_row = parts > 1 and not by_group
        for k in range(position, len(groups)):
            g, start, r = groups[k], row if k == position else 0, 0
            for batch in pf.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=[g], columns=wanted
            ):
                n, lo = batch.num_rows, max(start - r, 0)
                if lo < n:
                    keep = range(lo, n)
                    if by_row:
                        keep = [i for i in keep if (first_rows[g] + r + i) % parts == part]
                        rows = (
                            batch.take(pa.array(keep, type=pa.int64())).to_pylist() if keep else []
                        )
                    else:
                        rows = batch.slice(lo).to_pylist()
                    for i, record in zip(keep, rows):
                        yield record, (k, r + i + 1)
                r += n


class ParquetReader(ShardedReader):
    """Parquet files: one record (dict of the needed columns) per row; a shard is a file."""

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.shards = _files(spec, (".parquet",))
        self.columns = record_columns(spec)

    def _read_shard(self, shard, part, parts, cursor):
        return parquet_rows(self.shards[shard], self.columns, part, parts, cursor)


class FileReader(ShardedReader):
    """One record per file (a shard): `text` (`.txt`/`.md`/...) or `pyfiles` (`.py`), as bytes."""

    SUFFIXES = {"text": (".txt", ".md", ".rst", ".text"), "pyfiles": (".py",)}

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.shards = _files(spec, self.SUFFIXES[spec["type"]])

    def _read_shard(self, shard, part, parts, cursor):
        if cursor is None and part == 0:  # one record: part 0 of the shard holds it
            yield self.shards[shard], (1,)

    def _load(self, path):
        with open(path, "rb") as f:
            return f.read()


class DemoReader:
    """The offline stdlib corpora (`smallcoder.data.demo`), reshuffled each epoch by seed.

    Positions are `[epoch, index]` (index counts this stream's items); a
    stream keeps items `i % shard_count == shard_index`. `shuffle_buffer`
    does not apply: the item order is already a seeded permutation.
    """

    chunk_documents = 64  # items are parsed with `ast` on read: keep the first batch quick

    def __init__(self, spec, *, split, seed, shard_index, shard_count, repeat, shuffle_buffer=0):
        from smallcoder.data import demo

        self.spec, self.split, self.seed, self.repeat = spec, split, seed, repeat
        self.shard_index, self.shard_count = shard_index, shard_count
        self._demo = demo
        self.keys = demo.demo_keys(spec["path"], split)
        self.epoch = self.index = 0
        self.last_shard = None
        self._it = None

    def items(self, epoch):
        """This stream's demo item keys in `epoch`, in order."""
        keys = list(self.keys)
        random.Random(f"{self.seed}/{self.spec['name']}/{epoch}").shuffle(keys)
        return keys[self.shard_index :: self.shard_count]

    def seek(self, position):
        self.epoch, self.index = position if position else (0, 0)
        self._it = iter(self.items(self.epoch)[self.index :])

    def tell(self):
        return [self.epoch, self.index]

    def next_record(self):
        if self._it is None:
            self.seek(None)
        key = next(self._it, None)
        if key is None:
            if not self.repeat:
                return END
            if self.index == 0:
                raise SourceError(
                    f"Source {self.spec['name']!r} has no records for data stream "
                    f"{self.shard_index} of {self.shard_count}."
                )
            self.seek([self.epoch + 1, 0])
            return self.next_record()
        self.index += 1
        self.last_shard = key
        return Several(self._demo.demo_records(self.spec["path"], key))


def make_reader(spec, *, split, seed, shard_index, shard_count, repeat, shuffle_buffer=0):
    """The reader for one resolved source spec (see `config.resolve_sources`).

    `shuffle_buffer`: records per shuffled block (0: stored order); see
    `smallcoder.data.order`.
    """
    from smallcoder.data.dataset_sources import HFReader, TFDSReader

    readers = {
        "jsonl": JsonlReader,
        "parquet": ParquetReader,
        "text": FileReader,
        "pyfiles": FileReader,
        "demo": DemoReader,
        "hf": HFReader,
        "tfds": TFDSReader,
    }
    return readers[spec["type"]](
        spec,
        split=split,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
        repeat=repeat,
        shuffle_buffer=shuffle_buffer,
    )
