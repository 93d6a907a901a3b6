"""Process tuning for XLA:CPU training and decoding: one explicit call, never run on import.

`tune_process()` sets what the `smallcoder` command sets before it runs
anything (`smallcoder -v ...` prints it):

- XLA:CPU's memory-frugal scheduler (`smallcoder.xla_flags`), unless
  `XLA_FLAGS` already names that flag;
- glibc malloc tunables that keep freed memory in the process
  (`smallcoder.malloc_tuning`): glibc reads them only at start, so the
  process re-executes itself once with them.

Both change the process and every child it starts, which is why importing
`smallcoder` does neither. docs/tuning.md has the measured effect. A script
that wants the same calls it first thing, before JAX runs anything::

    import smallcoder

    smallcoder.tune_process()  # re-executes the script once (malloc=False: no re-exec)
"""


def tune_process(malloc=True):
    """Apply smallcoder's process tuning; returns what was done.

    Args:
        malloc: re-execute this process under `malloc_tuning.TUNABLES` if it
            does not run with them yet (a script or command, not a notebook:
            `sys.orig_argv` is run again, so call this before any work).

    Returns:
        dict: `"malloc"`, a `malloc_tuning.status()` (`"applied"`, `"user"`,
        `"off"`, `"not set"`, `"unsupported"`), and `"xla_scheduler"`, what
        `xla_flags.apply()` did (`"applied"`, `"user"`, `"too_late"`).
    """
    from smallcoder import malloc_tuning, xla_flags

    if malloc:
        malloc_tuning.reexec_with_tunables()  # returns only if nothing is to change
    # After the re-exec: a flag set before it would read as the user's own.
    return {"malloc": malloc_tuning.status(), "xla_scheduler": xla_flags.apply()}


def describe(report):
    """Lines saying what `tune_process` (its `report`) changed, for `smallcoder -v`."""
    from smallcoder import malloc_tuning, xla_flags

    xla = {
        "applied": f"XLA_FLAGS += {xla_flags.FLAG} (XLA:CPU memory scheduler)",
        "user": "XLA_FLAGS: your own setting of the XLA:CPU scheduler flag, kept",
        "too_late": f"XLA_FLAGS += {xla_flags.FLAG}, too late for this process (JAX runs)",
    }
    malloc = {
        "applied": f"GLIBC_TUNABLES has {malloc_tuning.TUNABLES} (freed memory stays)",
        "user": "GLIBC_TUNABLES: your own glibc.malloc settings, kept",
        "off": f"{malloc_tuning.OPT_OUT}=0: glibc malloc left as it is",
        "not set": "glibc malloc left as it is",
        "unsupported": "glibc malloc tuning: not a Linux glibc process",
    }
    return [f"process tuning: {xla[report['xla_scheduler']]}",
            f"process tuning: {malloc[report['malloc']]}",
            "process tuning: docs/tuning.md; smallcoder.tune_process() does the same in a script"]
