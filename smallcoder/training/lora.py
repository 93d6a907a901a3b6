"""LoRA: train low-rank adapters on chosen projections, every other weight frozen.

`enable` is keras-hub's `Backbone.enable_lora` (every layer frozen, then each
target `EinsumDense`/`Dense` gets Keras' adapters) with a scale: a target
kernel W becomes

    W + (alpha / rank) * lora_kernel_a @ lora_kernel_b
    lora_kernel_a: W.shape[:-1] + (rank,)   (he_uniform)
    lora_kernel_b: (rank, W.shape[-1])      (zeros: training starts from W)

e.g. for `query` (D, N, H): a (D, N, r), b (r, H); for `feedforward_gate`
(D, F): a (D, r), b (r, F). The model's JAX kernels read `layer.kernel`, which
Keras returns with the adapters added, so every code path trains them.

After training, `merge` folds the adapters into the kernels (the exported
preset and Hugging Face folder are plain models), and `write_adapters` saves
the adapters alone in keras-hub's `save_lora_weights` format (`*.lora.h5`),
with alpha / rank folded into `lora_kernel_b`, so that
`backbone.enable_lora(rank, target_layer_names=[...])` (whose alpha is rank)
then `backbone.load_lora_weights(path)` on the base model gives the trained one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The seven projections of a decoder block (their layer names); keras-hub's default is query, value.
TARGETS = ("query", "key", "value", "attention_output", "feedforward_gate", "feedforward_intermediate",
           "feedforward_output")
DEFAULT_TARGETS = ("query", "value")
ADAPTERS_FILE = "adapters.lora.h5"


def _kernel_shapes(config):
    """`{target: kernel shape}` of one decoder block."""
    D, F, N = config["hidden_dim"], config["intermediate_dim"], config["num_query_heads"]
    K = config.get("num_key_value_heads") or N
    H = D // N
    return {"query": (D, N, H), "key": (D, K, H), "value": (D, K, H), "attention_output": (N, H, D),
            "feedforward_gate": (D, F), "feedforward_intermediate": (D, F), "feedforward_output": (F, D)}


def adapter_parameter_count(config, rank, targets=DEFAULT_TARGETS):
    """Trainable parameters of rank-`rank` adapters on `targets` in every block, without building
    the model (303M, rank 8 on query and value: 2,396,160)."""
    shapes = _kernel_shapes(config)
    per_block = sum(int(np.prod(shapes[t][:-1])) * rank + rank * shapes[t][-1] for t in targets)
    return config["num_layers"] * per_block


def enable(backbone, rank, alpha=None, targets=DEFAULT_TARGETS):
    """Freeze `backbone` and add rank-`rank` adapters to its `targets` layers, scaled by `alpha / rank`.

    Call it where the model lives (inside the run's distribution scope: the
    adapters get their layouts from `smallcoder.distribution.weight_specs`).
    """
    backbone.enable_lora(rank, target_layer_names=list(targets))
    for layer in adapted_layers(backbone):
        layer.lora_alpha = alpha if alpha is not None else rank


def adapted_layers(backbone):
    """The projections of `backbone` that carry adapters, in block order."""
    return [layer for block in backbone.transformer_layers for layer in block.projections()
            if getattr(layer, "lora_enabled", False)]


@dataclass(frozen=True)
class Adapter:
    """One adapted kernel, by variable path: `kernel + scale * a @ b`."""

    kernel: str
    a: str
    b: str
    scale: float


def adapters(backbone):
    """The `Adapter`s of a backbone after `enable` (empty without LoRA)."""
    found = []
    for layer in adapted_layers(backbone):
        a, b = layer.lora_kernel_a.path, layer.lora_kernel_b.path
        found.append(Adapter(kernel=f"{a.rsplit('/', 1)[0]}/kernel", a=a, b=b,
                             scale=float(layer.lora_alpha) / float(layer.lora_rank)))
    return found


def merge(values, found):
    """`{path: array}` of a plain model: each adapted kernel with its adapters folded in.

    Args:
        values: `{variable path: numpy array}` of the adapted model.
        found: its `adapters(...)`.
    """
    merged = dict(values)
    for adapter in found:
        a, b = merged.pop(adapter.a), merged.pop(adapter.b)
        kernel = merged[adapter.kernel]
        delta = np.matmul(a.astype(np.float32), b.astype(np.float32))  # a (..., r) @ b (r, out)
        merged[adapter.kernel] = (kernel.astype(np.float32) + adapter.scale * delta).astype(kernel.dtype)
    return merged


def write_adapters(config, values, found, rank, targets, path):
    """Write the adapters alone to `path` (`*.lora.h5`, keras-hub's `save_lora_weights` format).

    A fresh backbone of `config` with scale-1 adapters (alpha = rank, what
    `load_lora_weights` builds) receives the trained adapters with their scale
    folded into `lora_kernel_b`, and keras-hub writes them.
    """
    import os

    from smallcoder.models.backbone import SmallCoderBackbone

    backbone = SmallCoderBackbone.from_config(config)
    enable(backbone, rank, targets=targets)
    scales = {adapter.b: adapter.scale for adapter in found}
    for adapter in adapters(backbone):
        layer_a, layer_b = values[adapter.a], values[adapter.b] * scales[adapter.b]
        _variable(backbone, adapter.a).assign(layer_a)
        _variable(backbone, adapter.b).assign(layer_b.astype(np.float32))
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}.lora.h5")  # keras-hub wants the suffix
    try:
        backbone.save_lora_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _variable(backbone, path):
    return next(v for v in backbone.weights if v.path == path)
