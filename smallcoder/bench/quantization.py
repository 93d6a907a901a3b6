"""Does weight-only int8 change what a model says? Its logits and greedy output against float32.

`check_quantization` runs a model's float32 and quantized (`--quantize`
choice) forms on the same prompts: the largest logit difference over the
prompts' positions, in units of the float32 logits' standard deviation
(tolerance `LOGIT_TOLERANCE_OF_STD`), the argmax agreement, and how many
greedy continuations are equal. `smallcoder bench quantization --model`
runs it on a trained checkpoint and the prompts of a benchmark;
`bench generate --quantize` on random weights, next to its timings.
"""

import numpy as np

# Stated tolerance of a quantized model's logits: max |logit - float32 logit|
# at most this fraction of the float32 logits' standard deviation.
LOGIT_TOLERANCE_OF_STD = 0.1


def prompt_logits(causal_lm, prompts):
    """Float32 logits (B, P, V) of right-padded `prompts` (full forward, no cache) and the padding mask (B, P)."""
    from keras import ops

    longest = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), longest), "int32")
    mask = np.zeros((len(prompts), longest), "int32")
    for row, p in enumerate(prompts):
        ids[row, : len(p)], mask[row, : len(p)] = p, 1
    logits = causal_lm.predict_on_batch({"token_ids": ids, "padding_mask": mask})
    return ops.convert_to_numpy(ops.cast(logits, "float32")), mask.astype(bool)


def quantization_figures(reference_logits, logits, mask, reference_tokens, tokens):
    """Logit error of a quantized model vs float32 and its greedy agreement.

    Args:
        reference_logits, logits: float (B, P, V), float32 and quantized model.
        mask: bool (B, P), real prompt positions.
        reference_tokens, tokens: lists of B greedy continuations.
    """
    diff = np.abs(logits - reference_logits)[mask]
    std = float(reference_logits[mask].std())
    prefixes = []
    for ref, got in zip(reference_tokens, tokens):
        same = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
        prefixes.append(same)
    return {
        "max_abs_logit_diff": float(diff.max()),
        "float32_logit_std": std,
        "max_diff_of_std": float(diff.max()) / std,
        "tolerance_of_std": LOGIT_TOLERANCE_OF_STD,
        "within_tolerance": float(diff.max()) <= LOGIT_TOLERANCE_OF_STD * std,
        "argmax_agreement": float(np.mean(np.argmax(logits, -1)[mask] == np.argmax(reference_logits, -1)[mask])),
        "greedy_equal_rows": sum(a == b for a, b in zip(reference_tokens, tokens)),
        "rows": len(tokens),
        "greedy_equal_prefix_mean": float(np.mean(prefixes)),
    }


def format_quantization(r):
    """Lines for the `quantization` figures of a `bench_generate` result."""
    if "quantization" not in r:
        return []
    lines = []
    for label, q in r["quantization"].items():
        lines.append(
            f"{r['dtype']} vs float32 ({label}): max |logit diff| {q['max_abs_logit_diff']:.4f} = "
            f"{q['max_diff_of_std']:.3f} std (tolerance {q['tolerance_of_std']} std: "
            f"{'within' if q['within_tolerance'] else 'EXCEEDED'}); prompt argmax agreement "
            f"{q['argmax_agreement']:.1%}; greedy tokens equal on {q['greedy_equal_rows']}/{q['rows']} rows "
            f"(mean equal prefix {q['greedy_equal_prefix_mean']:.1f} tokens)")
    return lines


def check_quantization(causal_lm, prompts, choice, new_tokens):
    """Quantize `causal_lm` in place with `choice` and compare it with its float32 self.

    Args:
        causal_lm: a float32 `SmallCoderCausalLM`, compiled with the greedy sampler.
        prompts: lists of token ids.
        choice: a `QUANTIZE_CHOICES` entry.
        new_tokens: greedy tokens generated per prompt (each row stops at
            the tokenizer's EOS, where there is a tokenizer).

    Returns:
        `quantization_figures`, plus `float32_tokens` and `quantized_tokens`.
    """
    stop = "auto" if causal_lm.tokenizer is not None else None

    def run():
        logits, mask = prompt_logits(causal_lm, prompts)
        return logits, mask, causal_lm.generate(prompts, max_new_tokens=new_tokens, stop_token_ids=stop,
                                                strip_prompt=True)

    reference_logits, mask, reference_tokens = run()
    causal_lm.quantize_for_generation(choice)
    logits, _, tokens = run()
    figures = quantization_figures(reference_logits, logits, mask, reference_tokens, tokens)
    return {**figures, "float32_tokens": reference_tokens, "quantized_tokens": tokens}
