"""Hugging Face <-> Keras conversion of SmallCoder / Llama checkpoints.

`load_hf(folder_or_repo_id)` gives a `SmallCoderCausalLM` with its tokenizer;
`save_hf(causal_lm, folder, dtype=...)` writes a folder `transformers` loads.
"""

from smallcoder.convert.hf import load_hf, save_hf

__all__ = ["load_hf", "save_hf"]
