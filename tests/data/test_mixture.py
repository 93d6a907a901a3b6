"""Mixtures: token shares follow the weights."""

import numpy as np
from data_helpers import write_jsonl

from smallcoder.data import build_pipeline


def test_token_shares_within_two_percent(tmp_path, tokenizer):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "return", "value", "def", "class", "x", "42"]
    sources = []
    for name, weight, mean_words in [("short", 0.5, 5), ("medium", 0.3, 40), ("long", 0.2, 150)]:
        docs = [{"text": " ".join(rng.choice(words, size=rng.integers(1, 2 * mean_words)))}
                for _ in range(300)]
        path = write_jsonl(tmp_path / f"{name}.jsonl", docs)
        sources.append({"name": name, "weight": weight, "type": "jsonl", "path": path})
    pipeline = build_pipeline({"sources": sources}, tokenizer, sequence_length=128, batch_size=8)
    n = 300
    for _ in range(n):
        next(pipeline)
    counts = pipeline.token_counts()
    total = sum(counts.values())
    assert total == n * 8 * 128
    for s in sources:
        share = counts[s["name"]] / total
        assert abs(share - s["weight"]) < 0.02, (s["name"], share)
