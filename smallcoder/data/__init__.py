"""Data pipeline: sources -> tokenize -> mix -> pack/mask -> `(x, y, sample_weight)` batches.

`build_pipeline(data_config, tokenizer, ...)` gives a `Pipeline` iterator with
`state_dict()` / `load_state_dict()` (exact resume) and `token_counts()`;
`validate_data_config(data_config, where)` checks a recipe's `data:` section;
`check_sources_open(data_config, demo=..., split=...)` opens each source once, so
a run stops in one line, before building anything, when a dataset cannot be read.
"""

from smallcoder.data.config import validate_data_config
from smallcoder.data.pipeline import Pipeline, build_pipeline
from smallcoder.data.preflight import check_sources_open

__all__ = ["Pipeline", "build_pipeline", "check_sources_open", "validate_data_config"]
