"""The global batch as a fixed number of data streams, whatever the number of processes.

Rows `[s*R, (s+1)*R)` of every batch (R = micro-batch / streams) come from
stream `s`: a `Pipeline` that reads shard `s` of `streams` of every source.
A process builds only the streams behind the rows its devices hold (one
process holds them all), so 1, 2 or 4 processes train on the same global
batches and a checkpoint resumes on another topology with the same data
(levanter loads one global order per process slice the same way)::

    stream 0 ─► rows 0..R-1  ┐ process 0
    stream 1 ─► rows R..2R-1 ┘
    stream 2 ─► rows 2R..    ┐ process 1
    stream 3 ─►              ┘
"""

from __future__ import annotations

import numpy as np

from smallcoder.data.pipeline import build_pipeline

MAX_AUTO_STREAMS = 8
STATE_VERSION = 1


def auto_streams(micro_batch, limit=MAX_AUTO_STREAMS):
    """`training.data_streams: auto`: the largest divisor of the micro-batch that is at most `limit`."""
    return max(n for n in range(1, min(limit, micro_batch) + 1) if micro_batch % n == 0)


def stream_range(rows, micro_batch, num_streams):
    """The streams `[first, last)` behind batch rows `[start, stop)`.

    Raises:
        ValueError: the rows cut through a stream (more row groups than streams).
    """
    start, stop = rows
    per_stream = micro_batch // num_streams
    if start % per_stream or stop % per_stream:
        raise ValueError(
            f"this process holds batch rows [{start}, {stop}) of {micro_batch}, which do not fall on "
            f"the {num_streams} data streams' boundaries (every {per_stream} rows); set "
            f"training.data_streams to a multiple of the number of processes along the data axis "
            f"that divides the micro-batch."
        )
    return start // per_stream, stop // per_stream


class StreamBatches:
    """This process's rows of each global batch, from its data streams, with exact save/restore.

    Args:
        data_config: the recipe's `data:` section.
        tokenizer: a `SmallCoderTokenizer`.
        sequence_length: T.
        micro_batch: rows of the global batch (all processes).
        num_streams: streams making up each batch; must divide `micro_batch`.
        rows: `(start, stop)`, the batch rows this process feeds (default: all).
        seed, demo, split: as `build_pipeline`.

    Yields `({"token_ids", "padding_mask"}, y, sample_weight)`, each
    `(stop - start, T)`: the streams' rows in stream order.
    """

    def __init__(self, data_config, tokenizer, *, sequence_length, micro_batch, num_streams,
                 rows=None, seed=0, demo=False, split="train"):
        if num_streams < 1 or micro_batch % num_streams:
            raise ValueError(f"training.data_streams ({num_streams}) must divide the micro-batch "
                             f"({micro_batch}).")
        self.micro_batch, self.num_streams = micro_batch, num_streams
        self.rows = tuple(rows) if rows is not None else (0, micro_batch)
        first, last = stream_range(self.rows, micro_batch, num_streams)
        self.stream_ids = list(range(first, last))
        self.pipelines = [
            build_pipeline(data_config, tokenizer, sequence_length=sequence_length,
                           batch_size=micro_batch // num_streams, seed=seed, demo=demo, split=split,
                           shard_index=s, shard_count=num_streams)
            for s in self.stream_ids
        ]
        self.names = self.pipelines[0].names

    def __iter__(self):
        return self

    def __next__(self):
        batches = [next(p) for p in self.pipelines]
        x = {key: np.concatenate([b[0][key] for b in batches]) for key in batches[0][0]}
        return x, np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches])

    def close(self):
        for pipeline in self.pipelines:
            pipeline.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def stream_token_counts(self):
        """`{stream id: [tokens per source]}` put into batches so far by this process's streams."""
        return {str(s): list(p.token_counts().values()) for s, p in zip(self.stream_ids, self.pipelines)}

    def token_counts(self):
        """`{source name: tokens}` over this process's streams."""
        return total_token_counts(self.names, [self.stream_token_counts()])

    # === State ===
    def state_dict(self):
        """`{"version", "num_streams", "streams": {stream id: Pipeline state}}` of this process's streams."""
        return {"version": STATE_VERSION, "num_streams": self.num_streams,
                "streams": {str(s): p.state_dict() for s, p in zip(self.stream_ids, self.pipelines)}}

    def load_state_dict(self, state):
        """Restore this process's streams from a state holding (at least) them all."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"Data state version {state.get('version')!r} is not {STATE_VERSION}.")
        if state["num_streams"] != self.num_streams:
            raise ValueError(
                f"Data state was saved with training.data_streams={state['num_streams']} but this run "
                f"has {self.num_streams}; resume with the same value (the streams make up the batch)."
            )
        missing = [s for s in self.stream_ids if str(s) not in state["streams"]]
        if missing:
            raise ValueError(f"Data state has no position for stream(s) {missing}.")
        for s, pipeline in zip(self.stream_ids, self.pipelines):
            pipeline.load_state_dict(state["streams"][str(s)])


def merge_states(states):
    """One state holding every stream, from the `state_dict()`s of all processes."""
    merged = {**states[0], "streams": {}}
    for state in states:
        merged["streams"].update(state["streams"])
    return merged


def total_token_counts(names, stream_counts):
    """`{source: tokens}` summed over streams, each stream counted once.

    Args:
        names: source names, in mixture order.
        stream_counts: `stream_token_counts()` of every process; a stream that
            several processes hold (rows replicated over processes) counts once.
    """
    once = {}
    for counts in stream_counts:
        once.update(counts)
    totals = np.zeros(len(names), dtype=np.int64)
    for counts in once.values():
        totals += np.asarray(counts, dtype=np.int64)
    return {name: int(n) for name, n in zip(names, totals)}
