"""Data pipeline: sources -> tokenize -> mix -> pack/mask -> `(x, y, sample_weight)` batches.

`build_pipeline(data_config, tokenizer, ...)` gives a `Pipeline` iterator with
`state_dict()` / `load_state_dict()` (exact resume) and `token_counts()`;
`validate_data_config(data_config, where)` checks a recipe's `data:` section.
"""

from smallcoder.data.config import validate_data_config
from smallcoder.data.pipeline import Pipeline, build_pipeline

__all__ = ["Pipeline", "build_pipeline", "validate_data_config"]
