"""Several JAX processes as one job: start-up, topology, and small host-side exchanges.

JAX is multi-controller: every host (a TPU VM of a pod slice, a GPU node, or a
CPU process rehearsing one) runs the same program, and `jax.distributed`
connects them before anything touches a device. `initialize` does that from
the command-line flags, or from what JAX detects (Cloud TPU, SLURM, Open MPI),
and stays one process when nothing is there. The other helpers work the same
with one process, on every Keras backend, so callers need no special case.

A lost process ends the job instead of hanging it: a watchdog thread in
every process posts a heartbeat to the coordination service's key-value store
each second and watches the others'. When one falls silent for the heartbeat
timeout, the others print one line naming it and exit non-zero. JAX's own
heartbeat check, which would abort them with a C++ stack trace, is set to
twice that, as a safety net; a lost process 0 (the coordinator) ends the
others at once.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time

import numpy as np

HEARTBEAT_TIMEOUT_S = 60  # a process silent this long is lost and the job ends
_HEARTBEATS = "smallcoder/heartbeat/"


class MultiHostError(RuntimeError):
    """The multi-process runtime cannot start as asked; the message says what to do."""


def initialize(coordinator=None, num_processes=None, process_id=None,
               heartbeat_timeout=HEARTBEAT_TIMEOUT_S):
    """Join the multi-process JAX job, if there is one; return the process count.

    Call it before anything creates a JAX array or asks for devices.

    Args:
        coordinator: `"HOST:PORT"` of process 0's coordination service, or
            None to let JAX detect a cluster (one process when none is found).
        num_processes, process_id: this job's size and this process's rank;
            with `coordinator`, both are required.
        heartbeat_timeout: seconds without a heartbeat after which a peer
            counts as lost and the job ends (with one line naming it).

    Raises:
        MultiHostError: flags on a non-JAX backend, a partial set of flags, or
            a JAX runtime that is already running.
    """
    import keras

    explicit = [coordinator, num_processes, process_id]
    if keras.config.backend() != "jax":
        if any(v is not None for v in explicit):
            raise MultiHostError(
                f"--coordinator/--num-processes/--process-id need the JAX backend; this is "
                f"{keras.config.backend()!r} (unset KERAS_BACKEND or set it to jax)."
            )
        return 1
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise MultiHostError("--coordinator, --num-processes and --process-id go together; "
                             "give all three (or none, to let JAX detect the cluster).")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise MultiHostError(f"--process-id {process_id} is not in [0, {num_processes}).")
    import jax

    from smallcoder.compat import jax_backends_initialized

    if jax.distributed.is_initialized():
        return jax.process_count()
    if jax_backends_initialized():
        if coordinator is None:
            return jax.process_count()  # a process that already uses JAX on its own (tests, notebooks)
        raise MultiHostError("JAX already started its devices in this process; the multi-process "
                             "runtime must start first (call multihost.initialize earlier).")
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        # Cross-process collectives of the CPU backend (a pod rehearsed on CPUs).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   heartbeat_timeout_seconds=2 * heartbeat_timeout)
    except ValueError as e:
        if coordinator is None and "coordinator_address" in str(e):
            return 1  # no cluster detected: one process, as on a laptop
        raise MultiHostError(f"cannot start the multi-process JAX runtime: {e}") from e
    except RuntimeError as e:
        raise MultiHostError(f"cannot join the JAX job at {coordinator or 'the detected coordinator'}: "
                             f"{e}") from e
    if jax.process_count() > 1:
        Watchdog(jax.process_index(), jax.process_count(), heartbeat_timeout).start()
    return jax.process_count()


class Watchdog(threading.Thread):
    """Ends this process, naming the peer, when another process of the job falls silent.

    Each process posts a counter under `smallcoder/heartbeat/<rank>` every
    `interval` seconds. A peer whose counter has not moved for `silence`
    seconds (measured on this host's clock, so clocks need not agree) is lost:
    a job missing a process cannot take another step, and waiting in a
    collective would hang it. The line printed says what to do next.
    """

    current = None  # the running watchdog, if any

    def __init__(self, rank, count, silence, interval=1.0):
        super().__init__(name="smallcoder-watchdog", daemon=True)
        self.rank, self.count, self.silence, self.interval = rank, count, silence, interval
        self.lost = None
        self._stopped = threading.Event()

    def start(self):
        Watchdog.current = self
        atexit.register(self.stop)  # before JAX's own exit hook leaves the job
        super().start()

    def stop(self):
        """Stop watching (the job is ending on purpose: peers may now leave)."""
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        Watchdog.current = None

    def run(self):
        from smallcoder.compat import jax_coordination_client

        client = jax_coordination_client()
        beat, seen = 0, {}
        while not self._stopped.is_set():
            now = time.monotonic()
            try:
                client.key_value_set(f"{_HEARTBEATS}{self.rank}", str(beat), allow_overwrite=True)
                values = dict(client.key_value_dir_get(_HEARTBEATS))
            except Exception:  # the coordination service (process 0) is gone
                if self.rank != 0 and not self._stopped.is_set():
                    self._end(0, "the coordinator (its coordination service no longer answers)")
                return
            beat += 1
            for rank in range(self.count):
                value = values.get(f"{_HEARTBEATS}{rank}")
                if rank == self.rank or value is None:
                    seen.setdefault(rank, (value, now))
                    continue
                if seen.get(rank, (None,))[0] != value:
                    seen[rank] = (value, now)
                elif now - seen[rank][1] > self.silence:
                    self._end(rank, f"no heartbeat for {now - seen[rank][1]:.0f} s")
            self._stopped.wait(self.interval)

    def _end(self, rank, why):
        if self._stopped.is_set():
            return
        self.lost = rank
        sys.stdout.flush()
        print(f"\nError: process {rank} of {self.count} is lost ({why}): killed, crashed or unreachable. "
              f"This job cannot go on; relaunch every process with --resume to continue from the newest "
              f"complete checkpoint.", file=sys.stderr, flush=True)
        os._exit(1)


def end_if_peer_lost(wait=None):
    """After a failed collective: if the watchdog finds a lost peer within `wait` s, it ends the process.

    Returns (so the caller re-raises the original error) when every peer is
    still alive, or with one process.
    """
    watchdog = Watchdog.current
    if watchdog is None:
        return
    deadline = time.monotonic() + (watchdog.silence + 5 if wait is None else wait)
    while time.monotonic() < deadline and watchdog.is_alive():
        time.sleep(0.2)


def _jax():
    import keras

    if keras.config.backend() != "jax":
        return None
    import jax

    return jax


def process_index():
    """This process's rank (0 on one process and on non-JAX backends)."""
    jax = _jax()
    return jax.process_index() if jax else 0


def process_count():
    """Processes in the job (1 unless `initialize` joined several)."""
    jax = _jax()
    return jax.process_count() if jax else 1


def is_primary():
    """Whether this process writes the run's logs, summaries and exports (process 0)."""
    return process_index() == 0


def allgather_json(value):
    """`[value of process 0, value of process 1, …]`: a JSON-serialisable value from every process.

    Every process must call it at the same point (it is a collective). The
    bytes travel padded to a power of two, so repeated calls reuse a few
    compiled programs.
    """
    if process_count() == 1:
        return [json.loads(json.dumps(value))]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).ravel()
    width = 1 << max(int(sizes.max()) - 1, 1).bit_length()
    padded = np.zeros(width, np.uint8)
    padded[: data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:size])) for row, size in zip(rows, sizes)]


def gather_to_host(array):
    """The whole value of a (possibly sharded over processes) array as numpy, on every process."""
    jax = _jax()
    if jax is None or getattr(array, "is_fully_addressable", True):
        import keras

        return keras.ops.convert_to_numpy(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def barrier(name):
    """Wait until every process reaches `name` (no-op with one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def shutdown():
    """Leave the job (all processes together); afterwards each process runs on its own devices.

    Process 0 goes on to export, sample and evaluate with a local copy of the
    weights while the others exit; without this, the others' exit would wait
    at JAX's shutdown barrier and fail the job if process 0 took longer.
    """
    if process_count() > 1:
        import jax

        if Watchdog.current is not None:
            Watchdog.current.stop()
        jax.distributed.shutdown()


def describe_topology(mesh_shape=None, layout=None):
    """Lines for the log: processes, devices per process, the mesh and which axis crosses hosts.

    Args:
        mesh_shape: `(data, model)` of the run's mesh, or None without one.
        layout: the distribution layout name.
    """
    jax = _jax()
    if jax is None:
        return ["topology: 1 process (non-JAX backend)"]
    devices = jax.devices()
    local = jax.local_device_count()
    kind = devices[0].platform
    lines = [f"topology: {jax.process_count()} process(es) x {local} {kind} device(s) "
             f"= {len(devices)} devices"]
    if mesh_shape is None:
        return lines
    data, model = mesh_shape
    owners = np.array([d.process_index for d in devices[: data * model]]).reshape(data, model)
    crossing = []
    if (owners != owners[:1, :]).any():
        crossing.append("batch (data)")
    if (owners != owners[:, :1]).any():
        crossing.append("model")
    where = (f"{' and '.join(crossing)} axis crosses processes" if crossing
             else "every mesh axis stays within a process")
    lines.append(f"mesh: {data}x{model} ({layout}); {where}")
    return lines
