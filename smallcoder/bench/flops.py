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

__all__ = ["decode_bytes_per_token", "device_table_peak", "flops_per_token", "matmul_params",
           "train_flops_per_step"]


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


def device_table_peak():
    """Datasheet bf16 peak FLOP/s of the first JAX accelerator, or None (CPU, unknown)."""
    try:
        import jax

        name = device_name(jax.devices()[0])
    except Exception:
        return None
    return DEVICES.get(name, {}).get("peak_flops")
