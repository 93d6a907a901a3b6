"""`bench_generate`: prompt and decode tokens/s, batch 1 and a batch, next to `transformers.generate`."""

import tempfile
import time

import numpy as np

from smallcoder.bench import flops, peak, report


def random_prompts(config, count, length=32, seed=0):
    """`count` prompts of random token ids, lengths `length/2 .. length`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, length // 2), length + 1, size=count)
    lengths[0] = length
    return [[int(t) for t in rng.integers(1, config["vocabulary_size"], size=n)] for n in lengths]


def build_decoder(config, seed=0):
    """A greedy float32 `SmallCoderCausalLM` with random weights (seed `seed`).

    Lower-precision decoding was measured and left out: on XLA:CPU neither
    bf16 weights (bf16 compute) nor Keras `quantize("int8")` (which also
    quantizes activations) decoded a single sequence faster than float32,
    and bf16 changed greedy tokens on the test model.
    """
    import keras

    from smallcoder.models import SmallCoderBackbone, SmallCoderCausalLM

    keras.utils.set_random_seed(seed)
    causal_lm = SmallCoderCausalLM(SmallCoderBackbone(**config))
    causal_lm.compile(sampler="greedy")
    return causal_lm


def _ours(causal_lm, prompts, new_tokens):
    return lambda: causal_lm.generate(prompts, max_new_tokens=new_tokens, stop_token_ids=None, strip_prompt=True)


def _time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


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


def bench_generate(config, new_tokens=128, num_prompts=16, prompt_length=32, repeats=2, vs_hf=False):
    """Greedy generation figures for batch 1 and a batch of `num_prompts`, alternating with HF.

    Each (side, batch, length) combination is compiled/warmed up once
    untimed, then timed `repeats` times; medians are reported. With
    `vs_hf`, transformers gets the same weights (through
    `smallcoder.convert.save_hf`, float32) and the greedy outputs are compared.
    """
    import keras

    prompts = random_prompts(config, num_prompts, prompt_length)
    causal_lm = build_decoder(config)
    tmp, hf_model = None, None
    if vs_hf:
        from smallcoder.bench.reference import hf_generate, hf_model_from_keras

        tmp = tempfile.TemporaryDirectory()
        hf_model = hf_model_from_keras(causal_lm, tmp.name)
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
            times[key] += _time(run, 1)[0]
    if tmp is not None:
        tmp.cleanup()

    bandwidth = peak.memory_bandwidth()
    result = {
        "backend": keras.config.backend(), "machine": report.machine(), "config": config,
        "dtype": "float32", "new_tokens": new_tokens, "prompt_length": prompt_length, "repeats": repeats,
        "weight_bytes_per_token": flops.decode_bytes_per_token(config, 4.0),
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
