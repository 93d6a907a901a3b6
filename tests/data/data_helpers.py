"""Helpers for the data pipeline tests (no keras)."""

import json


def write_jsonl(path, records):
    with open(path, "wb") as f:
        for r in records:
            f.write(r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n")
    return str(path)


def batches(pipeline, n):
    return [next(pipeline) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for (xa, ya, wa), (xb, yb, wb) in zip(a, b):
        for key in ("token_ids", "padding_mask"):
            assert (xa[key] == xb[key]).all(), key
        assert (ya == yb).all() and (wa == wb).all()
