"""`from_preset` on the backbone, the causal LM and the tokenizer alike, as keras-hub users expect."""

import numpy as np
import pytest

from smallcoder import SmallCoderBackbone, SmallCoderCausalLM, SmallCoderTokenizer


@pytest.mark.slow  # builds 302M parameters; the same on every backend
def test_the_backbone_builds_the_model_card_preset():
    assert SmallCoderBackbone.from_preset("smallcoder_303m").count_params() == 302_027_520


def test_backbone_and_tokenizer_load_a_saved_preset_folder(tmp_path):
    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    lm.save_to_preset(str(tmp_path / "preset"))

    backbone = SmallCoderBackbone.from_preset(str(tmp_path / "preset"))
    assert isinstance(backbone, SmallCoderBackbone)
    for saved, loaded in zip(lm.backbone.weights, backbone.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(loaded), err_msg=saved.path)

    tokenizer = SmallCoderTokenizer.from_preset(str(tmp_path / "preset"))
    text = "def add(a, b):\n    return a + b\n"
    assert tokenizer.encode(text) == lm.tokenizer.encode(text)


def test_tokenizer_presets():
    assert SmallCoderTokenizer.from_preset("smallcoder_tiny").vocab_size == 4096  # the demo tokenizer
    with pytest.raises(ValueError, match="smallcoder_303m.*Beebey/smallcoder-303m"):
        SmallCoderTokenizer.from_preset("smallcoder_303m")
    with pytest.raises(ValueError, match="neither a built-in preset"):
        SmallCoderTokenizer.from_preset("no/such/folder")
