"""Cached decoding gives the logits of the full forward pass, token by token.

The KV-cache path as `generate_step` runs it (the prompts left padded to a
common end and run as one block, then one token per step for every row)
against `call` on the whole, right-padded sequences: batch 1 and a ragged
batch of 3; float32, Keras int8 (activations quantized too) and weight-only
int8 (`quantize_for_generation`); every implementation this backend runs;
each step by `call_with_cache` ("xla") and, where they run (JAX on an x86-64
CPU), by the native kernels (`native_decoding.decode_step`).

Tolerance, max |cached - full| over every compared logit of a row, relative
to the std of that row's full logits: float32 2e-5 (float round-off of two
summation orders; measured up to 2.8e-6 on the three backends); int8 0.1,
the tolerance `bench quantization` states for int8 (activations are quantized
to int8 per token in both paths, so a round-off difference in one layer's
input can move the next layer's input by a quantization step, 1/127 of the
token's largest activation: measured up to 2.1e-2 where steps moved, 2.7e-6
where none did; a wrong cache entry or mask moves logits by about 1);
weight-only int8 2e-5 (float activations: round-off only).
"""

import functools

import keras
import numpy as np
import pytest

from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM

TOLERANCE_OF_STD = {"float32": 2e-5, "int8": 0.1, "int8_weights": 2e-5}
NEW_TOKENS = 6
PAD_ID = 0


def _implementations():
    return ["keras", "blocks"] if keras.config.backend() == "jax" else ["keras"]


@functools.lru_cache(maxsize=None)  # one model per case, shared by both batch shapes
def _model(implementation, weights):
    keras.utils.set_random_seed(0)
    backbone = SmallCoderBackbone(
        vocabulary_size=512, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=32, intermediate_dim=64, max_sequence_length=64, initializer_range=0.1,
        implementation=implementation,
    )
    lm = SmallCoderCausalLM(backbone)
    if weights == "int8":
        lm.quantize("int8")
    elif weights == "int8_weights":
        lm.quantize_for_generation("int8")
    return lm


def _decodings(weights):
    from smallcoder.models import decode_kernels

    # The native kernels run float32 and weight-only int8 layers only.
    native = decode_kernels.available() and weights != "int8"
    return ["xla", "native"] if native else ["xla"]


def _sequences(prompt_lengths, seed):
    """Token rows of prompt + NEW_TOKENS tokens, right padded: ids (B, L), lengths."""
    rng = np.random.default_rng(seed)
    lengths = [p + NEW_TOKENS for p in prompt_lengths]
    ids = np.full((len(lengths), max(lengths)), PAD_ID, "int32")
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, 512, length)
    return ids, lengths


def _full_logits(lm, ids, lengths):
    mask = (np.arange(ids.shape[1])[None] < np.asarray(lengths)[:, None]).astype("int32")
    return keras.ops.convert_to_numpy(lm({"token_ids": ids, "padding_mask": mask}))  # (B, L, V)


def _cached_logits(lm, ids, prompt_lengths, decoding):
    """Logits (B, L - 1, V) at each position of the rows as decoding computes them; NaN where not computed.

    The prompts, left padded to end at column P, run as one prefill block;
    then one token per step at columns P, P + 1, ... for every row, each row
    fed the next token of its sequence (teacher forcing), by
    `call_with_cache` or `native_decoding.decode_step`.
    """
    from smallcoder.models import native_decoding

    batch, length = ids.shape
    longest = max(prompt_lengths)
    starts = np.asarray([longest - p for p in prompt_lengths], "int32")
    columns = longest + NEW_TOKENS  # every row's sequence ends here
    aligned = np.full((batch, columns), PAD_ID, "int32")
    for row, p in enumerate(prompt_lengths):
        aligned[row, starts[row]:] = ids[row, : p + NEW_TOKENS]
    logits = np.full((batch, length - 1, lm.backbone.vocabulary_size), np.nan, "float32")
    cache = lm.backbone.empty_cache(batch, columns, lm.compute_dtype)
    prefill, _, cache = lm.call_with_cache(aligned[:, :longest], cache, 0, start_index=starts)
    prefill = keras.ops.convert_to_numpy(prefill)
    for row, p in enumerate(prompt_lengths):
        logits[row, :p] = prefill[row, starts[row]:]
    weights = native_decoding.decode_weights(lm.backbone) if decoding == "native" else None
    for column in range(longest, columns - 1):
        if decoding == "native":
            step, cache = native_decoding.decode_step(lm.backbone, weights, aligned[:, column], cache,
                                                      np.int32(column), starts)
        else:
            step, _, cache = lm.call_with_cache(aligned[:, column : column + 1], cache, column, start_index=starts)
            step = step[:, 0]
        step = keras.ops.convert_to_numpy(step)
        for row in range(batch):
            logits[row, column - starts[row]] = step[row]
    return logits


@pytest.mark.parametrize("implementation", _implementations())
@pytest.mark.parametrize("weights", ["float32", "int8", "int8_weights"])
@pytest.mark.parametrize("prompt_lengths", [(7,), (3, 11, 6)], ids=["batch1", "ragged_batch3"])
def test_cached_decoding_logits_equal_the_full_forward(implementation, weights, prompt_lengths):
    lm = _model(implementation, weights)
    ids, lengths = _sequences(prompt_lengths, seed=len(prompt_lengths))
    full = _full_logits(lm, ids, lengths)
    for decoding in _decodings(weights):
        cached = _cached_logits(lm, ids, prompt_lengths, decoding)
        compared = 0
        for row, length in enumerate(lengths):
            # Position t's logits predict token t + 1; the last token predicts nothing compared.
            got, expected = cached[row, : length - 1], full[row, : length - 1]
            assert not np.isnan(got).any(), decoding
            np.testing.assert_allclose(got, expected, rtol=0, err_msg=decoding,
                                       atol=TOLERANCE_OF_STD[weights] * full[row, : length - 1].std())
            compared += length - 1
        assert compared == sum(lengths) - len(lengths)
