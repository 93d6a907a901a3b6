"""`TrackedBatches`: feed the data streams to `fit` and remember their state after each batch."""

import json


class TrackedBatches:
    """Iterator over a data `Pipeline` that snapshots its state after every batch.

    `fit` may pull batches ahead of the step it is training (prefetch), so the
    pipeline's live state is not the state after the trained steps. A snapshot
    per batch handed out gives the exact state after `step` batches for a
    checkpoint, and the per-source token counts for accounting.

    Args:
        pipeline: a `StreamBatches` (`__next__`, `state_dict()`,
            `stream_token_counts()`) holding this process's streams.
        start_step: batches already trained (resume); the pipeline must be
            in the state that follows them.
    """

    def __init__(self, pipeline, start_step=0):
        self.pipeline = pipeline
        self.produced = start_step
        self._snapshots = {start_step: self._snapshot()}

    def _snapshot(self):
        # A JSON round trip copies the state and checks it can be saved.
        return json.loads(json.dumps({
            "data": self.pipeline.state_dict(),
            "stream_tokens": self.pipeline.stream_token_counts(),
        }))

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.pipeline)
        self.produced += 1
        self._snapshots[self.produced] = self._snapshot()
        return batch

    def generator(self):
        """A Python generator over the batches (what `fit` accepts)."""
        yield from self

    def snapshot(self, step):
        """`{"data": state, "stream_tokens": {stream: [tokens per source]}}` after `step` batches."""
        return self._snapshots[step]

    def forget_before(self, step):
        for key in [k for k in self._snapshots if k < step]:
            del self._snapshots[key]
