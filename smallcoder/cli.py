"""The `smallcoder` command line. Heavy imports happen inside commands.

Importing this module changes nothing in the process; `run()`, the console
script, tunes it first (see `run`).
"""

import os

import click

from smallcoder import __version__

# What `run()` sets unless the environment already does: JAX as the Keras
# backend (Keras writes "tensorflow" into ~/.keras/keras.json on first
# import, so that file says nothing about the user's choice), and quiet
# TensorFlow C++ start-up logs (keras-hub imports TensorFlow on every backend).
CLI_ENVIRONMENT = {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smallcoder")
@click.option("-v", "--verbose", is_flag=True,
              help="Say how this process was tuned (Keras backend, XLA flags, malloc).")
@click.pass_context
def main(ctx, verbose):
    """Train, fine-tune, convert, run and evaluate SmallCoder (Keras 3)."""
    if not verbose:
        return
    tuned = ctx.obj or {}
    if "report" not in tuned:
        click.echo("process tuning: none (not started as the `smallcoder` command)", err=True)
        return
    from smallcoder.tuning import describe

    for name, value in tuned["environment"].items():
        click.echo(f"process tuning: {name}={os.environ.get(name)}"
                   + ("" if value else " (yours, kept)"), err=True)
    for line in describe(tuned["report"]):
        click.echo(line, err=True)


def _register():
    # Each command lives in smallcoder/commands/<name>.py and imports only click
    # at module level; the work happens inside the command function.
    import importlib
    import pkgutil

    from smallcoder import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers, not commands
            continue
        module = importlib.import_module(f"smallcoder.commands.{info.name}")
        main.add_command(module.command)


_register()


def run():
    """The `smallcoder` console script: tune the process, then run `main`.

    Sets `CLI_ENVIRONMENT` where unset and applies `smallcoder.tune_process()`
    (glibc malloc tunables, re-executing once; XLA:CPU's memory scheduler),
    all before Keras or JAX load. `smallcoder -v` says what it did.
    """
    from smallcoder.quiet_import import quiet_import
    from smallcoder.tuning import tune_process

    report = tune_process()  # may re-execute this process once
    environment = {}
    for name, value in CLI_ENVIRONMENT.items():
        environment[name] = name not in os.environ
        os.environ.setdefault(name, value)
    quiet_import("tensorflow")  # its native start-up lines, on every backend (keras-hub imports it)
    main(obj={"report": report, "environment": environment})


if __name__ == "__main__":
    run()
