"""Every claim carries its uncertainty: means with 95 % t-intervals, paired differences with p-values.

NumPy and SciPy only (no TensorFlow start-up). Results are plain dicts of Python floats, ints,
bools and `None`, so they go straight into JSON metrics files: a quantity that one observation
cannot estimate (a standard deviation, an interval, a p-value) is `None`, never NaN — NaN is
not valid JSON, and a made-up zero width would overstate what one run shows.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95


def _as_vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _t_critical(n: int) -> float:
    """The two-sided 95 % quantile of Student's t with n - 1 degrees of freedom."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def summarize(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """n, mean, sample std (ddof=1) and the 95 % t confidence interval of the mean.

    With n = 1, `std`, `ci95_low` and `ci95_high` are `None` (undefined, not zero).
    """
    x = _as_vector(values, "values")
    n, mean = int(x.size), float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95_low": None, "ci95_high": None}
    std = float(x.std(ddof=1))
    half = _t_critical(n) * std / np.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def _rounding(x: np.ndarray, y: np.ndarray) -> float:
    """Differences below this are float rounding of the inputs, not a real difference."""
    return 1e-12 * max(float(np.abs(x).max()), float(np.abs(y).max()), 1.0)


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean of a - b over paired runs (same seeds), its 95 % t interval and the paired t-test p-value.

    `significant` is True when the interval excludes 0 (equivalently p < 0.05). If every
    difference is the same: 0 gives p = 1.0 and interval [0, 0]; a non-zero constant gives
    p = 0.0 and the interval collapses to that point. With n = 1 the interval and p are `None`.
    """
    x, y = _as_vector(a, "a"), _as_vector(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: a has {x.size}, b has {y.size}")
    d = x - y
    n, mean = int(d.size), float(d.mean())
    low: float | None
    high: float | None
    p_value: float | None
    if n == 1:
        low = high = p_value = None
    elif float(np.ptp(d)) <= _rounding(x, y):
        # every difference is the same, so t = mean / 0: SciPy would answer NaN with a warning
        if abs(mean) <= _rounding(x, y):
            mean, p_value = 0.0, 1.0
        else:
            p_value = 0.0
        low = high = mean
    else:
        half = _t_critical(n) * float(d.std(ddof=1)) / np.sqrt(n)
        low, high = mean - half, mean + half
        p_value = float(stats.ttest_rel(x, y).pvalue)
    significant = low is not None and high is not None and (low > 0 or high < 0)
    return {
        "n": n,
        "mean_difference": mean,
        "std_difference": None if n == 1 else float(d.std(ddof=1)),
        "ci95_low": low,
        "ci95_high": high,
        "p_value": p_value,
        "significant": bool(significant),
    }


# -- corrections, a non-parametric check, power ------------------------------------------------------

ALPHA = 0.05  # family-wise error rate of every family of comparisons (inference.py)
POWER = 0.8  # the power at which a minimum detectable difference is stated
EXACT_SIGN_FLIPS = 16  # up to this many pairs the permutation test enumerates all 2^n sign assignments


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: family-wise error ≤ α.

    The i-th smallest of m p-values times (m − i + 1), made non-decreasing in that order, capped at 1: the same
    operations, in the same order, as statsmodels' `multipletests(method="holm")` (tests/test_statistics.py checks
    them equal), which also runs a full garbage collection on every call (0.14 s each in the report's process,
    4 s a report).
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)), 1.0)
    return [float(value) for value in adjusted]


def holm_columns(p_values: np.ndarray) -> np.ndarray:
    """`holm` of every column of an (m, B) array at once (bootstrap resamples; tests hold it to statsmodels)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[0]
    order = np.argsort(p, axis=0, kind="stable")
    scaled = np.take_along_axis(p, order, axis=0) * (m - np.arange(m))[:, None]
    stepped = np.minimum(np.maximum.accumulate(scaled, axis=0), 1.0)
    adjusted = np.empty_like(stepped)
    np.put_along_axis(adjusted, order, stepped, axis=0)
    return adjusted


def permutation_p(differences: Sequence[float] | np.ndarray) -> float | None:
    """Two-sided p of the paired permutation test of the mean difference (Fisher's sign flips, SciPy).

    Exact over all 2^n sign assignments for n ≤ 16 (ties and zero differences need no special rule,
    unlike Wilcoxon's ranks); its smallest possible value is 2 / 2^n (0.0625 at n = 5). None for n = 1.
    """
    d = _as_vector(differences, "differences")
    if d.size == 1:
        return None
    if float(np.ptp(d)) <= _rounding(d, d) and abs(float(d.mean())) <= _rounding(d, d):
        return 1.0
    resamples = np.inf if d.size <= EXACT_SIGN_FLIPS else 2 ** EXACT_SIGN_FLIPS
    result = stats.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                    n_resamples=resamples, vectorized=True, rng=np.random.default_rng(0))
    return float(min(result.pvalue, 1.0))


def minimum_detectable_difference(std: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean paired difference a two-sided paired t-test at `alpha` detects with `power`.

    Solved on the noncentral t (what statsmodels' `TTestPower` and G*Power solve; tests compare them),
    in the units of `std` (the standard deviation of the paired differences). None when n < 2 or the
    spread is unknown; 0 when every difference is equal.
    """
    if std is None or n < 2:
        return None
    return 0.0 if std == 0 else _detectable_effect(n, alpha, power) * std


@functools.lru_cache(maxsize=64)
def _detectable_effect(n: int, alpha: float, power: float) -> float:
    """Cohen's d_z at which the two-sided one-sample t-test with n pairs has the given power."""
    df, critical = n - 1, float(stats.t.ppf(1 - alpha / 2, n - 1))

    def shortfall(effect: float) -> float:
        shift = effect * np.sqrt(n)
        # SciPy answers NaN far out in a tail, where the upper tail is 1 and the lower 0
        upper = np.nan_to_num(stats.nct.sf(critical, df, shift), nan=1.0)
        lower = np.nan_to_num(stats.nct.cdf(-critical, df, shift), nan=0.0)
        return float(upper + lower) - power

    high = 1.0
    while shortfall(high) < 0:  # power grows with the effect: bracket the root
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-12))


def t_test_p_values(differences: np.ndarray) -> np.ndarray:
    """Paired t-test p-values along the last axis of an array of differences, with `paired_difference`'s rule
    for equal differences (0 → 1, a non-zero constant → 0). For many resamples at once (stability)."""
    d = np.asarray(differences, dtype=np.float64)
    n = d.shape[-1]
    mean, std = d.mean(axis=-1), d.std(axis=-1, ddof=1)
    rounding = 1e-12 * np.maximum(np.abs(d).max(axis=-1), 1.0)
    constant = std <= rounding
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / (std / np.sqrt(n))
    p = 2 * stats.t.sf(np.where(constant, 0.0, t), n - 1)
    return np.where(constant, np.where(np.abs(mean) <= rounding, 1.0, 0.0), p)
