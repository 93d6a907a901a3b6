"""Model FLOPs per token and accelerator peaks, for MFU and `smallcoder plan`.

FLOPs per trained token (forward + backward, PaLM appendix B)::

    6 * N  +  12 * L * D * T

N counts every weight a token multiplies by: all non-embedding kernels plus
the output projection (V x D); the input embedding is a lookup. The second
term is attention scores and values over a context of T tokens (full, not
halved for causality, as MFU is usually quoted).
"""

from smallcoder.models.sizes import matmul_params

# Dense bf16 peak FLOP/s per chip, HBM per chip (bytes).
DEVICES = {
    "tpu-v4": {"peak_flops": 275e12, "memory": 32 * 2**30},
    "tpu-v5e": {"peak_flops": 197e12, "memory": 16 * 2**30},
    "tpu-v5p": {"peak_flops": 459e12, "memory": 95 * 2**30},
    "h100": {"peak_flops": 989e12, "memory": 80 * 2**30},
    "h200": {"peak_flops": 989e12, "memory": 141 * 10**9},
}


def flops_per_token(config, sequence_length, frozen_base=False):
    """Training FLOPs (forward + backward) per token at context `sequence_length`.

    `frozen_base` (LoRA): the backward pass computes no gradients for the
    frozen kernels, only for their inputs: 4 N instead of 6 N (the adapters'
    own FLOPs, under 1% of N at the ranks LoRA uses, are left out).
    """
    attention = 12 * config["num_layers"] * config["hidden_dim"] * sequence_length
    return (4 if frozen_base else 6) * matmul_params(config) + attention


def device_name(device):
    """Map a JAX/Keras device to a `DEVICES` key, or `"cpu"`/None."""
    kind = getattr(device, "device_kind", str(device)).lower()
    for key, needle in (("tpu-v5p", "v5p"), ("tpu-v5e", "v5 lite"), ("tpu-v5e", "v5e"),
                        ("tpu-v4", "v4"), ("h200", "h200"), ("h100", "h100")):
        if needle in kind:
            return key
    return "cpu" if "cpu" in kind else None


def peak_flops(device_kind=None):
    """`(peak FLOP/s per device, how it was found)` for this machine's first device."""
    if device_kind is None:
        try:
            import keras

            if keras.config.backend() == "jax":
                import jax

                device_kind = device_name(jax.devices()[0])
        except Exception:
            device_kind = None
    if device_kind in DEVICES:
        return DEVICES[device_kind]["peak_flops"], f"{device_kind} table"
    return measured_matmul_peak(), "measured: float32 matmul on this host"


def measured_matmul_peak():
    """float32 matmul FLOP/s measured now with the Keras backend's framework (`bench.peak`).

    On a shared host the figure, and the MFU derived from it, is noisy.
    """
    import keras

    from smallcoder.bench.peak import matmul_peak

    return matmul_peak(framework=keras.config.backend())["flops_per_s"]
