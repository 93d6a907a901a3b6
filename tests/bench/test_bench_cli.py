"""`smallcoder bench train|generate --json` run end to end on the test preset."""

import json

import pytest
from click.testing import CliRunner

from smallcoder.cli import main


def run(args):
    result = CliRunner().invoke(main, ["bench", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_train_reports_tokens_per_s_mfu_and_memory_for_both_sides(backend):
    memory = [] if backend == "tensorflow" else ["--memory-analysis"]
    r = run(["train", "--preset", "smallcoder_test", "--batch", "1", "--seq", "32", "--steps", "1", "--vs", "hf",
             *memory])
    assert r["flops_per_step"] == r["flops_per_token"] * 32
    assert r["matmul_peak"]["flops_per_s"] > 0
    for side in ("ours", "hf"):
        figures = r[side]
        assert len(figures["step_s"]) == 1
        assert figures["tokens_per_s"] > 0 and 0 < figures["mfu"]
        # >= 0, not > 0: in a warm test process a tiny model may fit in memory the allocator already held.
        assert figures["peak_rss_bytes"] >= figures["rss_increase_bytes"] >= 0 and figures["peak_rss_bytes"] > 0
        assert 7 < figures["first_loss"] < 10  # ln(4096) = 8.3 for random weights
    assert r["ratio_tokens_per_s"] == r["ours"]["tokens_per_s"] / r["hf"]["tokens_per_s"]
    if memory:
        m = r["memory_analysis"]
        assert m["none"]["bytes"] > 0 and m["full"]["bytes"] > 0
        assert m["ratio"] == m["full"]["bytes"] / m["none"]["bytes"]


def test_bench_train_memory_only(backend):
    args = ["train", "--preset", "smallcoder_test", "--batch", "1", "--seq", "32", "--memory-only"]
    if backend == "tensorflow":
        result = CliRunner().invoke(main, ["bench", *args])
        assert result.exit_code != 0 and "jax" in result.output
        return
    m = run(args)["memory_analysis"]
    assert m["ratio"] == m["full"]["bytes"] / m["none"]["bytes"]
    if backend == "jax":
        for key in ("none", "full"):
            step = m[key]["step"]
            assert step["peak_bytes"] > step["weight_bytes"] + step["optimizer_bytes"]
            assert m["fits"][key]
        assert m["xla_cpu_scheduler"] == "memory"
    text = CliRunner().invoke(main, ["bench", *args], catch_exceptions=False).stdout
    assert "activation memory" in text
    if backend == "jax":
        assert "training step peak, remat=full" in text and "fits in" in text


def test_bench_generate_reports_rates_rooflines_and_matches_hf():
    r = run(["generate", "--preset", "smallcoder_test", "--new-tokens", "4", "--prompts", "3",
             "--prompt-length", "8", "--repeats", "1", "--vs", "hf", "--no-eval-case"])
    assert r["memory_bandwidth"]["bytes_per_s"] > 0 and r["matmul_peak"]["flops_per_s"] > 0
    measured = r["limits_measured"]["bandwidth_bytes_per_s"]
    assert len(measured) == 1 + 2 * 2 * 2  # before the first timed call, then after each (2 sides x 2 cases x 2)
    assert r["memory_bandwidth"]["bytes_per_s"] == max(measured)
    for side in ("ours", "hf"):
        for label, batch in (("batch_1", 1), ("batch_3", 3)):
            assert min(measured) <= r["roofline"][label][side]["limits"]["bandwidth_bytes_per_s"] <= max(measured)
            figures = r[side][label]
            assert figures["batch"] == batch and figures["new_tokens"] == 4
            assert figures["prompt_tokens_per_s"] > 0 and figures["tokens_per_s"] > 0
            # Decode rate = (4-token call - 1-token call); None if the difference is noise.
            assert figures["decode_tokens_per_s"] is None or figures["decode_tokens_per_s"] > 0
            roofline = r["roofline"][label][side]
            assert roofline["generate_s"] == roofline["prefill_s"] + roofline["decode_s"] > 0
            assert figures["roofline_fraction"]["generate"] == pytest.approx(
                roofline["generate_s"] / (batch * 4 / figures["tokens_per_s"]), rel=1e-9)
            # Each timed call's weight reads against the larger bandwidth probe just before / after it (timed
            # calls in order: per case ours 1 and 4 tokens, then hf's; the 4-token call's probes at i, i + 1).
            i = 1 + 4 * (label == "batch_3") + 2 * (side == "hf")
            decode_s = figures["times_s"][0] - figures["prefill_times_s"][0]
            if figures["decode_tokens_per_s"]:
                expected = r["weight_bytes_per_token"] * 3 / decode_s / max(measured[i], measured[i + 1])
                assert figures["bandwidth_fraction_per_call"] == [pytest.approx(expected, rel=1e-9)]
                assert figures["bandwidth_fraction"] == figures["bandwidth_fraction_per_call"][0]
    assert "eval" not in r["roofline"]
    assert r["batch_speedup"] > 0 and r["ratio_batch_1"] > 0
    # Same weights (converted with save_hf), float32, greedy: same tokens.
    assert r["greedy_match_hf"] == {"batch_1": True, "batch_3": True}


def test_bench_text_output_names_both_sides():
    result = CliRunner().invoke(main, ["bench", "train", "--preset", "smallcoder_test", "--batch", "1", "--seq", "16",
                                       "--steps", "1", "--vs", "hf"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "transformers + torch" in result.stdout and "ratio ours/hf tokens/s" in result.stdout


def test_unknown_reference_is_refused():
    result = CliRunner().invoke(main, ["bench", "train", "--preset", "smallcoder_test", "--vs", "vllm"])
    assert result.exit_code != 0 and "hf" in result.output


def test_bench_checkpoint_reports_the_size_of_weights_and_adamw_state_once(tmp_path):
    r = run(["checkpoint", "--preset", "smallcoder_test", "--saves", "2", "--dir", str(tmp_path)])
    assert r["parameters"] == 598_336 and len(r["saves"]) == 2
    state_bytes = 3 * 4 * r["parameters"]  # float32 weights + AdamW momentum and velocity
    for save in r["saves"]:
        assert 0 < save["blocking_s"] <= save["total_s"]
        assert 0.9 * state_bytes <= save["bytes"] <= 1.1 * state_bytes
    assert not list(tmp_path.iterdir())  # written to a temporary folder that is gone again


def test_each_case_is_compared_with_the_limits_measured_around_its_own_calls():
    from smallcoder.bench.generate import _limits_of_calls

    def limits(gbs, gflops):
        return {"bytes_per_s": gbs * 1e9, "method": "probe"}, {"flops_per_s": gflops * 1e9, "size": 8}

    around = [limits(30, 100), limits(50, 90), limits(20, 80), limits(40, 120)]
    # call 0 ran between around[0] and [1], call 2 between [2] and [3]: the better of each pair, then the median
    bandwidth, matmul = _limits_of_calls(around, [0, 2])
    assert bandwidth == {"bytes_per_s": 45e9, "method": "probe"}
    assert matmul == {"flops_per_s": 110e9, "size": 8}
    assert _limits_of_calls(around, [1])[0]["bytes_per_s"] == 50e9
