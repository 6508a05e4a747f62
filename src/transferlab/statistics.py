"""Every claim carries its uncertainty: means with 95 % t-intervals, paired differences with p-values.

NumPy and SciPy only (no TensorFlow start-up). Results are plain dicts of Python floats, ints,
bools and `None`, so they go straight into JSON metrics files: a quantity that one observation
cannot estimate (a standard deviation, an interval, a p-value) is `None`, never NaN — NaN is
not valid JSON, and a made-up zero width would overstate what one run shows.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

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
        "ci95_low": low,
        "ci95_high": high,
        "p_value": p_value,
        "significant": bool(significant),
    }
