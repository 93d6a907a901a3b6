"""int8 figures of `bench generate` and `smallcoder generate --quantize int8`."""

import numpy as np
from click.testing import CliRunner

from smallcoder.bench.quantization import (
    LOGIT_TOLERANCE_OF_STD,
    format_quantization,
    quantization_figures,
)
from smallcoder.cli import main


def test_quantization_figures_count_logit_error_and_greedy_agreement():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(2, 3, 10)).astype("float32")
    mask = np.array([[True, True, True], [True, True, False]])
    shifted = reference + 0.05 * reference[mask].std()  # std over the real positions, as reported
    q = quantization_figures(reference, shifted, mask, [[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 7, 6]])
    assert q["within_tolerance"] and np.isclose(q["max_diff_of_std"], 0.05, rtol=1e-3)
    assert q["tolerance_of_std"] == LOGIT_TOLERANCE_OF_STD
    assert q["argmax_agreement"] == 1.0
    assert (q["greedy_equal_rows"], q["rows"], q["greedy_equal_prefix_mean"]) == (1, 2, 2.0)
    line = format_quantization({"dtype": "int8", "quantization": {"batch_2": q}})[0]
    assert "int8 vs float32 (batch_2)" in line and "within" in line and "1/2 rows" in line


def test_generate_cli_quantize_int8_runs():
    result = CliRunner().invoke(
        main, ["generate", "--model", "smallcoder_test", "--quantize", "int8", "--max-new-tokens", "4", "def f():"]
    )
    assert result.exit_code == 0, result.output
    assert "def f():" in result.output


def test_bench_quantization_compares_a_saved_model_with_its_int8_self(tmp_path):
    import json

    from smallcoder.eval import demo
    from smallcoder.models import SmallCoderCausalLM

    lm = SmallCoderCausalLM.from_preset("smallcoder_test")
    lm.save_to_preset(str(tmp_path / "model"))
    args = ["bench", "quantization", "--model", str(tmp_path / "model"), "--tasks", "demo", "--limit", "3",
            "--new-tokens", "5", "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout.strip().splitlines()[-1])
    q = r["quantization"]["demo, 3 prompts"]
    # The reference is the saved model's own float32 greedy output on the benchmark's chat prompts.
    lm.compile(sampler="greedy")
    prompts = [demo.build_prompt(task) for task in demo.load_tasks(limit=3)]
    expected = lm.generate(lm.tokenizer.encode_batch(prompts), max_new_tokens=5, strip_prompt=True)
    assert q["float32_tokens"] == expected
    assert q["rows"] == 3 and len(q["quantized_tokens"]) == 3
    assert q["greedy_equal_rows"] == sum(a == b for a, b in zip(q["float32_tokens"], q["quantized_tokens"]))
    assert q["max_abs_logit_diff"] > 0  # int8 weights are not the float32 ones


def test_bench_quantization_names_a_missing_model():
    result = CliRunner().invoke(main, ["bench", "quantization", "--model", "/does/not/exist"])
    assert result.exit_code != 0 and "/does/not/exist" in result.output and "Traceback" not in result.output
