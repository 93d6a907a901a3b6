"""SmallCoder model classes and presets.

The classes load Keras on first use, so `smallcoder.models.presets` (preset
names, folder checks) stays quick to import: the CLI checks `--model` with it
before importing anything heavy.
"""

from smallcoder.models.presets import PRESETS

_LAZY = {
    "SmallCoderBackbone": "smallcoder.models.backbone",
    "SmallCoderCausalLM": "smallcoder.models.causal_lm",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smallcoder.models' has no attribute {name!r}")


__all__ = ["PRESETS", "SmallCoderBackbone", "SmallCoderCausalLM"]
