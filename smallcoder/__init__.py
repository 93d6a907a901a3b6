"""SmallCoder: a 303M LLaMA-style code model in Keras 3.

Importing it changes nothing in the process (no environment variables, no
flags); `tune_process()` applies the XLA and malloc tuning the `smallcoder`
command uses. Heavy modules (keras, jax) load on first attribute access, so
`import smallcoder` and `smallcoder --help` stay quick.
"""

__version__ = "0.1.0"

_LAZY = {
    "SmallCoderBackbone": "smallcoder.models.backbone",
    "SmallCoderCausalLM": "smallcoder.models.causal_lm",
    "SmallCoderTokenizer": "smallcoder.tokenizer",
    "format_chat": "smallcoder.tokenizer",
    "chat_prompt": "smallcoder.tokenizer",
    "load_hf": "smallcoder.convert",
    "save_hf": "smallcoder.convert",
    "tune_process": "smallcoder.tuning",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smallcoder' has no attribute {name!r}")


__all__ = sorted(_LAZY)
