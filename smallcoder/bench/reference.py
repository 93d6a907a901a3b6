"""The reference side: the same model in Hugging Face `transformers` + torch.

Each function returns a zero-argument callable that does one unit of work
(a training step, a `generate` call), so the benchmarks can alternate it with
this package's callable in one process.
"""

import numpy as np

from smallcoder.bench.peak import torch_device


def hf_llama_config(config, dtype="float32"):
    """A `transformers.LlamaConfig` with the dims of backbone `config` (a dict of init args)."""
    from transformers import LlamaConfig

    heads = config["num_query_heads"]
    return LlamaConfig(
        vocab_size=config["vocabulary_size"],
        hidden_size=config["hidden_dim"],
        intermediate_size=config["intermediate_dim"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=config.get("num_key_value_heads") or heads,
        head_dim=config["hidden_dim"] // heads,
        max_position_embeddings=config.get("max_sequence_length", 1024),
        rms_norm_eps=config.get("layer_norm_epsilon", 1e-5),
        rope_theta=config.get("rope_max_wavelength", 10000.0),
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        attention_bias=False,
        mlp_bias=False,
        dtype=_weight_dtype(dtype),
    )


def _weight_dtype(dtype):
    """The weights' dtype name: mixed precision keeps float32 weights (and autocasts the compute)."""
    return "float32" if dtype == "mixed_bfloat16" else dtype


def _torch_dtype(dtype):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[_weight_dtype(dtype)]


def hf_train_step(config, batch, seq, dtype="float32", seed=0, microbatches=1):
    """One AdamW step of `LlamaForCausalLM` (sdpa attention) on a random batch.

    On a CUDA GPU if torch sees one. `"mixed_bfloat16"` keeps float32
    weights and runs the forward under `torch.autocast(bfloat16)`, as the
    Trainer's `bf16=True` does (and as Keras' mixed policy does). The loss
    is the mean token cross-entropy on the logits, as in this package's
    `fit`. With `microbatches` M, the step runs M forward/backward
    passes over rows m, m + M, ... (as this package splits them), each loss
    divided by M, accumulating `.grad` before one `optimizer.step()`.
    Returns `(step, model)`; `step()` returns the loss.
    """
    import torch
    from transformers import LlamaForCausalLM

    from smallcoder.training.microbatching import check_microbatches

    torch.manual_seed(seed)
    device = torch_device()
    model = LlamaForCausalLM(hf_llama_config(config, dtype)).to(device=device, dtype=_torch_dtype(dtype))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    rng = np.random.default_rng(seed)
    vocab = config["vocabulary_size"]
    x = torch.from_numpy(rng.integers(0, vocab, (batch, seq), dtype=np.int64)).to(device)
    y = torch.from_numpy(rng.integers(0, vocab, (batch, seq), dtype=np.int64)).to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "mixed_bfloat16")

    check_microbatches(batch, microbatches)
    row_sets = torch.arange(batch).reshape(-1, microbatches).T  # (M, B/M), strided

    def step():
        total = 0.0
        for rows in row_sets:
            with autocast:
                logits = model(input_ids=x[rows], use_cache=False).logits  # (B/M, T, V)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab).float(), y[rows].reshape(-1))
            (loss / microbatches).backward()
            total += float(loss.detach()) / microbatches
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()  # the update is asynchronous; time it too
        return total

    return step, model


def hf_model_from_keras(causal_lm, directory, dtype="float32"):
    """`LlamaForCausalLM` with the weights of `causal_lm` (via `smallcoder.convert.save_hf`)."""
    from transformers import LlamaForCausalLM

    from smallcoder.convert import save_hf

    save_hf(causal_lm, directory, dtype=dtype, overwrite=True, progress=False)
    model = LlamaForCausalLM.from_pretrained(directory, dtype=_torch_dtype(dtype)).to(torch_device())
    model.eval()
    return model


def hf_generate(model, prompts, new_tokens):
    """A callable running greedy `model.generate` on `prompts` (lists of ids), left padded.

    It returns the new token ids of each prompt (stop tokens disabled, so
    every row gets exactly `new_tokens`).
    """
    import torch

    longest = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), longest), dtype=np.int64)
    mask = np.zeros((len(prompts), longest), dtype=np.int64)
    for row, p in enumerate(prompts):
        ids[row, longest - len(p):] = p
        mask[row, longest - len(p):] = 1
    ids, mask = torch.from_numpy(ids).to(model.device), torch.from_numpy(mask).to(model.device)

    def run():
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
            )
        return [row.tolist() for row in out[:, longest:]]

    return run
