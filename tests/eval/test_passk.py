from math import comb

import numpy as np
import pytest

from smallcoder.eval.passk import estimate_pass_at_k, pass_at_k, pass_at_ks


def closed_form(n, c, k):
    return 1.0 - comb(n - c, k) / comb(n, k)


@pytest.mark.parametrize(
    "n,c,k",
    [
        (1, 0, 1),
        (1, 1, 1),
        (10, 3, 1),
        (10, 3, 5),
        (10, 8, 3),
        (200, 13, 10),
        (200, 0, 100),
        (5, 5, 5),
    ],
)
def test_matches_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(closed_form(n, c, k), abs=1e-12)


def test_pass_at_1_is_fraction_correct():
    assert pass_at_k(20, 7, 1) == pytest.approx(7 / 20)


def test_vectorised_and_from_results():
    assert np.allclose(estimate_pass_at_k([10, 10], [0, 10], 2), [0.0, 1.0])
    results = [{"task_id": "a", "passed": p} for p in (True, False, False, False)]
    results += [{"task_id": "b", "passed": p} for p in (True, True, False, False)]
    scores = pass_at_ks(results, ks=(1, 2, 10))
    assert set(scores) == {"pass@1", "pass@2"}  # k=10 > 4 samples: skipped
    assert scores["pass@1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert scores["pass@2"] == pytest.approx(
        (closed_form(4, 1, 2) + closed_form(4, 2, 2)) / 2
    )


def test_rejects_impossible_counts():
    with pytest.raises(ValueError, match="k=5"):
        pass_at_k(3, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
