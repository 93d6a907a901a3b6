"""The flags that join a multi-process JAX job, shared by `recipe run` and `bench train`."""

import click


def multihost_options(function):
    """`--coordinator/--num-processes/--process-id/--heartbeat-timeout` (a multi-process JAX job)."""
    options = [
        click.option("--coordinator", default=None, metavar="HOST:PORT",
                     help="Process 0's address; with --num-processes and --process-id, join a multi-process "
                          "JAX job (TPU pod, GPU cluster, or CPU processes rehearsing one). Without these "
                          "flags, a Cloud TPU pod, SLURM or Open MPI job is detected; else one process."),
        click.option("--num-processes", type=int, default=None, help="Processes in the job."),
        click.option("--process-id", type=int, default=None, help="This process's rank, 0 .. N-1."),
        click.option("--heartbeat-timeout", type=int, default=None, metavar="SECONDS",
                     help="A process silent this long counts as lost: the others name it and exit (default 60)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def join_job(coordinator, num_processes, process_id, heartbeat_timeout):
    """Start the multi-process runtime (before anything touches JAX); return this process's echo."""
    from smallcoder import multihost

    try:
        multihost.initialize(coordinator, num_processes, process_id,
                             heartbeat_timeout=heartbeat_timeout or multihost.HEARTBEAT_TIMEOUT_S)
    except multihost.MultiHostError as e:
        raise click.ClickException(str(e)) from e
    return click.echo if multihost.is_primary() else (lambda *args, **kwargs: None)
