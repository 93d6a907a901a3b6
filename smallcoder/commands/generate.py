"""`smallcoder generate`: sample from a model on the command line."""

import click

from smallcoder.models.quantization import QUANTIZE_CHOICES


@click.command("generate")
@click.argument("prompts", nargs=-1, required=True)
@click.option("--model", "model_path", default="smallcoder_tiny", show_default=True,
              help="Built-in preset name, Keras preset folder or Hugging Face folder.")
@click.option("--max-new-tokens", default=128, show_default=True, type=int)
@click.option("--sampler", default="greedy", show_default=True,
              type=click.Choice(["greedy", "top_k", "top_p", "temperature"]))
@click.option("--temperature", default=1.0, show_default=True, type=float)
@click.option("--top-k", default=50, show_default=True, type=int)
@click.option("--top-p", default=0.95, show_default=True, type=float)
@click.option("--seed", default=None, type=int, help="Seed for the random samplers.")
@click.option("--chat/--raw", default=True, show_default=True,
              help="Wrap each prompt in the chat format (User: …\\nAssistant:).")
@click.option("--quantize", default=None, type=click.Choice(QUANTIZE_CHOICES),
              help="Quantize the weights (Keras quantize('int8'): int8 kernels, per-token int8 activations) "
              "before generating; 'int8-blocks' keeps the embedding and output projection float32. Smaller "
              "weights; on the 2-core CPU no faster than float32 at batch 1 (XLA:CPU's int8 products are "
              "slow), and greedy output may differ from float32 (measured in docs/bench.md).")
def command(prompts, model_path, max_new_tokens, sampler, temperature, top_k, top_p, seed, chat, quantize):
    """Generate a continuation for each PROMPT (batched together)."""
    import keras_hub

    from smallcoder.models import SmallCoderCausalLM
    from smallcoder.tokenizer import chat_prompt

    samplers = {
        "greedy": lambda: keras_hub.samplers.GreedySampler(),
        "top_k": lambda: keras_hub.samplers.TopKSampler(k=top_k, temperature=temperature, seed=seed),
        "top_p": lambda: keras_hub.samplers.TopPSampler(p=top_p, temperature=temperature, seed=seed),
        "temperature": lambda: keras_hub.samplers.RandomSampler(temperature=temperature, seed=seed),
    }
    try:
        causal_lm = SmallCoderCausalLM.from_preset(model_path)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if causal_lm.tokenizer is None:
        raise click.ClickException(f"{model_path!r} has no tokenizer.json; cannot generate from text.")
    if quantize:
        causal_lm.quantize_for_generation(quantize)
    causal_lm.compile(sampler=samplers[sampler]())
    texts = [chat_prompt(p) if chat else p for p in prompts]
    try:
        outputs = causal_lm.generate(texts, max_new_tokens=max_new_tokens, strip_prompt=True)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    for prompt, output in zip(texts, outputs):
        click.echo(prompt + click.style(output, fg="green"))
        click.echo()
