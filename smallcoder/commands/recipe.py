"""`smallcoder recipe list|show|run`: the four-stage curriculum, one command per stage."""

import click

from smallcoder.commands._multihost import join_job, multihost_options

CHAIN = ("base", "code", "math", "sft")


@click.group("recipe")
def command():
    """Training recipes: list them, show one resolved, run a stage (or all four)."""


@command.command("list")
def list_command():
    """List the recipes (in $SMALLCODER_RECIPES, ./recipes and the package) with budgets and steps."""
    from smallcoder.recipes import format_tokens, list_recipes, load_recipe

    for name in list_recipes():
        try:
            recipe = load_recipe(name, check_init=False)
        except (ValueError, FileNotFoundError) as e:  # one bad file does not hide the others
            click.echo(f"{name:<6} cannot load: {e}")
            continue
        click.echo(f"{name:<6} {format_tokens(recipe.tokens):>6} tokens  {recipe.steps:>7,} steps  "
                   f"init_from {recipe['init_from'] or '-':<5}  {recipe['description'] or ''}")


def _load(name, demo, overrides, check_init=False, data=(), validation_data=()):
    from smallcoder.recipes import load_recipe

    try:
        return load_recipe(name, demo=demo, overrides=overrides, check_init=check_init, data_files=data,
                           validation_files=validation_data)
    except (ValueError, FileNotFoundError) as e:  # RecipeError and data: errors are ValueErrors
        raise click.ClickException(str(e)) from e


def data_options(function):
    """`--data FILE` and `--validation-data FILE` (both repeatable)."""
    function = click.option(
        "--validation-data", "validation_data", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
        help="The validation split's files (default: data.validation_fraction of the --data files, "
             "held out).")(function)
    return click.option(
        "--data", "data", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
        help="A local jsonl or parquet file that replaces the recipe's mixture (repeatable; chat columns "
             "`messages` or `prompt`+`response` are detected, or name them with --set data.columns.prompt=...). "
             "With --demo: the demo sizes and tiny model on your data.")(function)


@command.command("show")
@click.argument("name")
@click.option("--demo", is_flag=True, help="Show the --demo variant.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key.")
@data_options
def show_command(name, demo, overrides, data, validation_data):
    """Print recipe NAME resolved (defaults, demo, --set, --data applied) with its derived numbers."""
    click.echo(_load(name, demo, overrides, data=data, validation_data=validation_data).describe())


@command.command("run")
@click.argument("name")
@click.option("--demo", is_flag=True, help="Demo sources and the tiny preset: minutes on a CPU, offline.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set training.tokens=1B (repeatable).")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: the recipe's `output`, e.g. runs/<stage>).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the run folder.")
@data_options
@multihost_options
def run_command(name, demo, overrides, output, resume, data, validation_data, coordinator, num_processes,
                process_id, heartbeat_timeout):
    """Train stage NAME (base, code, math, sft), or `all` to chain base -> code -> math -> sft.

    \b
    Quickstart (offline, a few minutes on a laptop CPU):
        smallcoder recipe run sft --demo
    \b
    Fine-tune a checkpoint on your own conversations:
        smallcoder recipe run sft --data rows.jsonl --set init_from=CHECKPOINT \\
            --set training.tokens=2M [--set model.lora.rank=8]
    \b
    A multi-process job runs the same command in every process, e.g. two CPU
    processes rehearsing a pod on one machine:
        smallcoder recipe run sft --demo --coordinator 127.0.0.1:7777 \\
            --num-processes 2 --process-id 0     (and --process-id 1)
    """
    echo = join_job(coordinator, num_processes, process_id, heartbeat_timeout)
    from smallcoder import multihost

    if name == "all" and multihost.process_count() > 1:
        raise click.ClickException(
            "`recipe run all` chains the stages in one process; in a multi-process job run each stage "
            "with its own command (`recipe run base`, then `code`, …): the processes leave the job "
            "when a stage ends.")
    if name == "all" and data:
        raise click.ClickException("--data replaces one stage's mixture; run that stage alone "
                                   "(e.g. `recipe run sft --data FILE`).")
    stages = CHAIN if name == "all" else (name,)
    if output and name == "all":
        # Each stage in its own folder under --output; init_from finds them there.
        overrides = (*overrides, f"output={output.rstrip('/')}/{{name}}")
        output = None
    # Validate every stage before training any (a chain checks init_from as it goes).
    recipes = [_load(stage, demo, overrides, check_init=name != "all", data=data, validation_data=validation_data)
               for stage in stages]
    from smallcoder.data.sources import SourceError
    from smallcoder.recipes import RecipeError, check_init_from, check_tokenizer
    from smallcoder.training import TrainingError, run_stage

    try:
        for recipe in recipes:
            check_tokenizer(recipe)
    except RecipeError as e:
        raise click.ClickException(str(e)) from e
    for recipe in recipes:
        echo(f"=== stage {recipe.name}{' (demo)' if demo else ''}: {recipe['description'] or ''}")
        echo(recipe.describe(output).split("# derived\n", 1)[1])
        try:
            if name == "all":  # a single stage was checked when it loaded
                check_init_from(recipe)
            run_stage(recipe, resume=resume, output_dir=output, echo=echo)
        except (TrainingError, RecipeError, SourceError) as e:
            raise click.ClickException(str(e)) from e
        except Exception:
            multihost.end_if_peer_lost()  # a collective failed because a process is gone
            raise
        if name == "all":
            import keras

            keras.backend.clear_session()
