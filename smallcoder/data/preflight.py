"""`check_sources_open`: open every source of a `data:` section before a run commits to anything.

A training run builds its model (the 303M one takes a while) and creates its
run folder before the pipeline reads a record; a dataset that cannot be opened
(hub offline, a typo in a path, a tfds dataset not prepared) should stop it
before that, in one line. Opening a reader is what the pipeline would do first
anyway: local files are listed, a hub dataset is probed (3 s) and opened for
streaming, a tfds builder is loaded. No record is read.
"""

from __future__ import annotations

from smallcoder.data.config import resolve_sources
from smallcoder.data.sources import make_reader


def check_sources_open(data_config, *, demo=False, split="train"):
    """Open a reader for each source `build_pipeline` would read, then drop it.

    Args:
        data_config: a recipe's `data:` section (validated).
        demo: check the `demo:` sources instead of `sources:`.
        split: `"train"` or `"validation"`.

    Raises:
        SourceError: the first source that cannot be opened, naming it and
            saying what to do (`--demo`, a local copy).
        ValueError: `sources:` missing, or a validation split not configured.
    """
    for spec in resolve_sources(data_config, demo, split):
        make_reader(spec, split=split, seed=0, shard_index=0, shard_count=1, repeat=False)
