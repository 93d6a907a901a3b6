"""The multi-process flags: refused with one line where they cannot work (any backend)."""

from click.testing import CliRunner

from smallcoder.cli import main


def _run(*flags):
    return CliRunner().invoke(main, ["recipe", "run", "sft", "--demo", *flags])


def test_the_flags_need_the_jax_backend_or_go_together(backend, tmp_path):
    result = _run("--output", str(tmp_path), "--coordinator", "127.0.0.1:1", "--num-processes", "2")
    assert result.exit_code != 0
    if backend == "jax":
        assert "--coordinator, --num-processes and --process-id go together" in result.output
    else:
        assert f"need the JAX backend; this is '{backend}'" in result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_a_rank_outside_the_job_is_refused(backend, tmp_path):
    result = _run("--output", str(tmp_path), "--coordinator", "127.0.0.1:1", "--num-processes", "2",
                  "--process-id", "2")
    assert result.exit_code != 0
    assert ("--process-id 2 is not in [0, 2)" if backend == "jax" else "need the JAX backend") in result.output
