"""Causal LM: cached generation, context limit, fit, preset save/load."""

import keras
import numpy as np
import pytest

from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM


@pytest.fixture(scope="module")
def causal_lm(demo_tokenizer):
    keras.utils.set_random_seed(1)
    backbone = SmallCoderBackbone(
        vocabulary_size=demo_tokenizer.vocab_size, num_layers=2, num_query_heads=4,
        num_key_value_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=128,
        initializer_range=0.2,  # peaky logits: argmax ties are unlikely
    )  # fmt: skip
    lm = SmallCoderCausalLM(backbone, tokenizer=demo_tokenizer)
    lm.compile(sampler="greedy")
    return lm


def full_forward_greedy(causal_lm, prompt, steps, width=64):
    """Greedy decoding by argmax over an uncached forward pass of the whole sequence.

    Rows are right-padded to one width so the compiled predict step is reused.
    """
    ids = list(prompt)
    for _ in range(steps):
        token_ids = np.zeros((1, width), "int32")
        mask = np.zeros((1, width), "int32")
        token_ids[0, : len(ids)], mask[0, : len(ids)] = ids, 1
        logits = causal_lm.predict_on_batch({"token_ids": token_ids, "padding_mask": mask})
        ids.append(int(np.argmax(keras.ops.convert_to_numpy(logits)[0, len(ids) - 1])))
    return ids[len(prompt) :]


def test_cached_greedy_equals_uncached_argmax_for_a_ragged_batch(causal_lm):
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(20, 4000, size=n)) for n in (3, 11, 6)]
    generated = causal_lm.generate(prompts, max_new_tokens=12, stop_token_ids=None, strip_prompt=True)
    for prompt, tokens in zip(prompts, generated):
        assert len(tokens) == 12
        assert tokens == full_forward_greedy(causal_lm, prompt, 12)


def test_generate_on_strings_stops_at_eos_and_strips(causal_lm):
    eos = causal_lm.tokenizer.eos_token_id
    prompt = "def add(a, b):"
    free = causal_lm.generate([prompt], max_new_tokens=8, stop_token_ids=None, strip_prompt=True)[0]
    first = causal_lm.tokenizer.encode(prompt)
    # Stopping on the first generated token returns nothing after the prompt.
    stop_on = full_forward_greedy(causal_lm, first, 1)[0]
    assert causal_lm.generate(prompt, max_new_tokens=8, stop_token_ids=(stop_on,), strip_prompt=True) == ""
    assert isinstance(free, str) and eos is not None
    full = causal_lm.generate(prompt, max_new_tokens=8, stop_token_ids=None)
    assert full.startswith(prompt)


def test_context_limit_is_enforced(causal_lm):
    prompt = list(range(5, 125))  # 120 tokens in a 128-token context
    with pytest.raises(ValueError, match="exceeds the 128-token context"):
        causal_lm.generate([prompt], max_new_tokens=16, stop_token_ids=None)
    out = causal_lm.generate([prompt], max_new_tokens=16, stop_token_ids=None, truncate_prompt=True)[0]
    assert len(out) == 128 and out[:112] == prompt[-112:]


def make_batches(vocab, batch=4, length=32, n=4, seed=0):
    """A learnable task: each row counts up by one from a random start."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(10, vocab - length - 2, size=(n, batch, 1))
    windows = starts + np.arange(length + 1)
    x = windows[..., :-1].astype("int32")
    y = windows[..., 1:].astype("int32")
    weights = np.ones_like(y, "float32")
    weights[..., -4:] = 0.0  # masked targets do not count
    return [({"token_ids": x[i], "padding_mask": np.ones_like(x[i])}, y[i], weights[i]) for i in range(n)]


def test_fit_lowers_the_loss_and_preset_round_trip_is_bit_identical(tmp_path, demo_tokenizer):
    keras.utils.set_random_seed(2)
    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    lm.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.0))
    batches = make_batches(lm.backbone.vocabulary_size)
    x, y, w = batches[0]
    before = float(lm.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)["loss"])

    def repeat():
        while True:
            yield from batches

    lm.fit(repeat(), epochs=1, steps_per_epoch=24, verbose=0)
    after = float(lm.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)["loss"])
    assert after < before - 0.5, (before, after)

    lm.save_to_preset(tmp_path / "preset")
    loaded = SmallCoderCausalLM.from_preset(str(tmp_path / "preset"))
    assert loaded.tokenizer.encode("def f(): pass") == demo_tokenizer.encode("def f(): pass")
    expected = keras.ops.convert_to_numpy(lm(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), expected)


def test_unknown_preset_and_bad_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a built-in preset"):
        SmallCoderCausalLM.from_preset("smallcoder_7b")
    with pytest.raises(ValueError, match="not a Keras preset folder"):
        SmallCoderCausalLM.from_preset(str(tmp_path))
