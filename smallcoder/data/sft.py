"""SFT packing: whole chat examples packed into rows of T + 1 tokens.

Each example is `(ids, mask)` from `documents.encode_chats` (the one chat
format, `User: {prompt}\\nAssistant: {response}<eos>`, multi-turn too), with
mask 1 on the assistant tokens and their EOS. Examples are never split across
rows: each goes first-fit into one of a few open rows; when none has room, the
fullest open row is closed. An example longer than T + 1 is truncated to
T + 1 tokens or dropped (`overlong`), and counted.

Per row (x = row[:-1], y = row[1:], all (B, T)):
- segment ids: 1, 2, 3, ... per example (document masking on), or 1 on every
  real token (off); 0 is padding.
- sample_weight[i] = mask[i + 1]: the loss covers exactly the assistant
  tokens and their EOS as targets (never a prompt token, never padding; the
  first token of an example is a prompt token, so no weight crosses examples).
"""

from __future__ import annotations

import numpy as np

OPEN_ROWS = 8  # rows being filled at once (first-fit); bounds the saved state


class ChatPacker:
    """Packs a `Mixture` of chat examples into `(B, T)` batches (see module doc)."""

    def __init__(self, batch_size, sequence_length, pad_id, document_masking, overlong,
                 num_sources):
        self.B, self.T, self.pad_id = batch_size, sequence_length, pad_id
        self.document_masking, self.overlong = document_masking, overlong
        self.counts = [0] * num_sources  # real tokens each source put into batches
        self.overlong_count = 0  # examples truncated or dropped
        self.open, self.ready = [], []  # rows: lists of (source, ids, mask)
        self.flushed = False

    @staticmethod
    def _used(row):
        return sum(len(ids) for _, ids, _ in row)

    def _add(self, source, ids, mask):
        capacity = self.T + 1
        if len(ids) > capacity:
            self.overlong_count += 1
            if self.overlong == "drop":
                return
            ids, mask = ids[:capacity], mask[:capacity]
        fits = [r for r, row in enumerate(self.open) if self._used(row) + len(ids) <= capacity]
        if fits:
            r = fits[0]
            self.open[r].append((source, ids, mask))
        else:
            if len(self.open) >= OPEN_ROWS:
                fullest = max(range(len(self.open)), key=lambda r: (self._used(self.open[r]), -r))
                self.ready.append(self.open.pop(fullest))
            self.open.append([(source, ids, mask)])
            r = len(self.open) - 1
        if self._used(self.open[r]) == capacity:  # full: nothing else can go in
            self.ready.append(self.open.pop(r))

    def next_batch(self, mixture):
        """`(x, segment_ids, y, sample_weight)` or None when every example is out."""
        while len(self.ready) < self.B and not self.flushed:
            source, example = mixture.next_document()
            if example is None:
                self.ready.extend(self.open)
                self.open, self.flushed = [], True
                break
            self._add(source, *example)
        if not self.ready:
            return None
        rows, self.ready = self.ready[: self.B], self.ready[self.B :]
        n = self.T + 1
        tokens = np.full((self.B, n), self.pad_id, np.int32)
        segments = np.zeros((self.B, n), np.int32)
        mask = np.zeros((self.B, n), np.float32)
        for b, row in enumerate(rows):
            at = 0
            for k, (source, ids, m) in enumerate(row):
                tokens[b, at : at + len(ids)] = ids
                segments[b, at : at + len(ids)] = k + 1 if self.document_masking else 1
                mask[b, at : at + len(ids)] = m
                at += len(ids)
                self.counts[source] += len(ids)
        weight = mask[:, 1:] * (segments[:, :-1] == segments[:, 1:])  # never across examples
        return tokens[:, :-1], segments[:, :-1], tokens[:, 1:], weight.astype(np.float32)

    # === State ===
    @staticmethod
    def _rows_state(rows):
        return [[[s, ids.tolist(), "".join(map(str, m.tolist()))] for s, ids, m in row] for row in rows]

    @staticmethod
    def _rows_load(rows):
        return [[(s, np.array(ids, np.int32), np.frombuffer(m.encode(), np.uint8) - ord("0"))
                 for s, ids, m in row] for row in rows]

    def state_dict(self):
        return {"open": self._rows_state(self.open), "ready": self._rows_state(self.ready),
                "flushed": self.flushed, "counts": list(self.counts),
                "overlong": self.overlong_count}

    def load_state_dict(self, state, streams=None):
        self.open, self.ready = self._rows_load(state["open"]), self._rows_load(state["ready"])
        self.flushed, self.counts = state["flushed"], list(state["counts"])
        self.overlong_count = state["overlong"]
