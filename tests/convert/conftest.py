"""Tiny random Llama checkpoints written by `transformers`, for the converter tests."""

import pytest

VOCAB = 384  # model vocabulary; the trained tokenizer may have fewer tokens
HIDDEN, HEADS, LAYERS, INTERMEDIATE, CONTEXT = 64, 4, 2, 128, 128
SHARD_BYTES = 40_000  # splits a tiny checkpoint into several files


def _corpus():
    # Deterministic code text shipped with Python itself.
    import inspect
    import json.decoder
    import json.encoder

    return [inspect.getsource(json.encoder), inspect.getsource(json.decoder)] * 2


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Run these tiny models on one torch thread, restored afterwards.

    For (64-wide) tensors, torch's intra-op threads only add synchronisation;
    on a loaded 2-core machine it made generation ~10x slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from smallcoder.tokenizer import train_tokenizer

    return train_tokenizer(_corpus(), vocab_size=VOCAB)


def _write_hf_checkpoint(folder, tokenizer, *, kv_heads=HEADS, tied=False, rope_theta=10000.0,
                        rms_norm_eps=1e-5, dtype="float32", sharded=False, seed=0, **config_kwargs):
    """A random `LlamaForCausalLM` saved by `save_pretrained`, plus `tokenizer`.

    Weights are redrawn (std 0.15, norms around 1) so that every tensor
    matters to the logits and greedy decoding does not collapse at once.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=kv_heads,
        max_position_embeddings=CONTEXT, rope_theta=rope_theta, rms_norm_eps=rms_norm_eps,
        tie_word_embeddings=tied, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, **config_kwargs,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
            else:
                parameter.normal_(0.0, 0.15)
    model.to(getattr(torch, dtype))
    max_shard = SHARD_BYTES if sharded else "10GB"
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=max_shard)
    tokenizer.save(folder)
    return folder


@pytest.fixture(scope="session")
def make_hf_checkpoint(tmp_path_factory, tiny_tokenizer):
    """`make_hf_checkpoint(**options) -> folder`: see `_write_hf_checkpoint`."""

    def make(**options):
        folder = tmp_path_factory.mktemp("hf")
        return str(_write_hf_checkpoint(folder, tiny_tokenizer, **options))

    return make
