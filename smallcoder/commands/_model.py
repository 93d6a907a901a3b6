"""Loading `--model` for a command: checked before Keras is imported, failures as one-line errors."""

import click


def load_model_option(model_path, dtype=None, text_because=None):
    """`SmallCoderCausalLM.from_preset(model_path, dtype=dtype)`, or a `click.ClickException`.

    `--model` is checked (`presets.check_model_source`) before Keras is
    imported, so a wrong path fails at once. `text_because`: why the command
    needs the model's tokenizer.json (it is an error to lack one then).
    """
    from smallcoder.models.presets import check_model_source

    try:
        check_model_source(model_path)
        from smallcoder.models import SmallCoderCausalLM

        causal_lm = SmallCoderCausalLM.from_preset(model_path, dtype=dtype)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if text_because and causal_lm.tokenizer is None:
        raise click.ClickException(f"{model_path!r} has no tokenizer.json; {text_because}.")
    return causal_lm
