"""Model FLOPs (PaLM appendix B) and bytes for the benchmarks.

Training FLOPs per token are `6 * N + 12 * L * D * T`, N being the weights a
token is multiplied by (every non-embedding kernel plus the output
projection; the input embedding is a lookup, norms are not counted). The
formula lives in `smallcoder.training.flops`, shared with the MFU callback.
"""

from smallcoder.training.flops import (
    DEVICES,
    device_name,
    flops_per_token,
    matmul_params,
)

__all__ = ["decode_bytes_per_token", "device_table_peak", "flops_per_token", "generation_roofline",
           "matmul_params", "train_flops_per_step"]


def train_flops_per_step(config, batch, seq):
    """Model FLOPs of one training step on a `batch x seq` batch."""
    return flops_per_token(config, seq) * batch * seq


def decode_bytes_per_token(config, bytes_per_weight=4.0, head_bytes_per_weight=None):
    """Weight bytes read to decode one token: the matmul weights + one embedding row.

    `head_bytes_per_weight`: of the output projection and the embedding row,
    when they are stored apart from the blocks' (default: `bytes_per_weight`).
    """
    head = config["hidden_dim"] * config["vocabulary_size"]
    head_bytes = bytes_per_weight if head_bytes_per_weight is None else head_bytes_per_weight
    return ((matmul_params(config) - head) * bytes_per_weight
            + (head + config["hidden_dim"]) * head_bytes)


def generation_roofline(config, prompt_lengths, padded_length, new_tokens, weight_bytes, bandwidth, peak):
    """The least time a `generate` call can take on this machine, prefill and decoding apart.

    Each part is bound by reading memory or by multiply-adds, whichever is
    slower: prefill = max(FLOPs / peak, weight bytes / bandwidth) for the
    left-padded (B, P) prompt block (logits at the last position only);
    each of the `new_tokens - 1` decoding steps after it reads every
    weight once plus the valid float32 keys and values of every row (row b
    at step t: its prompt + t positions) and multiplies them by one token
    per row. The first new token comes from the prefill.

    Args:
        config: backbone init args.
        prompt_lengths: tokens of each prompt (B rows).
        padded_length: P, the prompt block's length.
        new_tokens: tokens generated per row.
        weight_bytes: bytes of weights one step reads (`decode_bytes_per_token`).
        bandwidth, peak: measured bytes/s and FLOP/s.

    Returns:
        dict: `prefill_s`, `decode_s`, `generate_s` (seconds), per decoding
        step on average `bytes_per_step` and `flops_per_step`, per new token
        `bytes_per_token` and `flops_per_token`, and `prefill_flops`.
    """
    layers, heads = config["num_layers"], config["num_query_heads"]
    head_dim = config["hidden_dim"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    rows = len(prompt_lengths)
    params = matmul_params(config)
    head = config["hidden_dim"] * config["vocabulary_size"]
    kv_bytes_per_position = 2 * layers * kv_heads * head_dim * 4
    attention_flops_per_position = 4 * layers * heads * head_dim  # scores and values, per query and key

    causal_pairs = padded_length * (padded_length + 1) / 2
    prefill_flops = rows * (2 * (params - head) * padded_length + 2 * head
                            + attention_flops_per_position * causal_pairs)
    prefill_s = max(prefill_flops / peak, weight_bytes / bandwidth)

    decode_s, step_bytes, step_flops = 0.0, 0.0, 0.0
    steps = new_tokens - 1
    for t in range(1, new_tokens):
        positions = sum(prompt_lengths) + rows * t
        nbytes = weight_bytes + kv_bytes_per_position * positions
        flops = 2 * params * rows + attention_flops_per_position * positions
        decode_s += max(nbytes / bandwidth, flops / peak)
        step_bytes += nbytes
        step_flops += flops
    step_bytes, step_flops = (step_bytes / steps, step_flops / steps) if steps else (0.0, 0.0)
    return {
        "prefill_s": prefill_s, "decode_s": decode_s, "generate_s": prefill_s + decode_s,
        "prefill_flops": prefill_flops, "bytes_per_step": step_bytes, "flops_per_step": step_flops,
        "bytes_per_token": step_bytes / rows, "flops_per_token": step_flops / rows,
    }


def device_table_peak():
    """Datasheet bf16 peak FLOP/s of the first JAX accelerator, or None (CPU, unknown)."""
    try:
        import jax

        name = device_name(jax.devices()[0])
    except Exception:
        return None
    return DEVICES.get(name, {}).get("peak_flops")
