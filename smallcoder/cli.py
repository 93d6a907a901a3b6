"""The `smallcoder` command line. Heavy imports happen inside commands."""

import os

import click

# JAX is the CLI's backend unless KERAS_BACKEND names another (Keras writes
# "tensorflow" into ~/.keras/keras.json on first import, so that file says
# nothing about the user's choice). Quiet TensorFlow's C++ start-up logs,
# which keras-hub imports on every backend.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from smallcoder import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smallcoder")
def main():
    """Train, fine-tune, convert, run and evaluate SmallCoder (Keras 3)."""


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
    """The `smallcoder` console script: `main` under glibc malloc tunables (see `malloc_tuning`),
    with TensorFlow's native start-up lines silenced (see `quiet_import`)."""
    from smallcoder.malloc_tuning import reexec_with_tunables
    from smallcoder.quiet_import import quiet_import

    reexec_with_tunables()
    quiet_import("tensorflow")
    main()


if __name__ == "__main__":
    run()
