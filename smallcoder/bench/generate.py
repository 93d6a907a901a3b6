"""`bench_generate`: prefill, decoding and end-to-end tokens/s per case, next to
`transformers.generate` and the machine's roofline.

Cases: batch 1 (one prompt), a batch (prompts of half to full length) and,
where it fits the context, the evaluation's shape (`EVAL_CASE`: 16 prompts of
100..300 tokens, 512 new tokens, as HumanEval/MBPP batches run). Each case's
roofline (`flops.generation_roofline`) uses the memory bandwidth and float32
matmul peak measured in the same process right around that case's timed runs
(`peak.Limits` between every two calls): a shared machine's limits move
within minutes.
"""

import tempfile

import numpy as np

from smallcoder.bench import flops, peak, report
from smallcoder.bench.quantization import prompt_logits, quantization_figures

# The evaluation's shape: prompts of 100..300 tokens, 512 new tokens, 16 rows.
EVAL_CASE = {"prompts": 16, "shortest": 100, "longest": 300, "new_tokens": 512}


def random_prompts(config, count, length=32, seed=0, shortest=None):
    """`count` prompts of random token ids, lengths `shortest` (default `length/2`) .. `length`; the first longest."""
    rng = np.random.default_rng(seed)
    shortest = max(1, length // 2) if shortest is None else shortest
    lengths = rng.integers(shortest, length + 1, size=count)
    lengths[0] = length
    return [[int(t) for t in rng.integers(1, config["vocabulary_size"], size=n)] for n in lengths]


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


def _padded_length(prompts):
    """P, the prompt block `generate` runs (its prefill bucket)."""
    from smallcoder.models.causal_lm import _PREFILL_BUCKET

    longest = max(len(p) for p in prompts)
    return -(-longest // _PREFILL_BUCKET) * _PREFILL_BUCKET


def _cases(config, new_tokens, num_prompts, prompt_length, eval_case):
    """`{label: (prompts, new_tokens)}`; the eval case only where it fits the context."""
    prompts = random_prompts(config, num_prompts, prompt_length)
    cases = {"batch_1": (prompts[:1], new_tokens), f"batch_{num_prompts}": (prompts, new_tokens)}
    fits = EVAL_CASE["longest"] + EVAL_CASE["new_tokens"] <= config.get("max_sequence_length", 1024)
    if eval_case and fits:
        cases["eval"] = (random_prompts(config, EVAL_CASE["prompts"], EVAL_CASE["longest"], seed=1,
                                        shortest=EVAL_CASE["shortest"]), EVAL_CASE["new_tokens"])
    return cases


def _limits_around(around, i):
    """`(bandwidth, matmul)` a timed call i is compared with: the larger of each measured just before and just
    after it (`around[i]`, `around[i + 1]`)."""
    (bw_before, mm_before), (bw_after, mm_after) = around[i], around[i + 1]
    return (max(bw_before, bw_after, key=lambda m: m["bytes_per_s"]),
            max(mm_before, mm_after, key=lambda m: m["flops_per_s"]))


def _limits_of_calls(around, calls):
    """The limits a case's runs are compared with: per call `_limits_around`, then the median over `calls`."""
    bandwidths, peaks = zip(*(_limits_around(around, i) for i in calls))
    return ({**bandwidths[0], "bytes_per_s": report.median([m["bytes_per_s"] for m in bandwidths])},
            {**peaks[0], "flops_per_s": report.median([m["flops_per_s"] for m in peaks])})


def _bandwidth_fractions(around, calls, times, first_s, weight_bytes):
    """Per timed call: its decoding's weight-read rate (`weight_bytes` over its time less the median
    1-token call's) over the bandwidth around it (`_limits_around`).

    Each call against its own ruler: a shared machine's bandwidth can change between two calls of
    the same case (a VM here switched between about 48 and 65 GB/s every few tens of seconds), and
    the median time against the median ruler would mix the two states.
    """
    fractions = []
    for i, seconds in zip(calls, times):
        if seconds > first_s:
            fractions.append(weight_bytes / (seconds - first_s) / _limits_around(around, i)[0]["bytes_per_s"])
    return fractions


def bench_generate(config, new_tokens=128, num_prompts=16, prompt_length=32, repeats=2, vs_hf=False,
                   quantize=None, eval_case=True, decoding="auto"):
    """Greedy generation figures per case, alternating with HF, against the roofline.

    Each (side, case, 1 or all new tokens) call is compiled/warmed up once
    untimed, then timed `repeats` times, the sides alternating; medians
    are reported. Prefill figures come from the 1-new-token call, decoding
    from the difference to the full call. Each case and side is compared
    with the limits measured around its own calls (`_limits_of_calls`),
    and its decoding's `bandwidth_fraction` is the median over its timed
    calls of each against the bandwidth around it (`_bandwidth_fractions`);
    `memory_bandwidth` and `matmul_peak` are the best of the run. With
    `vs_hf`, transformers gets the same weights (through
    `smallcoder.convert.save_hf`, float32) and the greedy outputs are
    compared. With `quantize` (`QUANTIZE_CHOICES`) our
    side runs the weight-only int8 model (HF stays float32), and the figures
    include its logit error and greedy agreement vs the float32 model
    (`quantization_figures`). `decoding`: `"auto"`, `"native"` or `"xla"`
    (`SmallCoderCausalLM.use_decoding`).
    """
    import keras

    limits = peak.Limits()
    cases = _cases(config, new_tokens, num_prompts, prompt_length, eval_case)
    causal_lm = build_decoder(config)
    tmp, hf_model = None, None
    if vs_hf:
        from smallcoder.bench.reference import hf_generate, hf_model_from_keras

        tmp = tempfile.TemporaryDirectory()
        hf_model = hf_model_from_keras(causal_lm, tmp.name)
    reference = {}
    if quantize:
        checked = [label for label in cases if label != "eval"]  # the eval case's float32 run is long
        reference = {label: (prompt_logits(causal_lm, cases[label][0])[0],
                             _ours(causal_lm, *cases[label])()) for label in checked}
        causal_lm.quantize_for_generation(quantize)
    causal_lm.use_decoding(decoding)
    runners = {}
    for label, (prompts, new) in cases.items():
        runners[("ours", label, 1)] = _ours(causal_lm, prompts, 1)
        runners[("ours", label, new)] = _ours(causal_lm, prompts, new)
        if vs_hf:
            runners[("hf", label, 1)] = hf_generate(hf_model, prompts, 1)
            runners[("hf", label, new)] = hf_generate(hf_model, prompts, new)

    outputs, times, calls = {}, {key: [] for key in runners}, {key: [] for key in runners}
    for key, run in runners.items():  # warm up / compile every shape once
        outputs[key] = run()
    around = [limits()]  # the limits between consecutive timed calls
    for _ in range(repeats):  # alternate ours and hf
        for key, run in runners.items():
            times[key] += report.timed_calls(run, 1)
            calls[key].append(len(around) - 1)
            around.append(limits())
    if tmp is not None:
        tmp.cleanup()

    bandwidth = max((b for b, _ in around), key=lambda m: m["bytes_per_s"])
    matmul = max((m for _, m in around), key=lambda m: m["flops_per_s"])
    weight_bytes = {
        "ours": flops.decode_bytes_per_token(config, 1.0 if quantize else 4.0,
                                             4.0 if quantize == "int8-blocks" else None),
        "hf": flops.decode_bytes_per_token(config, 4.0),
    }
    result = {
        "backend": keras.config.backend(), "machine": report.machine(), "config": config,
        "dtype": quantize or "float32", "decoding": causal_lm.decoding, "decoding_note": causal_lm.decoding_note,
        "repeats": repeats,
        "new_tokens": new_tokens, "prompt_length": prompt_length,
        "weight_bytes_per_token": weight_bytes["ours"],
        "memory_bandwidth": bandwidth, "matmul_peak": matmul,
        "limits_measured": {"bandwidth_bytes_per_s": [b["bytes_per_s"] for b, _ in around],
                            "matmul_flops_per_s": [m["flops_per_s"] for _, m in around]},
        "roofline": {},
    }
    sides = ("ours", "hf") if vs_hf else ("ours",)
    for label, (prompts, new) in cases.items():
        padded = _padded_length(prompts)
        for side in sides:
            case_bandwidth, case_matmul = _limits_of_calls(around, calls[(side, label, 1)] + calls[(side, label, new)])
            roofline = flops.generation_roofline(config, [len(p) for p in prompts], padded, new, weight_bytes[side],
                                                 case_bandwidth["bytes_per_s"], case_matmul["flops_per_s"])
            roofline["limits"] = {"bandwidth_bytes_per_s": case_bandwidth["bytes_per_s"],
                                  "matmul_flops_per_s": case_matmul["flops_per_s"]}
            result["roofline"].setdefault(label, {})[side] = roofline
            first = report.median(times[(side, label, 1)])
            full = report.median(times[(side, label, new)])
            figures = _figures(prompts, new, first, full)
            figures["padded_prompt_length"] = padded
            figures["times_s"] = times[(side, label, new)]
            figures["prefill_times_s"] = times[(side, label, 1)]
            figures["roofline_fraction"] = {
                "prefill": roofline["prefill_s"] / first,
                "decode": roofline["decode_s"] / (full - first) if full > first else None,
                "generate": roofline["generate_s"] / full,
            }
            if figures["decode_tokens_per_s"]:
                per_step = figures["decode_tokens_per_s"] / len(prompts)
                figures["decode_weight_bytes_per_s"] = weight_bytes[side] * per_step
                per_call = _bandwidth_fractions(around, calls[(side, label, new)], times[(side, label, new)], first,
                                                weight_bytes[side] * (new - 1))
                figures["bandwidth_fraction_per_call"] = per_call
                figures["bandwidth_fraction"] = report.median(per_call) if per_call else None
            result.setdefault(side, {})[label] = figures
    big = f"batch_{num_prompts}"
    if quantize:
        quantized_logits = {label: prompt_logits(causal_lm, cases[label][0]) for label in reference}
        result["quantization"] = {
            label: quantization_figures(reference[label][0], quantized_logits[label][0], quantized_logits[label][1],
                                        reference[label][1], outputs[("ours", label, cases[label][1])])
            for label in reference
        }
    result["batch_speedup"] = result["ours"][big]["tokens_per_s"] / result["ours"]["batch_1"]["tokens_per_s"]
    if vs_hf:
        for label in cases:
            result[f"ratio_{label}"] = report.ratio(result["ours"][label]["tokens_per_s"],
                                                    result["hf"][label]["tokens_per_s"])
            ours, hf = result["ours"][label], result["hf"][label]
            result.setdefault("ratio_prefill", {})[label] = report.ratio(ours["prompt_tokens_per_s"],
                                                                         hf["prompt_tokens_per_s"])
            if ours["decode_tokens_per_s"] and hf["decode_tokens_per_s"]:
                result.setdefault("ratio_decode", {})[label] = ours["decode_tokens_per_s"] / hf["decode_tokens_per_s"]
        result["greedy_match_hf"] = {
            label: outputs[("ours", label, new)] == outputs[("hf", label, new)] for label, (_, new) in cases.items()
        }
    return result
