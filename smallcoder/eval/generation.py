"""Batched generation for evals: prompts sorted by length, a max_new_tokens
cap per batch so that prompt + generation fits the context, and the sampler
swapped in for the eval and restored after (no recompilation of a model that
is being trained).
"""

from __future__ import annotations

import contextlib
import dataclasses


def make_sampler(temperature, seed=None):
    """Greedy for `temperature == 0`, else `RandomSampler(temperature)`."""
    import keras_hub

    if temperature == 0:
        return keras_hub.samplers.GreedySampler()
    return keras_hub.samplers.RandomSampler(temperature=temperature, seed=seed)


@contextlib.contextmanager
def using_sampler(causal_lm, sampler):
    """Generate with `sampler` inside the block; the model's own one after."""
    had = hasattr(causal_lm, "sampler")
    old = getattr(causal_lm, "sampler", None)
    old_fn = getattr(causal_lm, "generate_function", None)
    causal_lm.sampler, causal_lm.generate_function = sampler, None
    try:
        yield causal_lm
    finally:
        causal_lm.generate_function = old_fn
        if had:
            causal_lm.sampler = old
        else:
            del causal_lm.sampler


@dataclasses.dataclass
class GenerationStats:
    """How often the context forced a smaller `max_new_tokens`."""

    requested_max_new_tokens: int
    min_max_new_tokens: int | None = None
    capped_prompts: int = 0
    too_long_prompts: int = 0
    longest_prompt_tokens: int = 0

    def as_dict(self):
        return dataclasses.asdict(self)


def generate_batches(
    causal_lm, prompts, max_new_tokens, batch_size, stats, progress=None
):
    """Generate one completion per prompt, batch by batch.

    Args:
        causal_lm: a `SmallCoderCausalLM` with a tokenizer.
        prompts: list of `(key, text)`.
        max_new_tokens: wanted new tokens; lowered per batch to
            `context - longest prompt in the batch` (counted in `stats`).
        batch_size: prompts per `generate` call; the last batch is padded
            with repeats so every call has the same shape (one compilation).
        stats: a `GenerationStats` updated in place.

    Yields:
        Lists of `(key, completion_text)`; a prompt that leaves no room
        for generation (`>= context` tokens) gets `None`.
    """
    tokenizer = causal_lm.tokenizer
    context = causal_lm.backbone.max_sequence_length
    lengths = [len(ids) for ids in tokenizer.encode_batch([p for _, p in prompts])]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    if lengths:
        stats.longest_prompt_tokens = max(stats.longest_prompt_tokens, max(lengths))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        fits = [i for i in batch if lengths[i] < context]
        out = [(prompts[i][0], None) for i in batch if lengths[i] >= context]
        stats.too_long_prompts += len(out)
        if fits:
            longest = max(lengths[i] for i in fits)
            cap = min(max_new_tokens, context - longest)
            if cap < max_new_tokens:
                stats.capped_prompts += len(fits)
            if stats.min_max_new_tokens is None or cap < stats.min_max_new_tokens:
                stats.min_max_new_tokens = cap
            texts = [prompts[i][1] for i in fits]
            texts += [texts[-1]] * (batch_size - len(texts))
            outputs = causal_lm.generate(texts, max_new_tokens=cap, strip_prompt=True)
            out += [(prompts[i][0], outputs[j]) for j, i in enumerate(fits)]
        if progress is not None:
            progress.update(len(batch))
        yield out
