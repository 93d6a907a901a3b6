"""SmallCoder model classes and presets.

The classes load on first access, so that `smallcoder.models.quantization`
and `smallcoder.models.presets` can be imported without Keras.
"""

_LAZY = {
    "SmallCoderBackbone": "smallcoder.models.backbone",
    "SmallCoderCausalLM": "smallcoder.models.causal_lm",
    "PRESETS": "smallcoder.models.presets",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smallcoder.models' has no attribute {name!r}")


__all__ = sorted(_LAZY)
