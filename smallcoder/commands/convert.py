"""`smallcoder convert`: move weights between Hugging Face and Keras preset folders."""

import click

_ERRORS = (ValueError, OSError)


def _check_destination(dst, overwrite):
    import os

    if os.path.exists(dst) and not overwrite and (not os.path.isdir(dst) or os.listdir(dst)):
        raise click.ClickException(f"{dst} exists and is not empty; pass --overwrite to replace it.")


@click.group("convert")
def command():
    """Convert checkpoints between Hugging Face (Llama safetensors) and Keras."""


@command.command("hf-to-keras")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--dtype", default=None, help="Keras dtype of the model, e.g. float32, bfloat16 (default: float32).")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
def hf_to_keras(src, dst, dtype, overwrite):
    """Read the Hugging Face folder or Hub repo id SRC; write a Keras preset folder DST."""
    _check_destination(dst, overwrite)
    from smallcoder.convert import load_hf

    try:
        causal_lm = load_hf(src, dtype=dtype, progress=True)
        causal_lm.save_to_preset(dst)
    except _ERRORS as e:
        raise click.ClickException(str(e)) from e
    backbone = causal_lm.backbone
    click.echo(
        f"Wrote {dst}: {backbone.count_params():,} parameters, {backbone.num_layers} layers, "
        f"dtype {backbone.dtype_policy.name}."
    )


@command.command("keras-to-hf")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["bfloat16", "float32", "float16"]),
              help="dtype of the safetensors written (float32 is lossless).")
@click.option("--max-shard-size", default=5 * 10**9, show_default=True, type=int,
              help="Bytes per safetensors file; larger checkpoints are sharded with an index.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
def keras_to_hf(src, dst, dtype, max_shard_size, overwrite):
    """Read the Keras preset SRC (folder or built-in name); write a Hugging Face folder DST."""
    _check_destination(dst, overwrite)
    from smallcoder.convert import save_hf
    from smallcoder.models import SmallCoderCausalLM

    try:
        causal_lm = SmallCoderCausalLM.from_preset(src)
        save_hf(causal_lm, dst, dtype=dtype, max_shard_size=max_shard_size, overwrite=overwrite, progress=True)
    except _ERRORS as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"Wrote {dst} ({dtype}); load it with transformers.AutoModelForCausalLM.from_pretrained.")
