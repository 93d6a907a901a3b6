"""int8 quantization (Keras `quantize("int8")`) of the causal LM: logits near float32, generate runs."""

import keras
import numpy as np

from smallcoder.bench.quantization import LOGIT_TOLERANCE_OF_STD  # max |logit diff| / std of float32 logits
from smallcoder.models import SmallCoderCausalLM


def _model_batch_and_float32_logits(seed):
    """The test model (greedy), a (2, 16) batch and its float32 logits."""
    keras.utils.set_random_seed(3)
    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    lm.compile(sampler="greedy")
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(1, 4000, (2, 16)).astype("int32"), "padding_mask": np.ones((2, 16), "int32")}
    return lm, x, keras.ops.convert_to_numpy(lm.predict_on_batch(x))


def _assert_logits_within_tolerance(lm, x, reference):
    quantized = keras.ops.convert_to_numpy(lm.predict_on_batch(x))
    assert np.abs(quantized - reference).max() <= LOGIT_TOLERANCE_OF_STD * reference.std()


def test_int8_logits_within_tolerance_and_generate_runs():
    lm, x, reference = _model_batch_and_float32_logits(seed=0)
    prompts = [[5, 6, 7, 8], [9, 10]]

    lm.quantize("int8")
    assert lm.backbone.token_embedding.quantization_mode == "int8"
    assert lm.backbone.transformer_layers[0].attention.query.quantization_mode == "int8"
    _assert_logits_within_tolerance(lm, x, reference)

    one = lm.generate(prompts[:1], max_new_tokens=6, stop_token_ids=None, strip_prompt=True)  # padded to 2 rows on jax
    both = lm.generate(prompts, max_new_tokens=6, stop_token_ids=None, strip_prompt=True)
    assert len(one) == 1 and len(one[0]) == 6
    assert one[0] == both[0]  # the padding row does not change the answer


def test_int8_blocks_keeps_the_embedding_and_output_projection_float():
    lm, x, reference = _model_batch_and_float32_logits(seed=1)

    lm.quantize_for_generation("int8-blocks")
    assert lm.backbone.token_embedding.quantization_mode is None
    block = lm.backbone.transformer_layers[0]
    assert block.attention.query.quantization_mode == "int8" and block.feedforward_gate.quantization_mode == "int8"
    _assert_logits_within_tolerance(lm, x, reference)
    out = lm.generate([[5, 6, 7, 8]], max_new_tokens=4, stop_token_ids=None, strip_prompt=True)
    assert len(out[0]) == 4
