"""Statistics against values computed by hand (t quantiles from tables, t CDF in closed form)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from transferlab.statistics import paired_difference, summarize

T_975_DF3 = 3.182446305284263  # Student's t, two-sided 95 %, from a table
T_975_DF4 = 2.7764451051977987


def t_cdf_df3(t: float) -> float:
    """Student's t CDF with 3 degrees of freedom, closed form: independent of scipy."""
    theta = math.atan(t / math.sqrt(3))
    return 0.5 + (theta + math.sin(theta) * math.cos(theta)) / math.pi


def test_summarize_hand_computed() -> None:
    result = summarize([1, 2, 3, 4, 5])
    half = T_975_DF4 * math.sqrt(2.5) / math.sqrt(5)
    assert result["n"] == 5
    assert result["mean"] == pytest.approx(3.0)
    assert result["std"] == pytest.approx(math.sqrt(2.5))
    assert result["ci95_low"] == pytest.approx(3 - half, rel=1e-12)
    assert result["ci95_high"] == pytest.approx(3 + half, rel=1e-12)


def test_summarize_single_value_is_json_safe_with_undefined_spread() -> None:
    result = summarize(np.array([0.84]))
    assert result == {"n": 1, "mean": 0.84, "std": None, "ci95_low": None, "ci95_high": None}
    assert json.loads(json.dumps(result, allow_nan=False)) == result


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_summarize_rejects_empty_nan_and_2d(bad: list) -> None:
    with pytest.raises(ValueError, match="values"):
        summarize(bad)


def test_paired_difference_hand_computed() -> None:
    # differences 2, 3, 4, 5: mean 3.5, sample variance 5/3, standard error sqrt(5/3 / 4)
    result = paired_difference([3, 5, 7, 9], [1, 2, 3, 4])
    se = math.sqrt(5 / 3 / 4)
    t_stat = 3.5 / se
    assert result["n"] == 4
    assert result["mean_difference"] == pytest.approx(3.5)
    assert result["ci95_low"] == pytest.approx(3.5 - T_975_DF3 * se, rel=1e-12)
    assert result["ci95_high"] == pytest.approx(3.5 + T_975_DF3 * se, rel=1e-12)
    assert result["p_value"] == pytest.approx(2 * (1 - t_cdf_df3(t_stat)), rel=1e-9)
    assert result["p_value"] == pytest.approx(0.0123075518, rel=1e-8)
    assert result["significant"] is True


def test_paired_difference_not_significant_when_interval_spans_zero() -> None:
    # differences 0.10, -0.02, 0.03, -0.05: mean 0.015
    result = paired_difference([0.90, 0.80, 0.88, 0.80], [0.80, 0.82, 0.85, 0.85])
    assert result["mean_difference"] == pytest.approx(0.015)
    assert result["ci95_low"] < 0 < result["ci95_high"]
    assert result["p_value"] > 0.05
    assert result["significant"] is False


def test_paired_difference_sign_follows_a_minus_b() -> None:
    forward, backward = paired_difference([3, 5, 7, 9], [1, 2, 3, 4]), paired_difference([1, 2, 3, 4], [3, 5, 7, 9])
    assert backward["mean_difference"] == pytest.approx(-forward["mean_difference"])
    assert backward["ci95_high"] == pytest.approx(-forward["ci95_low"])
    assert backward["p_value"] == pytest.approx(forward["p_value"])


def test_paired_difference_identical_runs_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN warning from scipy would fail the test
        result = paired_difference([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert result == {
        "n": 3, "mean_difference": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "p_value": 1.0, "significant": False,
    }


def test_paired_difference_constant_nonzero_shift_collapses_interval() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # 0.9 - 0.8 and 0.8 - 0.7 differ in the last bits: still a constant shift
        result = paired_difference([0.9, 0.8, 0.6], [0.8, 0.7, 0.5])
    assert result["mean_difference"] == pytest.approx(0.1)
    assert result["ci95_low"] == result["ci95_high"] == result["mean_difference"]
    assert result["p_value"] == 0.0
    assert result["significant"] is True


def test_paired_difference_single_pair_and_length_mismatch() -> None:
    single = paired_difference([0.9], [0.8])
    assert single["mean_difference"] == pytest.approx(0.1)
    assert (single["ci95_low"], single["ci95_high"], single["p_value"], single["significant"]) == (None, None, None, False)
    with pytest.raises(ValueError, match="a has 2, b has 3"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
