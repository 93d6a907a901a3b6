"""Result files, resume, and the CLI scoring a samples file (no model needed)."""

import json

import pytest
from click.testing import CliRunner

from smallcoder.eval import humaneval
from smallcoder.eval.results import ResultsLog, read_jsonl
from smallcoder.eval.runner import format_summary, run_eval


@pytest.fixture
def canonical(tmp_path, write_samples):
    tasks = humaneval.load_tasks(limit=6)
    return write_samples(
        tmp_path / "canonical.jsonl",
        [(t["task_id"], t["canonical_solution"]) for t in tasks],
    )


def test_interrupted_eval_resumes_without_redoing_tasks(tmp_path, canonical):
    out = tmp_path / "out"
    run_eval(
        name="humaneval", samples=canonical, limit=3, output_dir=out, progress=False
    )
    results = out / "humaneval_results.jsonl"
    # Mark the finished rows so we can tell whether they are redone, then
    # simulate a run killed while writing the fourth row.
    rows = read_jsonl(results)
    assert [r["task_id"] for r in sorted(rows, key=lambda r: r["task_id"])] == [
        f"HumanEval/{i}" for i in range(3)
    ]
    with open(results, "w") as f:
        for r in rows:
            f.write(json.dumps(dict(r, duration_s=-1.0)) + "\n")
        f.write('{"task_id": "HumanEval/3", "sample": 0, "compl')

    summary = run_eval(
        name="humaneval", samples=canonical, limit=6, output_dir=out, progress=False
    )
    rows = read_jsonl(results)
    assert len(rows) == 6 and summary["num_samples"] == 6
    assert sorted(r["task_id"] for r in rows if r["duration_s"] == -1.0) == [
        f"HumanEval/{i}" for i in range(3)
    ]
    assert summary["scores"] == {"pass@1": 1.0}
    assert open(results).read().endswith("\n")
    assert json.load(open(out / "humaneval_summary.json"))["num_tasks"] == 6


def test_resume_refuses_a_different_run(tmp_path, canonical, write_samples):
    run_eval(
        name="humaneval",
        samples=canonical,
        limit=2,
        output_dir=tmp_path / "out",
        progress=False,
    )
    other = write_samples(tmp_path / "other.jsonl", [("HumanEval/0", "")])
    with pytest.raises(ValueError, match="different run"):
        run_eval(
            name="humaneval",
            samples=other,
            limit=2,
            output_dir=tmp_path / "out",
            progress=False,
        )


def test_several_samples_per_task_give_pass_at_k(tmp_path, write_samples):
    task = humaneval.load_tasks(limit=1)[0]
    rows = [(task["task_id"], task["canonical_solution"])] + [(task["task_id"], "")] * 3
    samples = write_samples(tmp_path / "four.jsonl", rows)
    summary = run_eval(
        name="humaneval",
        samples=samples,
        limit=1,
        output_dir=tmp_path,
        ks=(1, 2, 10),
        progress=False,
    )
    assert summary["scores"] == {
        "pass@1": pytest.approx(0.25),
        "pass@2": pytest.approx(0.5),
    }
    assert "25.0%" in format_summary(summary) and "27.4%" in format_summary(summary)


def test_results_log_appends_and_reports_done(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsLog(path) as log:
        log.append({"task_id": 11, "sample": 0, "passed": True})
    with ResultsLog(path) as log:
        assert log.done() == {("11", 0)}


def test_bad_samples_files(tmp_path, write_samples):
    wrong = write_samples(tmp_path / "wrong.jsonl", [("MBPP/1", "x")])
    with pytest.raises(ValueError, match="no row has a task_id"):
        run_eval(
            name="humaneval", samples=wrong, output_dir=tmp_path / "a", progress=False
        )
    (tmp_path / "nokey.jsonl").write_text('{"task_id": "HumanEval/0"}\n')
    with pytest.raises(ValueError, match="'completion'"):
        run_eval(
            name="humaneval",
            samples=str(tmp_path / "nokey.jsonl"),
            output_dir=tmp_path / "b",
            progress=False,
        )
    with pytest.raises(ValueError, match="Unknown benchmark"):
        run_eval(name="apps", samples=wrong)


def test_cli_scores_a_samples_file(tmp_path, canonical):
    from smallcoder.cli import main

    result = CliRunner().invoke(
        main,
        [
            "eval",
            "humaneval",
            "--samples",
            canonical,
            "--limit",
            "6",
            "--output",
            str(tmp_path / "cli"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "humaneval  pass@1      100.0%       27.4%" in result.output
    assert "isolation:" in result.output
    summary = json.load(open(tmp_path / "cli/humaneval_summary.json"))
    assert summary["scores"]["pass@1"] == 1.0


def test_cli_needs_a_model_or_samples():
    from smallcoder.cli import main

    result = CliRunner().invoke(main, ["eval", "mbpp"])
    assert result.exit_code != 0 and "--model" in result.output
