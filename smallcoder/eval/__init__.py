"""Evaluation: HumanEval and MBPP pass@k with sandboxed execution, perplexity.

Modules, one concept each:

- `sandbox`: run one untrusted program (namespaces or rlimits + guard).
- `execution`: many sandboxes in parallel.
- `humaneval`, `mbpp`: data, prompts, post-processing, test programs.
- `postprocess`: code-block extraction and stop sequences.
- `generation`: batched generation with a per-batch context cap.
- `passk`: the unbiased pass@k estimator.
- `results`: per-sample jsonl (resumable) and the summary json.
- `runner`: `run_eval`, used by the CLI and as the training stage gate.
- `perplexity`: sliding-window perplexity.

`run_eval(causal_lm, "humaneval", limit=20, output_dir=...)` returns a dict
whose `scores` hold pass@k; see its docstring.
"""

from smallcoder.eval.runner import BENCHMARKS, format_summary, run_eval

__all__ = ["BENCHMARKS", "format_summary", "run_eval"]
