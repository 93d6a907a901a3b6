"""int8 figures of `bench generate` and `smallcoder generate --quantize int8`."""

import numpy as np
from click.testing import CliRunner

from smallcoder.bench.generate import (
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
