"""Generation, context capping, perplexity and the CLI on the tiny test model."""

import json

import numpy as np
import pytest
from click.testing import CliRunner


@pytest.fixture(scope="module")
def causal_lm():
    from smallcoder.models import SmallCoderCausalLM

    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    lm.compile(sampler="greedy")
    return lm


def test_humaneval_generates_executes_and_restores_the_sampler(causal_lm, tmp_path):
    from smallcoder.eval.runner import run_eval

    sampler = causal_lm.sampler
    summary = run_eval(
        causal_lm, "humaneval", limit=2, max_new_tokens=6, batch_size=2, temperature=0.5,
        seed=1, output_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert causal_lm.sampler is sampler
    rows = [json.loads(line) for line in open(tmp_path / "humaneval_results.jsonl")]
    assert sorted(r["task_id"] for r in rows) == ["HumanEval/0", "HumanEval/1"]
    assert all(isinstance(r["raw"], str) and r["result"] != "passed" for r in rows)
    assert summary["scores"] == {"pass@1": 0.0}
    assert summary["generation"]["capped_prompts"] == 0
    assert summary["protocol"]["temperature"] == 0.5


def test_max_new_tokens_is_capped_to_fit_the_context(causal_lm):
    from smallcoder.eval.generation import GenerationStats, generate_batches

    tokenizer = causal_lm.tokenizer
    long_text = "def f(x):\n    return x\n" * 400
    ids = tokenizer.encode(long_text)
    fits = tokenizer.decode(ids[:1018])
    too_long = tokenizer.decode(ids[:1100])
    n_fits = len(tokenizer.encode(fits))
    assert n_fits < 1024 and len(tokenizer.encode(too_long)) >= 1024
    stats = GenerationStats(requested_max_new_tokens=16)
    prompts = [("short", "def add(a, b):"), ("long", fits), ("too long", too_long)]
    out = dict(
        pair
        for batch in generate_batches(causal_lm, prompts, 16, 1, stats)
        for pair in batch
    )
    assert (
        out["too long"] is None
        and isinstance(out["long"], str)
        and isinstance(out["short"], str)
    )
    assert stats.too_long_prompts == 1
    assert stats.min_max_new_tokens == 1024 - n_fits
    assert stats.capped_prompts == 1  # batches of one: only the long prompt is capped


def _direct_nll(causal_lm, ids, length):
    """Next-token NLLs of `ids` (one window, right-padded to `length`), from the logits."""
    token_ids = np.zeros((1, length), "int32")
    token_ids[0, : len(ids)] = ids
    mask = (np.arange(length) < len(ids)).astype("int32")[None]
    logits = np.asarray(
        causal_lm.predict_on_batch({"token_ids": token_ids, "padding_mask": mask}),
        "float64",
    )
    logits = logits[0, : len(ids) - 1]
    log_probs = logits - np.log(
        np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
    )
    log_probs -= logits.max(-1, keepdims=True)
    return -log_probs[np.arange(len(ids) - 1), ids[1:]]


def test_perplexity_of_one_window_matches_the_logits(causal_lm):
    from smallcoder.eval.perplexity import perplexity

    text = "def add(a, b):\n    return a + b\n"
    ids = causal_lm.tokenizer.encode(text)
    nll = _direct_nll(causal_lm, ids, 64)
    result = perplexity(causal_lm, [text], batch_size=1)  # padded to (1, 64)
    assert result["tokens"] == len(ids) - 1
    assert result["perplexity"] == pytest.approx(np.exp(nll.mean()), rel=1e-4)


def test_sliding_window_scores_each_token_once(causal_lm):
    from smallcoder.eval.perplexity import perplexity, sliding_windows

    assert sliding_windows(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert sliding_windows(1, 4, 2) == []
    assert sliding_windows(7, 4, 9) == [(0, 4, 1), (3, 7, 4)]
    text = "for i in range(10):\n    print(i * i)\n" * 3
    ids = causal_lm.tokenizer.encode(text)
    assert len(ids) > 32
    # stride >= window: windows of 16 start every 15 tokens, each scoring the
    # 15 tokens after its first, exactly what a direct forward pass gives.
    expected = np.concatenate(
        [
            _direct_nll(causal_lm, ids[b : b + 16], 16)
            for b in range(0, len(ids) - 1, 15)
        ]
    )
    chunked = perplexity(causal_lm, [text], window=16, stride=16, batch_size=1)
    assert chunked["tokens"] == len(ids) - 1 == len(expected)
    assert chunked["nll_per_token"] == pytest.approx(expected.mean(), rel=1e-4)
    overlapping = perplexity(causal_lm, [text], window=16, stride=4, batch_size=1)
    assert overlapping["tokens"] == len(ids) - 1


def test_cli_end_to_end(tmp_path):
    from smallcoder.cli import main

    runner = CliRunner()
    result = runner.invoke(
        main,
        ["eval", "humaneval", "--model", "smallcoder_test", "--limit", "1", "--max-new-tokens", "4",
         "--batch-size", "1", "--output", str(tmp_path / "he")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and "27.4%" in result.output
    text = tmp_path / "doc.txt"
    text.write_text("def add(a, b):\n    return a + b\n")
    result = runner.invoke(
        main, ["eval", "perplexity", "--model", "smallcoder_test", "--data", str(text)]
    )
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output
