"""The native decoding kernels against plain numpy and XLA: kernel outputs, greedy tokens, the choice.

The kernels run on JAX on an x86-64 CPU with AVX2 and FMA and the extension
built; elsewhere these tests skip, except the checks of the choice itself.
Logits of the whole decoding step against the full forward pass are in
tests/models/test_cached_logits.py.
"""

import gc

import keras
import numpy as np
import pytest

from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM


def _kernels_or_skip():
    from smallcoder.models import decode_kernels

    if not decode_kernels.available():
        pytest.skip("the native decoding kernels do not run here (JAX on an x86-64 CPU with AVX2/FMA only)")
    return decode_kernels


@pytest.fixture(params=[256, 512], ids=["8-lane", "16-lane"])
def kernels(request):
    """The kernels with their products 8 lanes wide (AVX2), then 16 (AVX-512; skipped on a CPU without)."""
    kernels = _kernels_or_skip()
    try:
        if kernels.vector_bits(request.param) != request.param:
            pytest.skip("this CPU lacks AVX-512")
        yield kernels
    finally:
        kernels.vector_bits(512)  # back to the CPU's widest


# Shapes with tails: columns not a multiple of the 16-wide tile, rows around the register blocks (6 rows
# of one tile 8 lanes wide; 8 rows of two tiles 16 wide), one row with inputs not a multiple of its four
# streams (and fewer than four), one row over enough tiles that a thread's chunk runs as four streams of
# tiles with some left over (150 tiles, the last partial), and rows over enough tiles that chunks hold
# pairs of tiles and an odd one (76 tiles; the tests' 8 host devices make chunks small).
@pytest.mark.parametrize("rows, inputs, columns",
                         [(1, 768, 3072), (1, 38, 21), (1, 3, 5), (1, 37, 2390), (16, 96, 40), (7, 37, 21),
                          (13, 130, 33), (16, 300, 50), (9, 130, 1210)])
def test_matmul_equals_numpy_for_float32_and_int8_kernels(kernels, rows, inputs, columns):
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, inputs)).astype("float32")
    w = rng.standard_normal((inputs, columns)).astype("float32")
    got = np.asarray(kernels.matmul(x, kernels.pack(w)))
    expected = x.astype("float64") @ w
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())

    q = rng.integers(-127, 128, (inputs, columns)).astype("int8")
    scale = rng.uniform(50, 200, columns).astype("float32")  # Keras' int8 layout: w = q / scale
    got = np.asarray(kernels.matmul(x, kernels.pack(q, scale)))
    expected = (x.astype("float64") @ q) / scale
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# The final norm and the output projection: one row over 150 tiles (four tiles side by side), a batch; 8-lane tails.
@pytest.mark.parametrize("rows, inputs, columns", [(1, 37, 2390), (5, 37, 21)])
def test_matmul_after_rms_norm_equals_keras(kernels, rows, inputs, columns):
    rng = np.random.default_rng(inputs)
    x = rng.standard_normal((rows, inputs)).astype("float32") * 3
    norm = keras.layers.RMSNormalization(epsilon=1e-5)
    norm.build((rows, inputs))
    norm.scale.assign(rng.uniform(0.5, 1.5, inputs).astype("float32"))
    normed = np.asarray(norm(x), "float64")
    w = rng.standard_normal((inputs, columns)).astype("float32")
    q = rng.integers(-127, 128, (inputs, columns)).astype("int8")
    scale = rng.uniform(50, 200, columns).astype("float32")
    for packed, kernel in ((kernels.pack(w), w), (kernels.pack(q, scale), q / scale)):
        expected = normed @ kernel
        got = np.asarray(kernels.matmul(x, packed, norm=(norm.scale, norm.epsilon)))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def _block_model(hidden_dim, intermediate_dim, weights):
    keras.utils.set_random_seed(hidden_dim)
    backbone = SmallCoderBackbone(
        vocabulary_size=64, num_layers=1, num_query_heads=4, num_key_value_heads=2, hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim, max_sequence_length=64, initializer_range=0.3,
    )  # fmt: skip
    rng = np.random.default_rng(hidden_dim)
    block = backbone.transformer_layers[0]
    for norm in (block.pre_attention_norm, block.pre_feedforward_norm):
        norm.scale.assign(rng.uniform(0.5, 1.5, hidden_dim).astype("float32"))
    lm = SmallCoderCausalLM(backbone)
    if weights == "int8":
        lm.quantize_for_generation("int8")  # weight-only: the kernels read the int8 kernels
    return backbone


# Head sizes with an 8-lane tail (20, 260, 140); a ragged batch of 3 (rows starting at 0, 4 and 11, grouped
# query heads), also wide enough that chunks hold pairs of tiles (35-75 tiles per product), and one row wide
# enough that threads read chunks of four tiles side by side, some left over, in every product (65 tiles of
# the model width with the residual added, 150 of gate | up; the tests' 8 host devices make chunks small).
@pytest.mark.parametrize("batch, hidden_dim, intermediate_dim", [(3, 80, 72), (3, 560, 600), (1, 1040, 1195)])
@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_decoder_block_equals_the_keras_block_with_its_cache(kernels, batch, hidden_dim, intermediate_dim,
                                                             weights):
    from keras import ops

    from smallcoder import compat
    from smallcoder.models.native_decoding import _norm, decode_weights

    backbone = _block_model(hidden_dim, intermediate_dim, weights)
    block, (weights_of_blocks, _) = backbone.transformer_layers[0], decode_weights(backbone)
    packed = weights_of_blocks[0]
    kv_heads, head_dim = 2, hidden_dim // 4
    length, index = 17, 12
    start = np.asarray([0, 4, 11][:batch], "int32")
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, hidden_dim)).astype("float32")
    cache = [rng.standard_normal((batch * kv_heads, length, head_dim)).astype("float32") for _ in range(2)]
    positions = (index - start)[:, None]  # (B, 1)

    span = np.arange(length)
    mask = (span >= start[:, None]) & (span <= index)  # (B, S)
    expected, expected_cache = block.call_with_cache(x[:, None], positions, mask[:, None], tuple(cache), index)

    cos, sin = (np.asarray(t).reshape(batch, head_dim) for t in compat.rope_cos_sin(
        block.attention.rotary_embedding, np.zeros((batch, 1, 1, head_dim), "float32"), positions))
    got, keys, values = kernels.decoder_block(
        x, cos, sin, *cache, start, np.int32(index), _norm(block.pre_attention_norm), packed.qkv, packed.output,
        _norm(block.pre_feedforward_norm), packed.gate_up, packed.down)
    expected = np.asarray(expected[:, 0])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    for name, mine, theirs, before in zip(("key", "value"), (keys, values), expected_cache, cache):
        mine, theirs = np.asarray(mine), np.asarray(ops.convert_to_numpy(theirs))
        written = theirs[:, index]
        np.testing.assert_allclose(mine[:, index], written, rtol=0, atol=1e-5 * np.abs(written).max(), err_msg=name)
        np.testing.assert_array_equal(np.delete(mine, index, axis=1), np.delete(before, index, axis=1))


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(4)
    backbone = SmallCoderBackbone(
        vocabulary_size=300, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
        intermediate_dim=72, max_sequence_length=96, initializer_range=0.3,  # peaky logits: no near-ties
    )  # fmt: skip
    model = SmallCoderCausalLM(backbone)
    model.compile(sampler="greedy")
    return model


def _generate_both_ways(lm, prompts, **kwargs):
    outputs = {}
    for decoding in ("xla", "native"):
        lm.use_decoding(decoding)
        outputs[decoding] = lm.generate(prompts, **kwargs)
    lm.use_decoding("auto")
    return outputs


def test_native_greedy_tokens_equal_xla_for_float32_and_int8_weights(lm):
    _kernels_or_skip()
    rng = np.random.default_rng(1)
    prompts = [list(rng.integers(1, 300, size=n)) for n in (5, 19, 1, 12)]
    for weights in ("float32", "int8"):
        if weights == "int8":
            lm.quantize_for_generation("int8")  # weight-only: the native kernels run it
        out = _generate_both_ways(lm, prompts, max_new_tokens=20, stop_token_ids=None, strip_prompt=True)
        assert out["native"] == out["xla"], weights
        assert [len(t) for t in out["native"]] == [20] * 4
    # A stop token ends each row where the plain path ends it.
    free = out["xla"]
    stop = free[1][3]
    out = _generate_both_ways(lm, prompts, max_new_tokens=20, stop_token_ids=(stop,), strip_prompt=True)
    assert out["native"] == out["xla"] and len(out["native"][1]) == free[1].index(stop)


def test_packed_weights_are_kept_between_generate_calls_until_a_weight_changes():
    _kernels_or_skip()
    keras.utils.set_random_seed(5)
    backbone = SmallCoderBackbone(
        vocabulary_size=300, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
        intermediate_dim=72, max_sequence_length=96, initializer_range=0.3,
    )  # fmt: skip
    model = SmallCoderCausalLM(backbone)
    model.compile(sampler="greedy")
    prompts = [[5, 6, 7], [8, 9]]
    first = model.generate(prompts, max_new_tokens=8, stop_token_ids=None)
    packed = model._packed_weights.arrays(backbone)
    assert model.generate(prompts, max_new_tokens=8, stop_token_ids=None) == first
    assert model._packed_weights.arrays(backbone)[0] is packed[0]  # not packed again

    # A new output projection (as fit or load_weights would write): packed again, and followed.
    head = backbone.token_embedding.reverse_embeddings
    head.assign(np.random.default_rng(6).normal(0, 1.0, head.shape).astype("float32"))
    gc.collect()
    assert model._packed_weights._packed is None  # the stale copy let go when the old kernel was freed
    after = _generate_both_ways(model, prompts, max_new_tokens=8, stop_token_ids=None)
    assert after["native"] == after["xla"] != first
    assert model._packed_weights.arrays(backbone)[0] is not packed[0]


def test_native_decoding_is_refused_where_it_cannot_run():
    keras.utils.set_random_seed(0)
    model = SmallCoderCausalLM.from_preset("smallcoder_test")
    with pytest.raises(ValueError, match="decoding='fast'"):
        model.use_decoding("fast")
    model.quantize("int8")  # Keras' default int8: activations quantized per token, which the kernels do not do
    assert model.decoding == "xla"
    assert model.decoding_note.startswith("decoding: xla (native kernels unavailable: ")
    with pytest.raises(ValueError, match="decoding='native' cannot run here"):
        model.use_decoding("native")


def test_without_the_built_extension_generate_falls_back_to_xla_and_says_why(lm, monkeypatch):
    from smallcoder.models import decode_kernels

    if keras.config.backend() != "jax":
        pytest.skip("elsewhere the backend, not the extension, rules the kernels out (test above)")
    prompts = [[5, 6, 7], [9]]
    expected = _generate_both_ways(lm, prompts, max_new_tokens=6, stop_token_ids=None)["xla"]
    monkeypatch.setattr(decode_kernels, "_extension_path", lambda: None)  # as after an install with no compiler
    lm.generate_function = None
    assert not decode_kernels.available() and lm.decoding == "xla"
    assert "smallcoder._decode_kernels was not built at install" in lm.decoding_note
    assert lm.generate(prompts, max_new_tokens=6, stop_token_ids=None) == expected
