"""pass@k with the unbiased estimator of Chen et al. (2021), "Evaluating Large
Language Models Trained on Code", section 2.1.

For a task with `n` samples of which `c` pass:
`pass@k = 1 - C(n - c, k) / C(n, k)`, computed as a stable product.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def pass_at_k(n, c, k):
    """Unbiased pass@k of one task: `n` samples, `c` correct, `k <= n`."""
    if not 0 <= c <= n:
        raise ValueError(f"Need 0 <= c <= n, got n={n}, c={c}.")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least k={k} samples per task; got n={n}.")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def estimate_pass_at_k(num_samples, num_correct, k):
    """pass@k per task. `num_samples`, `num_correct`: (tasks,) ints -> (tasks,) floats."""
    return np.array(
        [pass_at_k(int(n), int(c), k) for n, c in zip(num_samples, num_correct)]
    )


def pass_at_ks(results, ks=(1, 10, 100)):
    """Mean pass@k over tasks from per-sample results.

    Args:
        results: iterable of dicts with `task_id` and `passed` (one per sample).
        ks: the k values wanted; those larger than the smallest per-task sample
            count are skipped.

    Returns:
        `{"pass@1": float, ...}`.
    """
    counts = defaultdict(lambda: [0, 0])
    for r in results:
        counts[r["task_id"]][0] += 1
        counts[r["task_id"]][1] += bool(r["passed"])
    if not counts:
        return {}
    n, c = np.array(list(counts.values())).T
    return {
        f"pass@{k}": float(estimate_pass_at_k(n, c, k).mean())
        for k in ks
        if k <= n.min()
    }
