"""Hostile programs must be contained by every isolation level the machine has.

Each hostile program ends with an assert that holds only if the attack worked,
so a contained attack is reported as failed (or timed out). Host files are
created world-writable in a folder the sandbox user can reach, so only the
sandbox itself (read-only mounts, or the guard) protects them.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from smallcoder.eval import sandbox
from smallcoder.eval.sandbox import SandboxLimits, isolation_level, run_program

LEVELS = ["namespaces", "rlimits"]


@pytest.fixture(params=LEVELS)
def level(request):
    if request.param == "namespaces" and isolation_level() != "namespaces":
        pytest.skip("Linux namespaces are not available on this machine")
    return request.param


@pytest.fixture
def host_dir():
    """A world-writable folder outside /tmp holding files the host cares about."""
    root = Path(tempfile.mkdtemp(prefix=".hostile-", dir=Path(__file__).parent))
    try:
        for sub in ("home/.ssh", "project/src"):
            (root / sub).mkdir(parents=True)
        (root / "home/.ssh/id_rsa").write_text("PRIVATE KEY")
        (root / "home/.bashrc").write_text("export PATH")
        (root / "project/setup.py").write_text("setup()")
        (root / "project/src/main.py").write_text("print('hi')")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def snapshot(root):
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in root.rglob("*")
    }


def run(code, level, timeout_s=2.0, **limits):
    return run_program(
        textwrap.dedent(code),
        SandboxLimits(timeout_s=timeout_s, **limits),
        isolation=level,
    )


def own_sandbox_processes():
    """Live processes running as this process's sandbox user ids (root only)."""
    low = sandbox._UID_BASE + (os.getpid() % 4096) * sandbox._UID_SLOTS
    found = []
    for entry in os.scandir("/proc"):
        try:
            if (
                entry.name.isdigit()
                and low <= entry.stat().st_uid < low + sandbox._UID_SLOTS
            ):
                with open(f"/proc/{entry.name}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":  # zombies are dead
                        found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_isolation_level_is_reported():
    assert isolation_level() in LEVELS


def test_passing_failing_and_early_exit(level):
    # Modules the benchmarks' solutions import must work under every level.
    ok = "import random, hashlib, heapq, re, math, collections, itertools\nassert sum([1, 2]) == 3"
    assert run(ok, level).status == "passed"
    failed = run("def f():\n    return 1\nassert f() == 2, 'wrong'", level)
    assert failed.status == "failed: AssertionError: wrong"
    # Exiting with status 0 before the tests ran is not a pass.
    early = run("import sys\nsys.exit(0)\nassert False", level)
    assert early.status.startswith("failed") and early.returncode == 0


def test_fresh_workdir_is_home_and_output_is_truncated(level):
    result = run(
        """
        import os
        assert os.listdir('.') == [], os.listdir('.')
        assert os.environ['HOME'] == os.getcwd()
        open('scratch.txt', 'w').write('ok')
        print('x' * 100000)
        """,
        level,
        max_output_bytes=1000,
    )
    assert result.passed, result.stderr
    assert result.stdout.startswith("x" * 1000) and "truncated" in result.stdout
    assert len(result.stdout) < 1100


def test_infinite_loop_times_out(level):
    start = time.monotonic()
    result = run("while True:\n    pass", level, timeout_s=1.0)
    assert result.timed_out
    assert time.monotonic() - start < 5


def test_fork_bomb_is_contained(level):
    before = len(own_sandbox_processes()) if os.getuid() == 0 else 0
    result = run(
        """
        import os
        while True:
            try:
                os.fork()
            except Exception:
                pass
        """,
        level,
        timeout_s=1.5,
        max_processes=16,
    )
    assert not result.passed
    if os.getuid() == 0:
        assert own_sandbox_processes() == [] and before == 0


def test_memory_bomb_fails(level):
    result = run(
        """
        chunks = []
        while True:
            chunks.append(bytearray(32 * 1024 * 1024))
        """,
        level,
        memory_bytes=256 * 1024**2,
    )
    assert result.status.startswith("failed") and "MemoryError" in result.status


def test_deleting_home_and_project_files_is_contained(level, host_dir):
    before = snapshot(host_dir)
    result = run(
        f"""
        import glob, os, shutil
        home, project = {str(host_dir / "home")!r}, {str(host_dir / "project")!r}
        # Where the sandbox hides the folder (e.g. the host's /tmp), there is nothing to
        # delete; the program passes only if it saw the file and it is gone.
        saw = os.path.exists(project + '/setup.py')
        for path in glob.glob(home + '/**', recursive=True) + glob.glob(project + '/**', recursive=True):
            for attempt in (os.remove, os.unlink, lambda p: open(p, 'w').write('pwned')):
                try:
                    attempt(path)
                except Exception:
                    pass
        for folder in (home, project):
            shutil.rmtree(folder, ignore_errors=True)
            try:
                os.system('rm -rf ' + folder)
            except Exception:
                pass
        assert saw and not os.path.exists(project + '/setup.py')
        """,
        level,
    )
    assert result.status.startswith("failed"), result
    assert snapshot(host_dir) == before


def test_writing_outside_the_sandbox_is_contained(level, host_dir):
    escape_tmp = Path(tempfile.gettempdir()) / f"sc-escape-{os.getpid()}-{level}"
    targets = [host_dir / "new.txt", host_dir / "project/src/evil.py", escape_tmp]
    before = snapshot(host_dir)
    try:
        result = run(
            f"""
            import os, pathlib
            written = 0
            for target in {[str(t) for t in targets]!r}:  # the last one: /tmp
                for attempt in (lambda t: open(t, 'w').write('x'),
                                lambda t: pathlib.Path(t).write_text('x'),
                                lambda t: os.close(os.open(t, os.O_CREAT | os.O_WRONLY))):
                    try:
                        attempt(target)
                        written += not target.startswith({str(escape_tmp)!r})
                    except Exception:
                        pass
            assert written
            """,
            level,
        )
        assert result.status.startswith("failed"), result
        assert snapshot(host_dir) == before
        assert not escape_tmp.exists()
    finally:
        if escape_tmp.exists():
            escape_tmp.unlink()


def test_network_connection_is_blocked(level):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.3)
    port = server.getsockname()[1]
    try:
        result = run(
            f"""
            import socket
            connected = 0
            for attempt in (lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1),
                            lambda: socket.socket().connect(('127.0.0.1', {port}))):
                try:
                    attempt()
                    connected += 1
                except Exception as e:
                    print('blocked:', e)
            assert connected
            """,
            level,
        )
        assert result.status.startswith("failed"), result
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_killing_the_parent_is_contained(level):
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        result = run(
            f"""
            import os, signal
            killed = 0
            for pid in (os.getppid(), {os.getpid()}, {bystander.pid}, -1):
                for attempt in (lambda: os.kill(pid, signal.SIGKILL),
                                lambda: os.killpg(os.getpgid(pid), signal.SIGKILL)):
                    try:
                        attempt()
                        killed += pid > 1
                    except Exception:
                        pass
            assert killed
            """,
            level,
        )
        assert not result.passed
        assert bystander.poll() is None, "the sandbox killed a host process"
        os.kill(os.getpid(), 0)  # the evaluation process is alive
    finally:
        bystander.kill()
        bystander.wait()


def test_environment_secrets_are_not_readable(level, monkeypatch):
    secret = "hunter2-" + os.urandom(8).hex()
    monkeypatch.setenv("SMALLCODER_FAKE_API_KEY", secret)
    result = run(
        f"""
        import os
        seen = ' '.join(os.environ.values())
        for pid in ('self', os.getppid(), {os.getpid()}, 1):
            try:
                seen += open(f'/proc/{{pid}}/environ').read()
            except Exception:
                pass
        print(seen)
        assert {secret!r} in seen
        """,
        level,
    )
    assert result.status.startswith("failed"), result
    assert secret not in result.stdout + result.stderr


def test_guard_blocks_reading_other_processes():
    # Without a separate uid (a non-root evaluator), only the guard stops this.
    result = run(f"open('/proc/{os.getpid()}/environ').read()", "rlimits")
    assert "(other processes) is disabled" in result.status
    assert run("open('/proc/self/status').read()", "rlimits").passed
