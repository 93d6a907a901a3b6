"""`smallcoder data inspect RECIPE`: show the batches the model will see."""

import click


def load_recipe(recipe):
    """`(path, recipe dict)` for a recipe name in `recipes/` (e.g. `sft`) or a YAML path."""
    import os

    import yaml

    candidates = [recipe] if recipe.endswith((".yaml", ".yml")) or os.sep in recipe else []
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for base in (os.getcwd(), root):
        candidates.append(os.path.join(base, "recipes", f"{recipe}.yaml"))
    for path in candidates:
        if os.path.isfile(path):
            with open(path) as f:
                return path, yaml.safe_load(f) or {}
    raise click.BadParameter(
        f"no recipe {recipe!r}: looked for {', '.join(candidates)}. Pass a recipe name "
        "in recipes/ (base, code, math, sft) or a path to a YAML file.", param_hint="RECIPE"
    )


def recipe_data(path, recipe, demo, sequence_length, tokenizer_path):
    """`(data_config, tokenizer, sequence_length)` for a loaded recipe."""
    from smallcoder.data import validate_data_config

    data = recipe.get("data")
    if data is None:
        raise click.ClickException(f"{path}: data: missing; the recipe has no data section.")
    validate_data_config(data, path)
    model = recipe.get("model") or {}
    sequence_length = sequence_length or model.get("sequence_length") or (256 if demo else 1024)
    tokenizer_path = tokenizer_path or recipe.get("tokenizer") or model.get("tokenizer")
    if demo and not tokenizer_path:
        from smallcoder.demo_tokenizer import demo_tokenizer

        tokenizer = demo_tokenizer()
    elif tokenizer_path:
        from smallcoder.tokenizer import SmallCoderTokenizer

        tokenizer = SmallCoderTokenizer(tokenizer_path)
    else:
        raise click.ClickException(
            f"{path}: no tokenizer: the recipe names none; pass --tokenizer PATH or use --demo."
        )
    return data, tokenizer, sequence_length


def render_row(tokenizer, x, segments, y, weight):
    """One row as text: `⟦doc k⟧` where document k starts, `«…»` around tokens that are not trained targets.

    Shows the T input tokens, then the final target `y[-1]` when it is
    trained. Token j (j >= 1) is a trained target iff `weight[j - 1]`; token
    0 is only an input and is shown with the span that follows it.
    """
    x, segments = [int(t) for t in x], [int(s) for s in segments]
    trained = [bool(w) for w in weight]
    trained = [trained[0]] + trained[:-1]  # trained[j]: x[j] is a target of x[j - 1]
    if weight[-1]:
        x, segments, trained = x + [int(y[-1])], segments + [segments[-1]], trained + [True]
    parts, j = [], 0
    while j < len(x):
        if segments[j] == 0:
            parts.append(f"⟨pad ×{len(x) - j}⟩")
            break
        if j == 0 or segments[j] != segments[j - 1]:
            parts.append(f"⟦doc {segments[j]}⟧")
        k = j
        while k < len(x) and trained[k] == trained[j] and segments[k] == segments[j]:
            k += 1
        text = tokenizer.decode(x[j:k])
        parts.append(text if trained[j] else f"«{text}»")
        j = k
    return "".join(parts)


@click.group("data")
def command():
    """Inspect and check the data pipeline."""


@command.command("inspect")
@click.argument("recipe")
@click.option("--demo", is_flag=True, help="Use the recipe's offline demo sources and the demo tokenizer.")
@click.option("--batches", default=1, show_default=True, help="How many batches to show.")
@click.option("--batch-size", default=2, show_default=True, help="Rows per batch.")
@click.option("--sequence-length", type=int, default=None, help="T (default: the recipe's, else 256 with --demo).")
@click.option("--split", type=click.Choice(["train", "validation"]), default="train", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--tokenizer", "tokenizer_path", default=None, help="A tokenizer.json (default: the recipe's).")
@click.option("--json", "as_json", is_flag=True, help="Print token ids, segment ids and loss masks, one JSON object per batch.")
def inspect(recipe, demo, batches, batch_size, sequence_length, split, seed, tokenizer_path, as_json):
    """Show what the model will see for RECIPE (a name in recipes/ or a YAML path).

    Each row is decoded with ⟦doc k⟧ where document k starts (attention and
    positions restart there when document masking is on) and «…» around
    tokens that are not loss targets (prompts, cross-document targets).
    """
    import itertools
    import json

    from smallcoder.data import build_pipeline
    from smallcoder.data.sources import SourceError

    path, loaded = load_recipe(recipe)
    try:
        data, tokenizer, sequence_length = recipe_data(path, loaded, demo, sequence_length, tokenizer_path)
        pipeline = build_pipeline(data, tokenizer, sequence_length=sequence_length,
                                  batch_size=batch_size, seed=seed, demo=demo, split=split)
    except (SourceError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    for index, (x, y, weight) in enumerate(itertools.islice(pipeline, batches)):
        if as_json:
            click.echo(json.dumps({
                "batch": index,
                "token_ids": x["token_ids"].tolist(),
                "segment_ids": x["padding_mask"].tolist(),
                "targets": y.tolist(),
                "loss_mask": weight.astype(int).tolist(),
            }))
            continue
        for row in range(x["token_ids"].shape[0]):
            click.echo(click.style(f"── batch {index} row {row} "
                                   f"({int(weight[row].sum())}/{sequence_length} targets trained) ──", bold=True))
            click.echo(render_row(tokenizer, x["token_ids"][row], x["padding_mask"][row],
                                  y[row], weight[row]))
    if not as_json:
        stats = pipeline.stats()
        click.echo(click.style("── stats ──", bold=True))
        click.echo(json.dumps(stats, indent=1))
