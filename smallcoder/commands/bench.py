"""`smallcoder bench ...`: speed figures measured against a reference in the same run."""

import click


@click.group("bench")
def command():
    """Benchmarks: each prints its figure next to a reference run on the same machine."""


@command.command("data")
@click.option("--megabytes", default=8.0, show_default=True, help="Text to tokenize (demo code and prose).")
@click.option("--sequence-length", default=1024, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--repeats", default=5, show_default=True, help="Alternating runs; the best of each counts.")
@click.option("--tokenizer", "tokenizer_path", default=None, help="A tokenizer.json (default: the demo tokenizer).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def data(megabytes, sequence_length, batch_size, repeats, tokenizer_path, as_json):
    """Data pipeline tokens/s (jsonl -> tokenize -> pack) vs raw `tokenizers` encode_batch."""
    import json

    from smallcoder.data.bench import bench_data

    tokenizer = None
    if tokenizer_path:
        from smallcoder.tokenizer import SmallCoderTokenizer

        tokenizer = SmallCoderTokenizer(tokenizer_path)
    result = bench_data(tokenizer, megabytes=megabytes, sequence_length=sequence_length,
                        batch_size=batch_size, repeats=repeats)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"text: {result['documents']} documents, {result['megabytes']} MB, "
               f"{result['text_tokens']:,} tokens ({result['cores']} cores)")
    click.echo(f"raw tokenizers encode_batch      : {result['raw_tokens_per_s']:>12,} tokens/s")
    if "raw_fast_tokens_per_s" in result:
        click.echo(f"raw tokenizers encode_batch_fast : {result['raw_fast_tokens_per_s']:>12,} tokens/s")
    click.echo(f"data pipeline (jsonl -> packed)  : {result['pipeline_tokens_per_s']:>12,} tokens/s")
    click.echo(f"ratio: {result['ratio']:.1%} of raw encode_batch (target >= 80%); "
               f"by CPU time {result['cpu_ratio']:.1%}"
               + (f"; {result['ratio_vs_fast']:.1%} of encode_batch_fast" if "ratio_vs_fast" in result else ""))
