"""`data.validation_fraction`: hold out a fixed part of local files for the validation split.

A record is held out when a hash of its content falls below the fraction.
The choice depends on nothing but the record (not its position, the shard, the
epoch, the seed or the order the files are read in), so the training split
never sees a held-out record and the validation split is the same in every run
and on every number of data streams or processes. About `fraction` of the
records are held out (each independently); identical records land on the same
side. The demo corpora hold out their own 5% the same way (by item name).
"""

from __future__ import annotations

import hashlib
import json


def _key(item):
    """The bytes a record is identified by: a jsonl line, a parquet row, a file path."""
    if isinstance(item, bytes):
        return item.strip()
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")
    return json.dumps(item, sort_keys=True, default=str).encode()


def is_held_out(item, fraction):
    """Whether `item` belongs to the held-out (validation) part of `fraction`."""
    digest = hashlib.blake2b(_key(item), digest_size=8, person=b"smallcoder-val").digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def select(items, fraction, validation):
    """The items of one side: the held-out ones (`validation`), or the rest (training)."""
    return (item for item in items if is_held_out(item, fraction) == validation)
