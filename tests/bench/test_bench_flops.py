"""PaLM model FLOPs of SmallCoder-303M, counted by hand."""

from smallcoder.bench.flops import (
    decode_bytes_per_token,
    flops_per_token,
    matmul_params,
    train_flops_per_step,
)
from smallcoder.models.presets import preset_config


def test_303m_flops_match_a_hand_count():
    config = preset_config("smallcoder_303m")
    d, f, layers, vocab, seq = 768, 3072, 24, 49152, 1024
    # q, k, v, o are D x D each (8 heads x 96 = 768, 8 KV heads); SwiGLU has three D x F kernels.
    per_layer = 4 * d * d + 3 * d * f  # 9,437,184
    n = layers * per_layer + vocab * d  # the output projection counts, the input embedding does not
    assert matmul_params(config) == n == 264_241_152
    # All parameters = N + input embedding + 2 norms per layer + the final norm.
    assert n + vocab * d + (2 * layers + 1) * d == 302_027_520
    assert flops_per_token(config, seq) == 6 * n + 12 * layers * d * seq == 1_811_939_328
    assert train_flops_per_step(config, 4, seq) == 4 * 1024 * 1_811_939_328
    assert decode_bytes_per_token(config, 2.0) == 2 * (n + d)
    # int8 blocks, float32 output projection and embedding row.
    assert decode_bytes_per_token(config, 1.0, 4.0) == (n - vocab * d) + 4 * (vocab * d + d)


def test_device_kinds_map_to_the_table():
    """JAX's `device_kind` strings (as an H200 and an H100 report them here) pick their datasheet peaks."""
    from types import SimpleNamespace

    from smallcoder.training.flops import DEVICES, device_name, peak_flops

    assert device_name(SimpleNamespace(device_kind="NVIDIA H200")) == "h200"
    assert device_name(SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")) == "h100"
    assert device_name(SimpleNamespace(device_kind="TPU v5 lite")) == "tpu-v5e"
    assert device_name(SimpleNamespace(device_kind="cpu")) == "cpu"
    assert peak_flops("h200") == (DEVICES["h200"]["peak_flops"], "h200 table")


def test_parameter_count_is_what_the_built_backbone_counts():
    """One formula (smallcoder.models.sizes) for plan, FLOPs and the model: tied, untied, grouped heads."""
    from smallcoder.models import SmallCoderBackbone
    from smallcoder.models.sizes import parameter_count

    assert parameter_count(preset_config("smallcoder_303m")) == 302_027_520  # the model card's
    test = preset_config("smallcoder_test")
    for config in (test, dict(test, tie_word_embeddings=True)):
        assert parameter_count(config) == SmallCoderBackbone(**config).count_params()


def test_the_measured_peak_of_training_is_the_benchmarks_timer(backend):
    from smallcoder.training.flops import peak_flops

    peak, source = peak_flops("cpu")
    assert source == "measured: float32 matmul on this host" and peak > 1e9


def test_generation_roofline_counts_weights_cache_and_flops_by_hand():
    from smallcoder.bench.flops import generation_roofline

    config = preset_config("smallcoder_303m")
    n, d, vocab, layers = 264_241_152, 768, 49152, 24
    weights = decode_bytes_per_token(config)  # float32: 1.06 GB a step
    assert weights == 4 * (n + d) == 1_056_967_680
    # 16 prompts of 32 tokens (no padding), 2 new tokens: one decoding step after the prefill, at which
    # each row attends to 33 positions of float32 keys and values (8 KV heads x 96 per layer).
    kv_bytes, attention_flops = 2 * layers * 8 * 96 * 4, 4 * layers * 8 * 96
    roof = generation_roofline(config, [32] * 16, 32, 2, weights, bandwidth=20e9, peak=100e9)
    step_bytes = weights + kv_bytes * 16 * 33
    step_flops = 2 * n * 16 + attention_flops * 16 * 33  # 8.46 GFLOP
    assert roof["bytes_per_step"] == step_bytes and roof["flops_per_step"] == step_flops
    assert roof["decode_s"] == max(step_bytes / 20e9, step_flops / 100e9)
    prefill_flops = 16 * (2 * (n - vocab * d) * 32 + 2 * vocab * d + attention_flops * 32 * 33 / 2)
    assert roof["prefill_flops"] == prefill_flops and roof["prefill_s"] == prefill_flops / 100e9
    assert roof["bytes_per_token"] == step_bytes / 16 and roof["generate_s"] == roof["prefill_s"] + roof["decode_s"]
