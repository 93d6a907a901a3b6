"""Several JAX processes as one job: start-up, topology, and small host-side exchanges.

JAX is multi-controller: every host (a TPU VM of a pod slice, a GPU node, or a
CPU process rehearsing one) runs the same program, and `jax.distributed`
connects them before anything touches a device. `initialize` does that from
the command-line flags, or from what JAX detects (Cloud TPU, SLURM, Open MPI),
and stays one process when nothing is there. The other helpers work the same
with one process, on every Keras backend, so callers need no special case.

A lost process ends the job: JAX's coordination service stops sending
heartbeats to the dead task's peers, and each of them terminates with a
message naming the task (`The following tasks are unhealthy (stopped sending
heartbeats): 1`) after `heartbeat_timeout` seconds; a lost process 0 (the
coordinator) ends the others at once.
"""

from __future__ import annotations

import json

import numpy as np

HEARTBEAT_TIMEOUT_S = 100  # JAX's default; a lost peer ends the job after this long


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
            counts as lost and the job ends.

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

    from smallcoder.xla_flags import jax_backend_initialized

    if jax.distributed.is_initialized():
        return jax.process_count()
    if jax_backend_initialized():
        raise MultiHostError("JAX already started its devices in this process; the multi-process "
                             "runtime must start first (call multihost.initialize earlier).")
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        # Cross-process collectives of the CPU backend (a pod rehearsed on CPUs).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   heartbeat_timeout_seconds=heartbeat_timeout)
    except ValueError as e:
        if coordinator is None and "coordinator_address" in str(e):
            return 1  # no cluster detected: one process, as on a laptop
        raise MultiHostError(f"cannot start the multi-process JAX runtime: {e}") from e
    except RuntimeError as e:
        raise MultiHostError(f"cannot join the JAX job at {coordinator or 'the detected coordinator'}: "
                             f"{e}") from e
    return jax.process_count()


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
