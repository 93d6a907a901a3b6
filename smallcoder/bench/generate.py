"""`bench_generate`: prompt and decode tokens/s, batch 1 and a batch, next to `transformers.generate`."""

import tempfile

import numpy as np

from smallcoder.bench import flops, peak, report


def random_prompts(config, count, length=32, seed=0):
    """`count` prompts of random token ids, lengths `length/2 .. length`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, length // 2), length + 1, size=count)
    lengths[0] = length
    return [[int(t) for t in rng.integers(1, config["vocabulary_size"], size=n)] for n in lengths]


# Stated tolerance of a quantized model's logits: max |logit - float32 logit|
# at most this fraction of the float32 logits' standard deviation.
LOGIT_TOLERANCE_OF_STD = 0.1


def build_decoder(config, seed=0):
    """A greedy float32 `SmallCoderCausalLM` with random weights (seed `seed`)."""
    import keras

    from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM

    keras.utils.set_random_seed(seed)
    causal_lm = SmallCoderCausalLM(SmallCoderBackbone(**config))
    causal_lm.compile(sampler="greedy")
    return causal_lm


def _ours(causal_lm, prompts, new_tokens):
    return lambda: causal_lm.generate(prompts, max_new_tokens=new_tokens, stop_token_ids=None, strip_prompt=True)


def _figures(prompts, new_tokens, first_s, full_s):
    """Prompt tokens/s from a 1-new-token call, decode tokens/s from the rest of the full call."""
    batch = len(prompts)
    prompt_tokens = sum(len(p) for p in prompts)
    return {
        "batch": batch,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "first_token_s": first_s,
        "generate_s": full_s,
        "prompt_tokens_per_s": prompt_tokens / first_s,
        # None when the timing noise exceeds the decode time (tiny models).
        "decode_tokens_per_s": batch * (new_tokens - 1) / (full_s - first_s) if full_s > first_s else None,
        "tokens_per_s": batch * new_tokens / full_s,  # new tokens per second, end to end
    }


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


def bench_generate(config, new_tokens=128, num_prompts=16, prompt_length=32, repeats=2, vs_hf=False,
                   quantize=None):
    """Greedy generation figures for batch 1 and a batch of `num_prompts`, alternating with HF.

    Each (side, batch, length) combination is compiled/warmed up once
    untimed, then timed `repeats` times; medians are reported. With
    `vs_hf`, transformers gets the same weights (through
    `smallcoder.convert.save_hf`, float32) and the greedy outputs are compared.
    With `quantize="int8"` our side is the same model after Keras
    `quantize("int8")` (HF stays float32), and the figures include its logit
    error and greedy agreement vs the float32 model (`quantization_figures`).
    """
    import keras

    prompts = random_prompts(config, num_prompts, prompt_length)
    causal_lm = build_decoder(config)
    tmp, hf_model = None, None
    if vs_hf:
        from smallcoder.bench.reference import hf_generate, hf_model_from_keras

        tmp = tempfile.TemporaryDirectory()
        hf_model = hf_model_from_keras(causal_lm, tmp.name)
    reference = None
    if quantize:
        reference = {"logits": prompt_logits(causal_lm, prompts)[0],
                     1: _ours(causal_lm, prompts[:1], new_tokens)(),
                     num_prompts: _ours(causal_lm, prompts, new_tokens)()}
        causal_lm.quantize_for_generation(quantize)
    work = {("ours", 1): prompts[:1], ("ours", num_prompts): prompts}
    runners = {}
    for (side, batch), ps in work.items():
        runners[(side, batch, 1)] = _ours(causal_lm, ps, 1)
        runners[(side, batch, new_tokens)] = _ours(causal_lm, ps, new_tokens)
    if vs_hf:
        for batch in (1, num_prompts):
            runners[("hf", batch, 1)] = hf_generate(hf_model, prompts[:batch], 1)
            runners[("hf", batch, new_tokens)] = hf_generate(hf_model, prompts[:batch], new_tokens)

    outputs, times = {}, {key: [] for key in runners}
    for key, run in runners.items():  # warm up / compile every shape once
        outputs[key] = run()
    for _ in range(repeats):  # alternate ours and hf
        for key, run in runners.items():
            times[key] += report.timed_calls(run, 1)
    if tmp is not None:
        tmp.cleanup()

    bandwidth = peak.memory_bandwidth()
    result = {
        "backend": keras.config.backend(), "machine": report.machine(), "config": config,
        "dtype": quantize or "float32", "new_tokens": new_tokens, "prompt_length": prompt_length, "repeats": repeats,
        "weight_bytes_per_token": flops.decode_bytes_per_token(
            config, 1.0 if quantize else 4.0, 4.0 if quantize == "int8-blocks" else None),
        "memory_bandwidth": bandwidth,
    }
    for side in ("ours", "hf") if vs_hf else ("ours",):
        for batch, label in ((1, "batch_1"), (num_prompts, f"batch_{num_prompts}")):
            first = report.median(times[(side, batch, 1)])
            full = report.median(times[(side, batch, new_tokens)])
            figures = _figures(work[("ours", batch)], new_tokens, first, full)
            figures["times_s"] = times[(side, batch, new_tokens)]
            if figures["decode_tokens_per_s"]:
                per_step = figures["decode_tokens_per_s"] / batch
                figures["decode_weight_bytes_per_s"] = result["weight_bytes_per_token"] * per_step
                figures["bandwidth_fraction"] = figures["decode_weight_bytes_per_s"] / bandwidth["bytes_per_s"]
            result.setdefault(side, {})[label] = figures
    big = f"batch_{num_prompts}"
    if quantize:
        logits, mask = prompt_logits(causal_lm, prompts)
        result["quantization"] = {
            label: quantization_figures(reference["logits"][:b], logits[:b], mask[:b], reference[b],
                                        outputs[("ours", b, new_tokens)])
            for label, b in (("batch_1", 1), (big, num_prompts))
        }
    result["batch_speedup"] = result["ours"][big]["tokens_per_s"] / result["ours"]["batch_1"]["tokens_per_s"]
    if vs_hf:
        for label in ("batch_1", big):
            result[f"ratio_{label}"] = report.ratio(result["ours"][label]["tokens_per_s"],
                                                    result["hf"][label]["tokens_per_s"])
        batch_keys = {"batch_1": 1, big: num_prompts}
        result["greedy_match_hf"] = {
            label: outputs[("ours", b, new_tokens)] == outputs[("hf", b, new_tokens)] for label, b in batch_keys.items()
        }
    return result
