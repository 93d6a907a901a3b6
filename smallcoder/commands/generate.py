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
              help="Weight-only int8 (int8 kernels with per-channel scales, float32 activations) before "
              "generating; 'int8-blocks' keeps the embedding and output projection float32. A quarter of "
              "the bytes per token, run by the native decoding kernels where they run (JAX on x86-64); "
              "greedy output may differ from float32 (docs/bench.md).")
@click.option("-v", "--verbose", is_flag=True, help="Say which kernels decode (native or XLA) and why, on stderr.")
@click.option("--truncate-prompt", is_flag=True,
              help="If a prompt plus --max-new-tokens exceeds the 1024-token context, keep only the "
              "prompt's last tokens instead of stopping with an error.")
def command(prompts, model_path, max_new_tokens, sampler, temperature, top_k, top_p, seed, chat, quantize,
            verbose, truncate_prompt):
    """Generate a continuation for each PROMPT (batched together)."""
    from smallcoder.commands._model import load_model_option

    causal_lm = load_model_option(model_path, text_because="cannot generate from text")
    import keras_hub

    from smallcoder.tokenizer import chat_prompt

    samplers = {
        "greedy": lambda: keras_hub.samplers.GreedySampler(),
        "top_k": lambda: keras_hub.samplers.TopKSampler(k=top_k, temperature=temperature, seed=seed),
        "top_p": lambda: keras_hub.samplers.TopPSampler(p=top_p, temperature=temperature, seed=seed),
        "temperature": lambda: keras_hub.samplers.RandomSampler(temperature=temperature, seed=seed),
    }
    if quantize:
        causal_lm.quantize_for_generation(quantize)
    causal_lm.compile(sampler=samplers[sampler]())
    if verbose:
        click.echo(causal_lm.decoding_note, err=True)
    texts = [chat_prompt(p) if chat else p for p in prompts]
    context = causal_lm.backbone.max_sequence_length
    longest = max(len(ids) for ids in causal_lm.tokenizer.encode_batch(texts))
    if max_new_tokens >= context:
        raise click.ClickException(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the "
                                   f"{context}-token context; lower it.")
    if longest + max_new_tokens > context and not truncate_prompt:
        raise click.ClickException(
            f"A prompt of {longest} tokens + --max-new-tokens {max_new_tokens} exceeds the {context}-token "
            "context. Shorten the prompt, lower --max-new-tokens, or pass --truncate-prompt to keep only "
            "the prompt's last tokens."
        )
    try:
        outputs = causal_lm.generate(texts, max_new_tokens=max_new_tokens, strip_prompt=True,
                                     truncate_prompt=truncate_prompt)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    for prompt, output in zip(texts, outputs):
        click.echo(prompt + click.style(output, fg="green"))
        click.echo()
