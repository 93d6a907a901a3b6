"""HF <-> Keras conversion: logits and greedy parity with transformers, exact round trips."""

import numpy as np
import pytest

# Each case mixes the axes: attention kind, tied embeddings, rope_theta,
# rms_norm_eps, file dtype, single file or shards.
CASES = {
    "mha-untied-theta1e4-eps1e5-f32-single": dict(
        kv_heads=4, tied=False, rope_theta=10000.0, rms_norm_eps=1e-5, dtype="float32", sharded=False
    ),
    "gqa-tied-theta5e5-eps1e6-f32-sharded": dict(
        kv_heads=2, tied=True, rope_theta=500000.0, rms_norm_eps=1e-6, dtype="float32", sharded=True
    ),
    "mqa-untied-theta5e5-eps1e6-bf16-sharded": dict(
        kv_heads=1, tied=False, rope_theta=500000.0, rms_norm_eps=1e-6, dtype="bfloat16", sharded=True
    ),
    "mha-tied-theta1e4-eps1e5-bf16-single": dict(
        kv_heads=4, tied=True, rope_theta=10000.0, rms_norm_eps=1e-5, dtype="bfloat16", sharded=False
    ),
}
PROMPTS = [[17, 250, 3, 99, 42, 7, 300], [120, 5, 61]]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def checkpoint(make_hf_checkpoint):
    """`checkpoint(case) -> (folder, causal_lm loaded with load_hf)`, built once per case."""
    from smallcoder.convert import load_hf

    cache = {}

    def get(case):
        if case not in cache:
            folder = make_hf_checkpoint(seed=list(CASES).index(case), **CASES[case])
            cache[case] = folder, load_hf(folder)
        return cache[case]

    return get


def _reference(folder):
    """transformers' model in float32 (bfloat16 files are upcast exactly)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _tensors(folder):
    """`{name: torch tensor}` of every safetensors file in `folder`."""
    import glob
    import os

    from safetensors import safe_open

    tensors = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    return tensors


def _numpy(variable):
    """A Keras variable as float32 numpy (exact for bfloat16 too)."""
    from keras import ops

    return np.asarray(ops.convert_to_numpy(ops.cast(variable.value, "float32")))


def _hf_config(folder):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder).to_dict()
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    return config


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_greedy_generation_match_transformers(case, checkpoint):
    import torch
    from keras import ops

    folder, causal_lm = checkpoint(case)
    reference = _reference(folder)
    token_ids = np.random.default_rng(0).integers(0, causal_lm.backbone.vocabulary_size, (2, 16)).astype("int32")

    logits = causal_lm({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)})
    with torch.no_grad():
        expected = reference(torch.from_numpy(token_ids).long()).logits.numpy()
    diff = float(np.max(np.abs(ops.convert_to_numpy(logits).astype("float32") - expected)))
    print(f"{case}: max |logits - transformers| = {diff:.2e}")
    assert diff < 1e-4

    causal_lm.compile(sampler="greedy")
    generated = causal_lm.generate(PROMPTS, max_new_tokens=NEW_TOKENS, stop_token_ids=None, strip_prompt=True)
    for prompt, ours in zip(PROMPTS, generated):
        with torch.no_grad():
            theirs = reference.generate(
                torch.tensor([prompt]), do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=None
            )[0, len(prompt) :].tolist()
        assert len(theirs) == NEW_TOKENS
        assert ours == theirs
        assert len(set(theirs)) > 1, "degenerate test: the model repeats one token"


@pytest.mark.parametrize("case", list(CASES))
def test_hf_to_keras_to_hf_is_exact(case, checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from smallcoder.convert import load_hf, save_hf

    folder, causal_lm = checkpoint(case)
    out = str(tmp_path / "hf")
    options = CASES[case]
    save_hf(causal_lm, out, dtype=options["dtype"], max_shard_size=40_000 if options["sharded"] else None)

    source, written = _tensors(folder), _tensors(out)
    assert sorted(written) == sorted(source)
    for name, tensor in source.items():
        assert written[name].dtype == tensor.dtype, name
        assert torch.equal(written[name], tensor), name
    assert _hf_config(out) == _hf_config(folder)

    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    assert model.generation_config.eos_token_id == causal_lm.tokenizer.eos_token_id
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    text = "def add(a, b):\n    return a + b  # 123\n"
    assert hf_tokenizer(text)["input_ids"] == causal_lm.tokenizer.encode(text)
    assert hf_tokenizer.eos_token_id == causal_lm.tokenizer.eos_token_id

    # ... and back to Keras: bit-identical variables.
    reloaded = load_hf(out)
    for before, after in zip(causal_lm.backbone.weights, reloaded.backbone.weights):
        assert before.path == after.path
        assert np.array_equal(_numpy(before), _numpy(after)), before.path


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_keras_to_hf_to_keras_is_exact(dtype, tiny_tokenizer, tmp_path):
    from smallcoder.convert import load_hf, save_hf
    from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM

    backbone = SmallCoderBackbone(
        vocabulary_size=384, num_layers=2, num_query_heads=4, hidden_dim=64, intermediate_dim=128,
        num_key_value_heads=2, rope_max_wavelength=500000.0, layer_norm_epsilon=1e-6,
        max_sequence_length=96, tie_word_embeddings=False, dtype=dtype,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    for variable in backbone.weights:  # norms away from 1 too, so a swap would show
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
    causal_lm = SmallCoderCausalLM(backbone, tokenizer=tiny_tokenizer)

    out = str(tmp_path / "hf")
    save_hf(causal_lm, out, dtype=dtype)
    reloaded = load_hf(out, dtype=dtype)

    def config(b):
        return {k: v for k, v in b.get_config().items() if k != "name"}

    assert config(reloaded.backbone) == config(backbone)
    assert len(reloaded.backbone.weights) == len(backbone.weights)
    for before, after in zip(backbone.weights, reloaded.backbone.weights):
        assert before.path == after.path and before.dtype == after.dtype == dtype
        assert np.array_equal(_numpy(before), _numpy(after)), before.path
    assert reloaded.tokenizer.eos_token_id == tiny_tokenizer.eos_token_id
