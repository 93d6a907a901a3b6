"""Readers backed by dataset libraries: Hugging Face `datasets` (`type: hf`) and tfds.

Both are `ShardedReader`s (`smallcoder.data.sources`): the shard order,
stream assignment and shuffle buffer are the same as for local files.
"""

from __future__ import annotations

import itertools
import os

from smallcoder import hub_access
from smallcoder.data.sources import (
    ShardedReader,
    SourceError,
    parquet_rows,
    record_columns,
)

PACKAGED_BUILDERS = {
    "json",
    "csv",
    "parquet",
    "text",
    "arrow",
    "webdataset",
    "imagefolder",
    "audiofolder",
    "videofolder",
    "pandas",
    "sql",
    "xml",
}


class HFReader(ShardedReader):
    """`datasets.load_dataset(path, config, split=..., streaming=True)`, one data file per shard.

    Parquet datasets (the hub's usual format; also `path: parquet` with
    `data_files`) are read file by file with pyarrow through fsspec (`hf://`
    URLs), only the needed columns, seeking by row group. Other formats go
    through `datasets` streaming, one `IterableDataset.shard` per data file;
    seeking skips records inside that file (at most one file is re-read).
    A hub id is probed first (3 s); if the hub cannot be reached the error
    names the dataset at once instead of retrying for minutes.
    """

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self._check_reachable()
        builder = self._call(
            "load_dataset_builder",
            lambda d: d.load_dataset_builder(
                spec["path"], spec.get("config"), **self._data_files()
            ),
        )
        from datasets.packaged_modules.parquet.parquet import Parquet

        split = spec.get("split", "train")
        self.files = None
        if isinstance(builder, Parquet) and builder.config.data_files:
            if split not in builder.config.data_files:
                raise SourceError(
                    f"Source {spec['name']!r}: dataset {spec['path']!r} has no split {split!r} "
                    f"(it has "
                    f"{sorted(builder.config.data_files)}); set `split`."
                )
            self.files = list(builder.config.data_files[split])
            self.shards, self.columns = self.files, record_columns(spec)
        else:
            self.dataset = self._call(
                "load_dataset",
                lambda d: d.load_dataset(
                    spec["path"],
                    spec.get("config"),
                    split=split,
                    streaming=True,
                    **self._data_files(),
                ),
            )
            self.shards = list(range(self.dataset.num_shards))

    def _data_files(self):
        return {"data_files": self.spec["data_files"]} if "data_files" in self.spec else {}

    def _check_reachable(self):
        path = self.spec["path"]
        local = path in PACKAGED_BUILDERS or os.path.exists(os.path.expanduser(path))
        reason = None if local else hub_access.unavailable_reason()
        if reason:
            raise SourceError(
                f"Source {self.spec['name']!r}: cannot reach the Hugging Face hub for dataset "
                f"{path!r} ({reason}). Run with --demo, or point the source at "
                "a local copy (type: jsonl/parquet, or type: hf with path: json|parquet and "
                "data_files)."
            )

    def _call(self, what, fn):
        import datasets

        spec = self.spec
        try:
            return fn(datasets)
        except Exception as e:  # datasets raises many types; all mean "cannot open"
            raise SourceError(
                f"Source {spec['name']!r}: datasets.{what}({spec['path']!r}, "
                f"{spec.get('config')!r}, "
                f"split={spec.get('split', 'train')!r}) failed: {type(e).__name__}: {e}. Check "
                "path/config/split, run with --demo, or use a local copy."
            ) from e

    def shard_name(self, shard):
        if self.files is not None:  # hf://datasets/owner/name@revision/path/in/repo
            url = self.files[shard]
            return url.split("@", 1)[1].split("/", 1)[-1] if "@" in url else os.path.basename(url)
        return f"{self.spec['path']} data file {shard + 1}/{len(self.shards)}"

    def _read_shard(self, shard, part, parts, cursor):
        if self.files is not None:
            import fsspec

            return parquet_rows(
                self.files[shard],
                self.columns,
                part,
                parts,
                cursor,
                opener=lambda url, mode: fsspec.open(url, mode).open(),
            )
        return self._read_streamed(shard, part, parts, cursor)

    def _read_streamed(self, shard, part, parts, cursor):
        (done,) = cursor or (0,)
        one_file = self.dataset.shard(num_shards=len(self.shards), index=shard, contiguous=True)
        for j, example in enumerate(itertools.islice(one_file, done, None), start=done):
            if parts == 1 or j % parts == part:
                yield example, (j + 1,)


class TFDSReader(ShardedReader):
    """`tfds.builder(path, config=..., data_dir=...).as_dataset(split)`, one even split per file.

    The dataset must already be prepared in `data_dir` (no downloads here).
    Shard k of K (K = the split's files) is `tfds.even_splits(split, K)[k]`;
    a part of one is an even split of it; seeking skips records inside it.
    """

    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        import tensorflow_datasets as tfds

        name = spec["path"] + (f"/{spec['config']}" if "config" in spec else "")
        split = spec.get("split", "train")
        try:
            self.builder = tfds.builder(name, data_dir=spec.get("data_dir"))
            files = len(self.builder.info.splits[split].file_instructions)
            self.builder.as_dataset(split=split)  # fail now if not prepared
        except Exception as e:
            raise SourceError(
                f"Source {spec['name']!r}: tfds dataset {name!r} is not available "
                f"({type(e).__name__}: {e}). Prepare it into data_dir first, run with --demo, "
                "or use a local copy."
            ) from e
        self.tf_split = split
        self.shards = tfds.even_splits(split, n=max(files, 1))

    def shard_name(self, shard):
        return f"{self.tf_split} part {shard + 1}/{len(self.shards)}"

    def _read_shard(self, shard, part, parts, cursor):
        import tensorflow_datasets as tfds

        split = self.shards[shard]
        if parts > 1:
            split = tfds.even_splits(split, n=parts)[part]
        (done,) = cursor or (0,)
        ds = self.builder.as_dataset(split=split, shuffle_files=False)
        for j, example in enumerate(tfds.as_numpy(ds.skip(done)), start=done):
            yield example, (j + 1,)
