"""`smallcoder data inspect RECIPE`: show the batches the model will see."""

import click


def recipe_data(path, demo):
    """`(data, sequence_length, tokenizer, streams)` of the recipe at `path`.

    A recipe that `extends` another goes through `smallcoder.recipes.load_recipe`
    (merging, demo blocks); a standalone YAML is read as is: its `data:`,
    `training.sequence_length` (or `model.sequence_length`),
    `model.tokenizer` and `training.data_streams` (auto: from
    `training.global_batch`; 1 without one), with its top-level `demo:` block
    applied under --demo. `streams` is what training would use; the middle two may be None.
    Bad YAML and bad keys raise `RecipeError` (one line: file, key, what to do).
    """
    from smallcoder.recipes import RecipeError, load_recipe, read_recipe_file

    raw = read_recipe_file(path)
    if raw.get("extends"):
        recipe = load_recipe(path, demo=demo, check_init=False)
        return (recipe["data"], recipe["training.sequence_length"], recipe["model.tokenizer"],
                recipe.data_streams)

    def get(tree, dotted):
        for key in dotted.split("."):
            tree = tree.get(key) if isinstance(tree, dict) else None
        return tree

    trees = ([raw.get("demo") or {}] if demo else []) + [raw]
    first = lambda *keys: next((get(t, k) for t in trees for k in keys if get(t, k) is not None), None)  # noqa: E731
    if "data" not in raw:
        raise RecipeError(path, "data", "missing; the recipe has no data section.")
    return (raw["data"], first("training.sequence_length", "model.sequence_length"),
            first("model.tokenizer", "tokenizer"), _streams(first))


def _streams(first):
    """`training.data_streams` of a standalone recipe, resolved as training does (1 if unknown)."""
    from smallcoder.data.streams import auto_streams

    streams = first("training.data_streams")
    if isinstance(streams, int) and streams > 0:
        return streams
    batch = first("training.global_batch")
    steps = first("training.gradient_accumulation_steps") or 1
    if isinstance(batch, int) and isinstance(steps, int) and batch > 0 and steps > 0:
        return auto_streams(max(batch // steps, 1))
    return 1


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


def load_tokenizer(path, tokenizer_path, demo):
    if tokenizer_path:
        from smallcoder.tokenizer import SmallCoderTokenizer

        return SmallCoderTokenizer(tokenizer_path)
    if demo:
        from smallcoder.demo_tokenizer import demo_tokenizer

        return demo_tokenizer()
    raise click.ClickException(
        f"{path}: model.tokenizer: not set; pass --tokenizer PATH (a tokenizer.json) or use --demo."
    )


@click.group("data")
def command():
    """Inspect and check the data pipeline."""


@command.command("inspect")
@click.argument("recipe")
@click.option("--demo", is_flag=True, help="Use the recipe's offline demo sources and the demo tokenizer.")
@click.option("--batches", default=1, show_default=True, help="How many batches to show.")
@click.option("--batch-size", default=2, show_default=True, help="Rows per batch.")
@click.option("--sequence-length", type=int, default=None,
              help="T (default: the recipe's training.sequence_length, else 256).")
@click.option("--split", type=click.Choice(["train", "validation"]), default="train", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--tokenizer", "tokenizer_path", default=None,
              help="A tokenizer.json (default: the recipe's model.tokenizer; the demo tokenizer with --demo).")
@click.option("--streams", type=int, default=None,
              help="Data streams making up each batch (default: what training uses).")
@click.option("--stream", default=0, show_default=True,
              help="The stream to show (process p of P feeds streams p*S/P .. (p+1)*S/P - 1).")
@click.option("--documents", default=3, show_default=True,
              help="First documents shown per source.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the reading order as one JSON object, then token ids, segment ids and "
              "loss masks, one JSON object per batch.")
def inspect(recipe, demo, batches, batch_size, sequence_length, split, seed, tokenizer_path,
            streams, stream, documents, as_json):
    """Show what the model will see for RECIPE (a recipe name, as in `recipe list`, or a YAML path).

    First the reading order of one data stream (`--stream` of `--streams`):
    per source, the shards it reads first, in order, and its first
    documents. Then its batches: each row decoded with ⟦doc k⟧ where
    document k starts (attention and positions restart there when document
    masking is on) and «…» around tokens that are not loss targets
    (prompts, cross-document targets).
    """
    import itertools
    import json

    from smallcoder.data import build_pipeline, validate_data_config
    from smallcoder.data.reading_order import format_reading_order, reading_order
    from smallcoder.data.sources import SourceError
    from smallcoder.recipes import recipe_path

    try:
        path = recipe_path(recipe)
        data, recipe_length, recipe_tokenizer, recipe_streams = recipe_data(path, demo)
        validate_data_config(data, path)
        streams = streams or recipe_streams
        sequence_length = sequence_length or recipe_length or 256
        tokenizer = load_tokenizer(path, tokenizer_path or (None if demo else recipe_tokenizer), demo)
        order = reading_order(data, seed=seed, demo=demo, split=split, stream=stream,
                              streams=streams, documents=documents)
        pipeline = build_pipeline(data, tokenizer, sequence_length=sequence_length,
                                  batch_size=batch_size, seed=seed, demo=demo, split=split,
                                  shard_index=stream, shard_count=streams)
    except (SourceError, ValueError, FileNotFoundError) as e:  # RecipeError is a ValueError
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps({"order": order}))
    else:
        click.echo(click.style("── reading order ──", bold=True))
        for line in format_reading_order(order):
            click.echo(line)
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
            click.echo(click.style(f"── batch {index} row {row} of stream {stream} "
                                   f"({int(weight[row].sum())}/{sequence_length} targets trained) ──", bold=True))
            click.echo(render_row(tokenizer, x["token_ids"][row], x["padding_mask"][row],
                                  y[row], weight[row]))
    if not as_json:
        stats = pipeline.stats()
        click.echo(click.style("── stats ──", bold=True))
        click.echo(json.dumps(stats, indent=1))
