"""Statistics against values computed by hand (t quantiles from tables, t CDF in closed form)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from transferlab import statistics
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
        "n": 3, "mean_difference": 0.0, "std_difference": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "p_value": 1.0, "significant": False,
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


# -- corrections, the permutation check, power: against the libraries and published values ------------------------

def test_holm_matches_statsmodels_and_a_hand_computed_example() -> None:
    from statsmodels.stats.multitest import multipletests

    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06
    assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    p = list(np.random.default_rng(3).random(15) ** 3)
    assert statistics.holm(p) == list(multipletests(p, method="holm")[1])  # the same operations: equal to the last bit
    tied_and_capped = [0.2, 0.01, 0.2, 0.6, 0.01, 0.9]
    assert statistics.holm(tied_and_capped) == list(multipletests(tied_and_capped, method="holm")[1])
    assert statistics.holm([]) == []
    columns = np.random.default_rng(4).random((15, 8)) ** 4
    expected = np.stack([multipletests(columns[:, j], method="holm")[1] for j in range(8)], axis=1)
    np.testing.assert_allclose(statistics.holm_columns(columns), expected, rtol=0, atol=1e-15)


def test_permutation_check_on_darwins_zea_mays() -> None:
    # Fisher (1935), Darwin's 15 pairs of cross- vs self-fertilised plants (eighths of an inch): the exact
    # randomization test gives two-sided p = 1726 / 32768 = 0.0527 (Manly, Randomization, Bootstrap and Monte Carlo
    # Methods in Biology, ch. 6)
    differences = [49, -67, 8, 16, 6, 23, 28, 41, 14, 29, 56, 24, 75, 60, -48]
    assert statistics.permutation_p(differences) == pytest.approx(1726 / 32768, abs=1e-12)
    # every difference positive: the smallest p an exact sign-flip test can give, 2 / 2^n
    assert statistics.permutation_p([0.01, 0.02, 0.015, 0.03, 0.012]) == pytest.approx(2 / 2**5)
    assert statistics.permutation_p([0.0, 0.0, 0.0]) == 1.0 and statistics.permutation_p([0.3]) is None


def test_minimum_detectable_difference_matches_gpower_statsmodels_and_the_textbook_formula() -> None:
    from scipy import stats
    from statsmodels.stats.power import TTestPower

    effect = statistics.minimum_detectable_difference(1.0, 10, 0.05, 0.8)
    assert effect == pytest.approx(0.9959, abs=5e-4)  # G*Power 3.1, one-sample t, n = 10, two-tailed: d = 0.9959
    assert effect == pytest.approx(TTestPower().solve_power(effect_size=None, nobs=10, alpha=0.05, power=0.8), rel=1e-6)
    # Zar, Biostatistical Analysis (eq. 9.x): delta = s / sqrt(n) * (t_{alpha(2), n-1} + t_{beta(1), n-1}), an approximation
    zar = (stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)) / math.sqrt(10)
    assert effect == pytest.approx(zar, rel=0.01)
    # by its definition: the two-sided test at alpha has power 0.8 at that difference (noncentral t, SciPy)
    strict = statistics.minimum_detectable_difference(0.02, 5, 0.05 / 14)
    critical, shift = stats.t.ppf(1 - 0.05 / 28, 4), strict / 0.02 * math.sqrt(5)
    assert stats.nct.sf(critical, 4, shift) + stats.nct.cdf(-critical, 4, shift) == pytest.approx(0.8, abs=1e-9)
    assert statistics.minimum_detectable_difference(None, 5) is None and statistics.minimum_detectable_difference(0.0, 5) == 0.0
