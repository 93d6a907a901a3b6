"""`smallcoder plan NAME --mesh DATAxMODEL --device ...`: will a recipe fit, and how long will it take."""

import click

DEVICE_CHOICES = ["tpu-v4", "tpu-v5e", "tpu-v5p", "h100", "h200", "cpu"]


@click.command("plan")
@click.argument("name")
@click.option("--mesh", default="1x1", show_default=True, help="DATAxMODEL, e.g. 8x1 or 2x4.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="tpu-v4", show_default=True)
@click.option("--layout", type=click.Choice(["data", "fsdp", "tensor", "fsdp_tensor"]), default=None,
              help="Override the recipe's distribution.layout.")
@click.option("--mfu", type=float, default=0.4, show_default=True, help="Assumed model FLOPs utilisation.")
@click.option("--hosts", type=int, default=1, show_default=True,
              help="Hosts (processes) the devices are spread over, e.g. 4 for a TPU v4-32 slice.")
@click.option("--demo", is_flag=True, help="Plan the --demo variant.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key.")
def command(name, mesh, device, layout, mfu, hosts, demo, overrides):
    """Steps, tokens, per-device memory (with/without remat), fit, and wall time of recipe NAME."""
    import os
    import re

    from smallcoder.models.presets import PRESETS
    from smallcoder.plan import format_plan, plan
    from smallcoder.recipes import RecipeError, load_recipe
    from smallcoder.training import TrainingError
    from smallcoder.training.runner import backbone_config

    match = re.fullmatch(r"(\d+)x(\d+)", mesh)
    if not match:
        raise click.BadParameter("must be DATAxMODEL, e.g. 2x4", param_hint="--mesh")
    try:
        recipe = load_recipe(name, demo=demo, overrides=overrides, check_init=False)
        source = recipe.model_source()  # a local folder's config; else (a Hub id, a stage not run) model.preset
        config = backbone_config(recipe, source if source in PRESETS or os.path.isdir(source) else None)
        result = plan(recipe, config, (int(match.group(1)), int(match.group(2))), device, layout, mfu,
                      hosts=hosts)
    except (RecipeError, FileNotFoundError, ValueError, TrainingError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(format_plan(result))
