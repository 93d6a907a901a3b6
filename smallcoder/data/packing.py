"""Pretraining packing: documents joined with EOS, cut into windows of T + 1 tokens.

The token stream is `doc EOS doc EOS ...`. A batch is the next `B*T + 1`
tokens of it, laid out as B windows of T + 1 that overlap by one token
(window b is stream[b*T : b*T + T + 1]); the next batch starts at the last
token of this one. So every next-token pair of the stream is trained exactly
once and no token is dropped, except padding at the very end of a finite
(validation) stream.

Per window (x = window[:-1], y = window[1:]), all (B, T):
- segment ids: with document masking, 1, 2, 3, ... per document within the
  row (a document cut by the window start begins again at 1; positions
  restart at every id change); without, 1 on every real token; 0 is padding.
- sample_weight: 1 where y is a real token. With document masking, also 0
  where x and y lie in different documents: x is the EOS that ends a document
  and y the first token of the next, which x's masked attention cannot see.
  The EOS itself is a target (weight 1) at the last token of its document.
"""

from __future__ import annotations

import numpy as np


def window_arrays(tokens, doc_of, batch_size, sequence_length, document_masking):
    """Batch arrays from a stream slice.

    Args:
        tokens: int32 `(B*T + 1,)` token ids.
        doc_of: int `(B*T + 1,)` running document number of each token, -1 for padding.

    Returns:
        `(x, segment_ids, y, sample_weight)`, each `(B, T)`.
    """
    B, T = batch_size, sequence_length
    x, y = tokens[: B * T].reshape(B, T), tokens[1:].reshape(B, T)
    dx, dy = doc_of[: B * T].reshape(B, T), doc_of[1:].reshape(B, T)
    real_x, real_y = dx >= 0, dy >= 0
    if document_masking:
        segments = np.where(real_x, dx - dx[:, :1] + 1, 0)
        weight = real_y & (dx == dy)
    else:
        segments = real_x.astype(np.int32)
        weight = real_x & real_y
    return (x.astype(np.int32), segments.astype(np.int32), y.astype(np.int32),
            weight.astype(np.float32))


class TextPacker:
    """Packs a `Mixture` of text documents into `(B, T)` batches (see module doc).

    State between batches is the document that holds the next batch's first
    token: `(source, offset)`, taken back from that source's stream on restore
    (it is always the last document the mixture handed out).
    """

    def __init__(self, batch_size, sequence_length, pad_id, document_masking, num_sources):
        self.B, self.T, self.pad_id = batch_size, sequence_length, pad_id
        self.document_masking = document_masking
        self.counts = [0] * num_sources  # tokens each source put into batches
        self.current = None  # (source, document array, offset)
        self.done = False

    def next_batch(self, mixture):
        """`(x, segment_ids, y, sample_weight)` or None when the stream is done."""
        if self.done:
            return None
        need = self.B * self.T + 1
        pieces, sources, offsets, have = [], [], [], 0
        if self.current is not None:
            source, doc, offset = self.current
            pieces.append(doc[offset:])
            sources.append(source)
            offsets.append(offset)
            have = len(pieces[0])
        while have < need:
            source, doc = mixture.next_document()
            if doc is None:
                break
            pieces.append(doc)
            sources.append(source)
            offsets.append(0)
            have += len(doc)
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        if have < need and have <= (1 if self.current is not None else 0) and len(pieces) <= 1:
            # Only the overlap token (already a target) or nothing is left.
            for s, n in zip(sources, lengths):
                self.counts[s] += int(n)
            self.done, self.current = True, None
            return None
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
        doc_of = np.repeat(np.arange(len(pieces)), lengths)
        if have >= need:
            tokens, doc_of = tokens[:need], doc_of[:need]
            last = len(pieces) - 1  # it holds the overlap token at stream position B*T
            self.current = (sources[last], pieces[last] if offsets[last] == 0 else self.current[1],
                            offsets[last] + (need - 1) - int(starts[last]))
        else:
            pad = need - have
            tokens = np.concatenate([tokens, np.full(pad, self.pad_id, np.int32)])
            doc_of = np.concatenate([doc_of, np.full(pad, -1)])
            self.current, self.done = None, True
        # Tokens counted once: positions [0, B*T) belong to this batch.
        counted = np.clip(np.minimum(starts + lengths, need - 1) - starts, 0, None)
        for s, n in zip(sources, counted):
            self.counts[s] += int(n)
        return window_arrays(tokens, doc_of, self.B, self.T, self.document_masking)

    def state_dict(self):
        current = None if self.current is None else [self.current[0], int(self.current[2])]
        return {"current": current, "done": self.done, "counts": list(self.counts)}

    def load_state_dict(self, state, streams):
        self.counts, self.done = list(state["counts"]), state["done"]
        self.current = None
        if state["current"] is not None:
            source, offset = state["current"]
            self.current = (source, streams[source].last_document(), offset)
