"""Weighted interleaving of document streams by token share.

Each step hands out one document from the source furthest behind its share:
the active source with the smallest `tokens_so_far / weight` (ties: the
earlier source). Shares are therefore exact up to one document, whatever the
document lengths (sampling sources with probability `weight` would give
*document* shares, not token shares). The order inside each source comes from
its own seeded shuffle (demo) or its stored order (files, streams).
A source that runs out (validation) drops out and the rest continue.
"""

from __future__ import annotations


class Mixture:
    """Interleave `streams` (each with `next_document()`) so tokens follow `weights`.

    Args:
        streams: `DocumentStream`s.
        weights: positive token shares, one per stream (summing to 1).
    """

    def __init__(self, streams, weights):
        self.streams, self.weights = list(streams), [float(w) for w in weights]
        self.scheduled = [0] * len(self.streams)  # tokens handed out per source
        self.active = [True] * len(self.streams)

    def next_document(self):
        """`(source_index, document)`, or `(None, None)` when every source is done."""
        while any(self.active):
            i = min((i for i, a in enumerate(self.active) if a),
                    key=lambda i: (self.scheduled[i] / self.weights[i], i))
            doc = self.streams[i].next_document()
            if doc is None:
                self.active[i] = False
                continue
            self.scheduled[i] += len(doc[0]) if isinstance(doc, tuple) else len(doc)
            return i, doc
        return None, None

    def state_dict(self):
        return {"scheduled": list(self.scheduled), "active": list(self.active)}

    def load_state_dict(self, state):
        self.scheduled, self.active = list(state["scheduled"]), list(state["active"])
