"""Cached decoding gives the logits of the full forward pass, token by token.

The KV-cache path (`call_with_cache`: a prefill over the right-padded prompt
block, then one token per step, as `generate_step` runs it) against `call`
on the whole sequences: batch 1 and a ragged batch of 3, float32 and int8
weights, every implementation this backend runs.

Tolerance, max |cached - full| over every compared logit of a row, relative
to the std of that row's full logits: float32 2e-5 (float round-off of two
summation orders; measured up to 2.8e-6 on the three backends); int8 1e-3
(activations are quantized to int8 per token in both paths, so a round-off
difference in one layer's input can move the next layer's input by a
quantization step; measured up to 2.7e-6).
"""

import functools

import keras
import numpy as np
import pytest

from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM

TOLERANCE_OF_STD = {"float32": 2e-5, "int8": 1e-3}
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
    return lm


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


def _cached_logits(lm, ids, prompt_lengths):
    """Logits (B, L - 1, V) at each position as decoding computes them; NaN where not computed.

    Prefill: each row's prompt, padded to the longest, from position 0.
    Then one token per step from the shortest prompt's last token on: rows
    still inside their prompt are fed their prompt token, the others the
    next token of their sequence (teacher forcing), as the sampler does.
    """
    batch, length = ids.shape
    longest, shortest = max(prompt_lengths), min(prompt_lengths)
    prompts = np.full((batch, longest), PAD_ID, "int32")
    for row, p in enumerate(prompt_lengths):
        prompts[row, :p] = ids[row, :p]
    logits = np.full((batch, length - 1, lm.backbone.vocabulary_size), np.nan, "float32")
    cache = lm.backbone.empty_cache(batch, length, lm.compute_dtype)
    prefill, _, cache = lm.call_with_cache(prompts, cache, 0)
    prefill = keras.ops.convert_to_numpy(prefill)
    for row, p in enumerate(prompt_lengths):
        logits[row, :p] = prefill[row, :p]
    decode_kernels = lm.backbone.decode_kernels() if batch == 1 else None  # as generate_step
    for index in range(shortest - 1, length - 1):
        step, _, cache = lm.call_with_cache(ids[:, index : index + 1], cache, index, decode_kernels)
        logits[:, index] = keras.ops.convert_to_numpy(step)[:, 0]
    return logits


@pytest.mark.parametrize("implementation", _implementations())
@pytest.mark.parametrize("weights", ["float32", "int8"])
@pytest.mark.parametrize("prompt_lengths", [(7,), (3, 11, 6)], ids=["batch1", "ragged_batch3"])
def test_cached_decoding_logits_equal_the_full_forward(implementation, weights, prompt_lengths):
    lm = _model(implementation, weights)
    ids, lengths = _sequences(prompt_lengths, seed=len(prompt_lengths))
    full = _full_logits(lm, ids, lengths)
    cached = _cached_logits(lm, ids, prompt_lengths)
    compared = 0
    for row, length in enumerate(lengths):
        # Position t's logits predict token t + 1; the last token predicts nothing compared.
        got, expected = cached[row, : length - 1], full[row, : length - 1]
        assert not np.isnan(got).any()
        np.testing.assert_allclose(got, expected, rtol=0,
                                   atol=TOLERANCE_OF_STD[weights] * full[row, : length - 1].std())
        compared += length - 1
    assert compared == sum(lengths) - len(lengths)
