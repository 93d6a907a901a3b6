"""Pretraining packing: windows, segment ids, loss weights, nothing dropped."""

import numpy as np
import pytest

from smallcoder.data.packing import TextPacker

EOS = 0


class ListMixture:
    """Hands out fixed documents in order (the mixture interface, no tokenizer)."""

    def __init__(self, docs):
        self.docs = [np.array(d + [EOS], np.int32) for d in docs]
        self.i = 0

    def next_document(self):
        if self.i == len(self.docs):
            return None, None
        self.i += 1
        return 0, self.docs[self.i - 1]


def run(docs, B, T, masking):
    packer = TextPacker(B, T, pad_id=EOS, document_masking=masking, num_sources=1)
    mixture = ListMixture(docs)
    out = []
    while (batch := packer.next_batch(mixture)) is not None:
        out.append(batch)
    return out, packer


def test_windows_segments_and_weights_hand_built():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]]  # stream: 1 2 3 E 4 5 E 6 7 8 9 10 11 E
    (batch, *rest), _ = run(docs, B=2, T=4, masking=True)
    x, seg, y, w = batch
    # Row 0 is stream[0:5], row 1 is stream[4:9]: windows overlap by one token.
    assert x.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6]]
    assert y.tolist() == [[2, 3, 0, 4], [5, 0, 6, 7]]
    assert seg.tolist() == [[1, 1, 1, 1], [1, 1, 1, 2]]
    # EOS is a target of its own document; the EOS -> next document pair is not trained.
    assert w.tolist() == [[1, 1, 1, 0], [1, 1, 0, 1]]
    assert x.dtype == seg.dtype == y.dtype == np.int32 and w.dtype == np.float32


def test_masking_off_trains_every_pair():
    (batch, *_), _ = run([[1, 2, 3], [4, 5], [6, 7, 8]], B=2, T=4, masking=False)
    x, seg, y, w = batch
    assert seg.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert w.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]


def test_no_attention_across_documents():
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(1, 50, size=rng.integers(1, 30))) for _ in range(200)]
    batches, _ = run(docs, B=3, T=16, masking=True)
    doc_of_token = np.concatenate([np.full(len(d) + 1, i) for i, d in enumerate(docs)])
    pos = 0
    for _x, seg, _y, w in batches:
        for row in range(3):
            real = seg[row] > 0
            owners = doc_of_token[pos : pos + real.sum()]
            # same segment id <=> same document, ids count up from 1 at each document start
            assert (np.diff(seg[row][real]) == (np.diff(owners) != 0)).all()
            assert seg[row][real][0] == 1
            # a trained target is always in the same document as its input
            targets = doc_of_token[pos + 1 : pos + 1 + real.sum()]
            trained = w[row][real] == 1
            assert (owners[: len(targets)][trained[: len(targets)]] == targets[trained[: len(targets)]]).all()
            pos += 16


@pytest.mark.parametrize("masking", [True, False])
def test_nothing_dropped_and_counts(masking):
    docs = [[i + 1] * (i % 7 + 1) for i in range(50)]
    B, T = 2, 8
    batches, packer = run(docs, B=B, T=T, masking=masking)
    stream = np.concatenate([d + [EOS] for d in docs])
    got = np.concatenate([x.reshape(-1) for x, *_ in batches])
    # Inputs are the stream exactly (then padding at the very end).
    assert (got[: len(stream) - 1] == stream[:-1]).all()
    assert (got[len(stream) - 1 :] == EOS).all()
    # Every next-token pair is trained once when masking is off.
    last_x, last_seg, last_y, last_w = batches[-1]
    assert last_seg.reshape(-1)[-1] == 0  # padded tail
    total_w = sum(w.sum() for *_, w in batches)
    assert total_w == len(stream) - 1 - (0 if not masking else len(docs) - 1)
    assert packer.counts == [len(stream)]


def test_overlap_token_carried_exactly_at_end():
    # The stream is exactly B*T + 1 tokens: one batch, the overlap token is counted, then done.
    batches, packer = run([[1, 2, 3, 4, 5, 6, 7, 8]], B=2, T=4, masking=True)
    assert len(batches) == 1 and packer.counts == [9]
