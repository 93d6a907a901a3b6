"""Attention masks and RoPE positions from segment ids.

`padding_mask` doubles as segment ids: 0 is padding, 1, 2, … number the
documents packed into a row. A plain 0/1 padding mask is the one-document case.
"""

import keras
from keras import ops


def segment_attention_mask(segment_ids):
    """Causal mask within each segment.

    Args:
        segment_ids: int or bool (B, T).

    Returns:
        bool (B, T, T): `[b, t, s]` is True where `s <= t`, both tokens belong to
        the same segment and it is not padding. Padding rows see themselves
        only, so their softmax stays finite.
    """
    segment_ids = ops.cast(segment_ids, "int32")
    length = ops.shape(segment_ids)[1]
    index = ops.arange(length)
    causal = ops.expand_dims(index, 1) >= ops.expand_dims(index, 0)  # (T, T)
    same = ops.expand_dims(segment_ids, 2) == ops.expand_dims(segment_ids, 1)  # (B, T, T)
    real = ops.expand_dims(segment_ids > 0, 1)  # keys that are not padding
    diagonal = ops.expand_dims(ops.eye(length, dtype="bool"), 0)
    return ops.logical_or(ops.logical_and(ops.logical_and(causal, same), real), diagonal)


def segment_positions(attention_mask):
    """RoPE positions that restart at every segment start.

    Args:
        attention_mask: bool (B, T, T) from `segment_attention_mask`.

    Returns:
        int32 (B, T): how many earlier tokens of its own segment each token has.
    """
    return ops.sum(ops.cast(attention_mask, "int32"), axis=-1) - 1


class SegmentMask(keras.layers.Layer):
    """Layer form of the two functions above, for the functional backbone.

    Call args:
        segment_ids: int (B, T).

    Returns:
        `(attention_mask bool (B, T, T), positions int32 (B, T))`.
    """

    def call(self, segment_ids):
        attention_mask = segment_attention_mask(segment_ids)
        return attention_mask, segment_positions(attention_mask)

    def compute_output_spec(self, segment_ids):
        batch, length = segment_ids.shape
        return (
            keras.KerasTensor((batch, length, length), dtype="bool"),
            keras.KerasTensor((batch, length), dtype="int32"),
        )
