"""Small helpers shared by the benchmarks: medians, ratios, memory, formatting."""

import os
import resource
import statistics
import sys
import time


def median(values):
    return float(statistics.median(values))


def ratio(ours, reference):
    """`ours / reference`, or None when there is no reference figure."""
    if not reference:
        return None
    return ours / reference


def timed_calls(fn, repeats):
    """Wall seconds of `repeats` consecutive calls of `fn()`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _status_bytes(field):
    """A `/proc/self/status` size field (e.g. `VmRSS`) in bytes, or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset this process's RSS high-water mark (Linux `clear_refs` 5); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes():
    """RSS high-water mark of this process: `VmHWM` (resettable), else `getrusage`."""
    high_water = _status_bytes("VmHWM")
    if high_water is not None:
        return high_water
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def current_rss_bytes():
    """Resident set size of this process now (`VmRSS`), 0 if unknown."""
    return _status_bytes("VmRSS") or 0


def machine():
    """A short description of where the figures were measured."""
    import platform

    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()}
    try:
        info.update(_cpuinfo())
    except OSError:
        pass
    try:
        import jax

        device = jax.devices()[0]
        info["device"] = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    except Exception:
        info["device"] = "unknown"
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def _cpuinfo():
    """The first CPU's model name, with its family / model / stepping (a model name such as "AMD EPYC"
    stands for several generations, whose bandwidth and vector units differ) and widest vector unit."""
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break  # the first processor's block only
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if "model name" not in fields:
        return {}
    flags = fields.get("flags", "").split()
    widest = next((unit for unit in ("avx512f", "avx2", "sse2") if unit in flags), None)
    return {"cpu_model": fields["model name"],
            "cpu_id": " ".join(f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields),
            "vector_unit": widest}


def gib(n):
    return n / 2**30


def _side_line(name, side):
    return (f"{name:<26}{side['tokens_per_s']:>10,.1f} tok/s   step {median(side['step_s']):7.2f} s   "
            f"MFU {side['mfu']:6.1%}   RSS +{gib(side['rss_increase_bytes']):5.1f} GiB "
            f"(process peak {gib(side['peak_rss_bytes']):.1f})")


def format_train(r):
    """Human-readable lines for a `bench_train` result."""
    c = r["config"]
    lines = [
        f"train {r.get('preset', '')} ({c['num_layers']} layers) batch {r['batch']}x{r['seq']} {r['dtype']} "
        f"remat={r['remat']} microbatches={r.get('microbatches', 1)} backend={r['backend']} "
        f"on {r['machine']['cpu_count']} cores "
        f"(load {r['machine'].get('load_average', ('?',))[0]:.1f})",
        f"model FLOPs/step {r['flops_per_step'] / 1e9:,.1f} G; matmul peak "
        f"({r['matmul_peak']['framework']} {r['matmul_peak']['dtype']} {r['matmul_peak']['size']}^2, measured) "
        f"{r['matmul_peak']['flops_per_s'] / 1e9:.1f} GFLOP/s",
        _side_line("smallcoder (keras/" + r["backend"] + ")", r["ours"]),
    ]
    if "layout" in r:
        lines.insert(1, f"mesh {r['mesh']} ({r['layout']}) over {r['processes']} process(es); figures for "
                        "the whole job, matmul peak x the job's hosts (CPU) or devices")
    if "hf" in r:
        lines.append(_side_line("transformers + torch", r["hf"]))
        lines.append(f"ratio ours/hf tokens/s: {r['ratio_tokens_per_s']:.2f}x (median of {r['steps']} steps each)")
    if "mfu_device_table" in r["ours"]:
        lines.append(f"MFU vs device table: {r['ours']['mfu_device_table']:.1%}")
    if "memory_analysis" in r:
        lines += format_memory(r["memory_analysis"])
    return "\n".join(lines)


def format_memory(m):
    """Lines for a `remat_memory` result: activation memory without/with remat and, on JAX, the step's peak."""
    lines = [f"activation memory ({m['none']['kind']}): no remat {gib(m['none']['bytes']):.2f} GiB, "
             f"remat=full {gib(m['full']['bytes']):.2f} GiB ({m['ratio']:.0%})"]
    if "fits" in m:
        fits = {True: "fits", False: "does NOT fit"}
        for key, label in (("none", "no remat"), ("full", "remat=full")):
            st = m[key]["step"]
            lines.append(
                f"training step peak, {label:<10}: {gib(st['peak_bytes']):.2f} GiB (weights "
                f"{gib(st['weight_bytes']):.2f}, AdamW {gib(st['optimizer_bytes']):.2f}, temp "
                f"{gib(st['temp_bytes']):.2f}: gradients, activations, work) + this process "
                f"{gib(m['process_bytes']):.2f} -> {fits[m['fits'][key]]} in {gib(m['machine_memory_bytes']):.1f} GiB")
        lines.append(f"(XLA compiled memory analysis; XLA:CPU scheduler: {m['xla_cpu_scheduler']}; "
                     f"{gib(m['available_bytes']):.1f} GiB were free at the start)")
    return lines


def _span(r, key):
    """`low-high` of a limit measured through a `bench_generate` run, in G units."""
    values = r["limits_measured"][key]
    return f"{min(values) / 1e9:.1f}-{max(values) / 1e9:.1f}"


def format_generate(r):
    """Human-readable lines for a `bench_generate` result: per case and side, rates and roofline fractions."""
    m, bw, mm = r["machine"], r["memory_bandwidth"], r["matmul_peak"]
    lines = [
        f"generate {r.get('preset', '')} {r['dtype']} greedy, decoding={r['decoding']}, backend={r['backend']}, "
        f"{m.get('cpu_model', m.get('device', ''))} ({m.get('cpu_id', '?')}) x {m['cpu_count']} cores "
        f"(load {m.get('load_average', ('?',))[0]:.1f})",
        r.get("decoding_note", f"decoding: {r['decoding']}"),
        f"measured: memory bandwidth {_span(r, 'bandwidth_bytes_per_s')} GB/s "
        f"({bw['megabytes']} MiB {bw['memory']} {bw.get('method', 'copy')}), "
        f"{mm['dtype']} matmul peak {_span(r, 'matmul_flops_per_s')} GFLOP/s ({mm['framework']} {mm['size']}^2) "
        "over the run; each case against those measured around its own runs",
        f"{'case':<9}{'side':<6}{'prompt tok/s':>13}{'decode tok/s':>14}{'e2e tok/s':>11}"
        f"{'% of roofline: prefill / decode / e2e':>40}{'bytes/token':>13}{'FLOPs/token':>13}",
    ]
    for label in r["roofline"]:
        for side in ("ours", "hf"):
            if side not in r:
                continue
            f, roof = r[side][label], r["roofline"][label][side]
            fr = f["roofline_fraction"]
            decode = f"{f['decode_tokens_per_s']:14.1f}" if f["decode_tokens_per_s"] else f"{'(noise)':>14}"
            fractions = " / ".join("  -" if fr[k] is None else f"{fr[k]:4.0%}"
                                   for k in ("prefill", "decode", "generate"))
            lines.append(f"{label:<9}{side:<6}{f['prompt_tokens_per_s']:13.1f}{decode}{f['tokens_per_s']:11.1f}"
                         f"{fractions:>40}{roof['bytes_per_token'] / 1e6:10.1f} MB"
                         f"{roof['flops_per_token'] / 1e9:11.2f} G"
                         f"  (at {roof['limits']['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, "
                         f"{roof['limits']['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s)")
            if f.get("bandwidth_fraction") is not None and side == "ours":
                calls = ", ".join(f"{x:.0%}" for x in f["bandwidth_fraction_per_call"])
                lines.append(f"{'':<9}{'':<6}decoding read {f['decode_weight_bytes_per_s'] / 1e9:.1f} GB/s of weights: "
                             f"{f['bandwidth_fraction']:.0%} of the bandwidth around each call (median; {calls})")
        if f"ratio_{label}" in r:
            decode = r.get("ratio_decode", {}).get(label)
            lines.append(f"{'':<9}ours/hf: end-to-end {r[f'ratio_{label}']:.2f}x, prefill "
                         f"{r['ratio_prefill'][label]:.2f}x" + (f", decode {decode:.2f}x" if decode else "")
                         + f"; greedy tokens equal: {r['greedy_match_hf'][label]}")
    lines.append(f"batched / batch 1 tokens/s: {r['batch_speedup']:.2f}x")
    return "\n".join(lines)
