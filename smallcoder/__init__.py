"""SmallCoder: a 303M LLaMA-style code model in Keras 3.

Heavy modules (keras, jax) load on first attribute access, so
`import smallcoder` and `smallcoder --help` stay quick.
"""

__version__ = "0.1.0"

# Before anything imports jax: XLA:CPU's memory-frugal scheduler (see
# smallcoder/xla_flags.py; a user-set value wins).
from smallcoder import xla_flags as _xla_flags  # noqa: E402

_xla_flags.status = _xla_flags.apply()

_LAZY = {
    "SmallCoderBackbone": "smallcoder.models.backbone",
    "SmallCoderCausalLM": "smallcoder.models.causal_lm",
    "SmallCoderTokenizer": "smallcoder.tokenizer",
    "format_chat": "smallcoder.tokenizer",
    "chat_prompt": "smallcoder.tokenizer",
    "load_hf": "smallcoder.convert",
    "save_hf": "smallcoder.convert",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smallcoder' has no attribute {name!r}")


__all__ = sorted(_LAZY)
