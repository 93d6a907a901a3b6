"""Record readers: one per source type, each seekable to a saved position.

A reader yields raw records (a dict, or `str`/`bytes` for whole-file
sources) one at a time from `next_record()`, reading only its shard (the
data stream it feeds, see `smallcoder.data.streams`). `tell()` is a JSON-serialisable position of the next record and
`seek(position)` returns there exactly, which is what exact resume rests on.
A training reader repeats (epoch += 1) when it runs out; a validation
reader returns `END` after one pass.

Local types (jsonl, parquet, text, pyfiles, demo) keep positions as
`[epoch, index]` (index counts this shard's records); Hugging Face streams
keep `IterableDataset.state_dict()`, tfds keeps `[epoch, index]` and skips.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import json
import os
import random

from smallcoder import hub_access
from smallcoder.data import holdout

END = object()  # a non-repeating reader has no more records


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


class Reader:
    """Base for readers addressed by `[epoch, index]` over an ordered item list.

    Subclasses define `_items(epoch)` (cheap items in order, e.g. lines or
    paths) and `_load(item)` (the record). Sharding keeps items with
    `i % shard_count == shard_index`, before `_load`, so a data stream
    parses only its own records.
    """

    def __init__(self, spec, *, split, seed, shard_index, shard_count, repeat):
        self.spec, self.split, self.seed, self.repeat = spec, split, seed, repeat
        self.shard_index, self.shard_count = shard_index, shard_count
        self.epoch = self.index = 0
        self._it = None

    def _items(self, epoch):
        raise NotImplementedError

    def _load(self, item):
        return item

    def _open(self, epoch, index):
        items = self._items(epoch)
        if self.spec.get("holdout"):  # data.validation_fraction: before sharding, by content
            items = holdout.select(items, self.spec["holdout"], validation=self.split == "validation")
        if self.shard_count > 1:
            items = itertools.islice(items, self.shard_index, None, self.shard_count)
        return map(self._load, itertools.islice(items, index, None))

    def seek(self, position):
        self.epoch, self.index = position if position else (0, 0)
        self._it = self._open(self.epoch, self.index)

    def tell(self):
        return [self.epoch, self.index]

    def _next_epoch_position(self):
        return [self.epoch + 1, 0]

    def _empty_message(self):
        return (f"Source {self.spec['name']!r} has no records for data stream "
                f"{self.shard_index} of {self.shard_count} (fewer records than training.data_streams?).")

    def next_record(self):
        if self._it is None:
            self.seek(None)
        try:
            record = next(self._it)
        except StopIteration:
            if not self.repeat:
                return END
            if self.index == 0:
                raise SourceError(self._empty_message()) from None
            self.seek(self._next_epoch_position())
            return self.next_record()
        self.index += 1
        return record


class JsonlReader(Reader):
    """JSON Lines (`.jsonl`, `.json`, `.jsonl.gz`): one record per line."""

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.files = _files(spec, (".jsonl", ".json", ".jsonl.gz", ".json.gz"))

    def _items(self, epoch):
        for path in self.files:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                for line in f:
                    if line.strip():
                        yield line

    def _load(self, line):
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            return BadRecord("undecodable")
        except ValueError:
            return BadRecord("invalid_json")
        return record if isinstance(record, dict) else BadRecord("not_a_mapping")


class ParquetReader(Reader):
    """Parquet files: one record (dict of the needed columns) per row."""

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.files = _files(spec, (".parquet",))

    def _items(self, epoch):
        import pyarrow.parquet as pq

        for path in self.files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()


class FileReader(Reader):
    """One record per file: `text` (`.txt`/`.md`/...) or `pyfiles` (`.py`), as bytes."""

    SUFFIXES = {"text": (".txt", ".md", ".rst", ".text"), "pyfiles": (".py",)}

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.files = _files(spec, self.SUFFIXES[spec["type"]])

    def _items(self, epoch):
        return iter(self.files)

    def _load(self, path):
        with open(path, "rb") as f:
            return f.read()


class DemoReader(Reader):
    """The offline stdlib corpora (`smallcoder.data.demo`), reshuffled each epoch by seed."""

    chunk_documents = 64  # items are parsed with `ast` on read: keep the first batch quick

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        from smallcoder.data import demo

        self._demo = demo
        self.keys = demo.demo_keys(spec["path"], self.split)

    def _items(self, epoch):
        keys = list(self.keys)
        random.Random(f"{self.seed}/{self.spec['name']}/{epoch}").shuffle(keys)
        return iter(keys)

    def _load(self, key):
        return Several(self._demo.demo_records(self.spec["path"], key))


# === Hugging Face ===
PACKAGED_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "webdataset", "imagefolder",
                     "audiofolder", "videofolder", "pandas", "sql", "xml"}


class HFReader(Reader):
    """`datasets.load_dataset(path, config, split=..., streaming=True)`, this stream's shard.

    Positions are `{"epoch": e, "hf": IterableDataset.state_dict()}`. A hub
    id is probed first (3 s); if the hub cannot be reached the error names the
    dataset at once instead of retrying for minutes.
    """

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.dataset = self._load_dataset()
        self._initial = json.loads(json.dumps(self.dataset.state_dict()))
        self._seek_position = None

    def _load_dataset(self):
        import datasets

        spec = self.spec
        path = spec["path"]
        local = path in PACKAGED_BUILDERS or os.path.exists(os.path.expanduser(path))
        reason = None if local else hub_access.unavailable_reason()
        if reason:
            raise SourceError(
                f"Source {spec['name']!r}: cannot reach the Hugging Face hub for dataset "
                f"{path!r} ({reason}). Run with --demo, or point the source at "
                "a local copy (type: jsonl/parquet, or type: hf with path: json|parquet and data_files)."
            )
        kwargs = {"split": spec.get("split", "train"), "streaming": True}
        if "data_files" in spec:
            kwargs["data_files"] = spec["data_files"]
        try:
            ds = datasets.load_dataset(path, spec.get("config"), **kwargs)
        except Exception as e:  # datasets raises many types; all mean "cannot open"
            raise SourceError(
                f"Source {spec['name']!r}: datasets.load_dataset({path!r}, {spec.get('config')!r}, "
                f"split={kwargs['split']!r}) failed: {type(e).__name__}: {e}. Check path/config/split, "
                "run with --demo, or use a local copy."
            ) from e
        if self.shard_count > 1:
            from datasets.distributed import split_dataset_by_node

            ds = split_dataset_by_node(ds, rank=self.shard_index, world_size=self.shard_count)
        return ds

    def seek(self, position):
        if position is None:
            position = {"epoch": 0, "hf": self._initial}
        self.epoch = position["epoch"]
        self.dataset.set_epoch(self.epoch)
        self.dataset.load_state_dict(position["hf"])
        self._it = iter(self.dataset)
        self._seek_position = {"epoch": self.epoch, "hf": position["hf"]}
        at_start = {**position["hf"], "epoch": 0} == {**self._initial, "epoch": 0}
        self.index = 0 if at_start else -1  # 0 only at an epoch start (emptiness check)

    def tell(self):
        if self._it is None:
            return {"epoch": self.epoch, "hf": self._initial}
        if self._seek_position is not None:  # nothing read since seek
            return self._seek_position
        return {"epoch": self.epoch, "hf": json.loads(json.dumps(self.dataset.state_dict()))}

    def _next_epoch_position(self):
        return {"epoch": self.epoch + 1, "hf": {**self._initial, "epoch": self.epoch + 1}}

    def _empty_message(self):
        return f"Source {self.spec['name']!r}: dataset {self.spec['path']!r} is empty."

    def next_record(self):
        record = super().next_record()
        if record is not END:
            self._seek_position = None  # tell() now asks the stream
        return record


# === TensorFlow Datasets ===
class TFDSReader(Reader):
    """`tfds.builder(path, config=..., data_dir=...).as_dataset(split)`, evenly split per data stream.

    The dataset must already be prepared in `data_dir` (no downloads here).
    Positions are `[epoch, index]`; seeking uses `tf.data.Dataset.skip`.
    """

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        import tensorflow_datasets as tfds

        name = spec["path"] + (f"/{spec['config']}" if "config" in spec else "")
        try:
            self.builder = tfds.builder(name, data_dir=spec.get("data_dir"))
            split = spec.get("split", "train")
            if self.shard_count > 1:
                split = tfds.even_splits(split, n=self.shard_count)[self.shard_index]
            self.tf_split = split
            self.builder.as_dataset(split=split)  # fail now if not prepared
        except Exception as e:
            raise SourceError(
                f"Source {spec['name']!r}: tfds dataset {name!r} is not available "
                f"({type(e).__name__}: {e}). Prepare it into data_dir first, run with --demo, "
                "or use a local copy."
            ) from e

    def _open(self, epoch, index):
        import tensorflow_datasets as tfds

        ds = self.builder.as_dataset(split=self.tf_split, shuffle_files=False)
        return iter(tfds.as_numpy(ds.skip(index)))


READERS = {
    "jsonl": JsonlReader,
    "parquet": ParquetReader,
    "text": FileReader,
    "pyfiles": FileReader,
    "demo": DemoReader,
    "hf": HFReader,
    "tfds": TFDSReader,
}


def make_reader(spec, *, split, seed, shard_index, shard_count, repeat):
    """The reader for one resolved source spec (see `config.resolve_sources`)."""
    return READERS[spec["type"]](
        spec, split=split, seed=seed, shard_index=shard_index,
        shard_count=shard_count, repeat=repeat,
    )
