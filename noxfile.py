"""Test and lint sessions.

`nox -s lint tests` (the README's test command, and CI) runs ruff, then the
suite once per Keras backend (jax, tensorflow, torch); `nox -s "tests(backend='jax')"`
runs one. The three runs share one virtual
environment (`.nox/test-env`), installed once and reused while `pyproject.toml`
is unchanged: the dependencies are the same, only `KERAS_BACKEND` differs
(the native decoding kernels are compiled again when their C++ sources change).
"""

import hashlib
import os
import pathlib
import sys

import nox

nox.options.sessions = ["lint", "tests"]
RUFF = "ruff==0.17.6"  # pinned: a new ruff release can add rules, and CI should not change by itself
ROOT = pathlib.Path(__file__).parent
BACKENDS = ["jax", "tensorflow", "torch"]


def _test_env(session):
    """Create (or reuse) the shared venv with `.[test]` (torch==2.13.0 pinned, CPU)."""
    env = ROOT / ".nox" / "test-env"
    python = env / "bin" / "python"
    stamp = env / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    # The editable install compiles the native decoding kernels in place; a
    # changed C++ source needs them compiled again (the dependencies stay).
    native_stamp = env / ".native"
    native = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ROOT / "smallcoder" / "native").iterdir())))
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        session.run(sys.executable, "-m", "venv", "--clear", str(env), external=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        session.run(*pip, "--upgrade", "pip", external=True)
        session.run(*pip, "torch==2.13.0", external=True)
        session.run(*pip, "-e", f"{ROOT}[test]", external=True)
        stamp.write_text(wanted)
        native_stamp.write_text(native.hexdigest())
    if not native_stamp.exists() or native_stamp.read_text() != native.hexdigest():
        session.run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT), external=True)
        native_stamp.write_text(native.hexdigest())
    return env


def _workers(backend):
    """Two pytest-xdist workers, a file per worker (module fixtures run once), where they pay
    on 2 cores: JAX (the long, multi-process tests) went from 23 to 14 minutes, TensorFlow
    from 6 to 4. Torch stays serial: its ops already use both cores (3.5 minutes either way)."""
    return ["-n", "2", "--dist", "loadfile"] if backend in ("jax", "tensorflow") else []


@nox.session(venv_backend="none")
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """Run pytest on one Keras backend."""
    env = _test_env(session)
    session.run(
        str(env / "bin" / "python"), "-m", "pytest", *(session.posargs or ["-q", *_workers(backend)]),
        external=True,
        env={
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PATH": f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        },
    )


@nox.session
def lint(session):
    """ruff over the package and the tests (rules and the 120-character limit: pyproject.toml)."""
    session.install(RUFF)
    session.run("ruff", "check", "smallcoder", "tests", "noxfile.py")
