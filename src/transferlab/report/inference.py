"""Families of paired comparisons, judged together: the only source of a ✔ / ✘ in the report.

A claim such as "freeze2 is less accurate than scratch" is one of the comparisons a report makes
about a target; making fifteen at α = 0.05 expects 0.75 false discoveries from chance alone. So
every comparison belongs to a named family (the variants against scratch on the test set; the
same under shift; the family checks; each sweep), and within it:

- the paired t-test's p-values are Holm-adjusted (`statistics.holm`); a comparison is significant
  when its adjusted p < α (0.05), whatever its unadjusted interval says;
- a non-parametric check, the exact paired permutation test, is Holm-adjusted over the same family
  and recorded beside it (`check_p_adjusted`) — it cannot reach significance below 2 / 2^n;
- the minimum detectable difference is stated at the family's strictest threshold (α / m, Holm's
  first step) and power 0.8, from each comparison's own spread of differences;
- stability is the share of bootstrap resamples of the repetitions (the same resampled repetitions
  for every comparison of the family: they are paired across variants) in which the whole family,
  re-tested and re-corrected, gives the comparison the same verdict. Below `STABLE` it is *fragile*.

A verdict is the `statistics.paired_difference` dict with these fields added, so every wording
function reads one shape. NumPy, SciPy and statsmodels only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferlab import statistics
from transferlab.report.render import difference_cell

STABLE = 0.8  # a verdict that holds in fewer bootstrap resamples than this is fragile; none is recommended on
RESAMPLES = 2000  # bootstrap resamples of the repetitions (seeded: the same draws on every machine)
BETTER, WORSE, NEITHER = "✔", "✘", "–"

Pair = tuple[Mapping[int, float], Mapping[int, float]]  # (mine, theirs), each {repetition: value}


def symbol(verdict: Mapping[str, Any] | None) -> str:
    """✔ significantly above, ✘ significantly below, – neither (or no comparison)."""
    if verdict is None or not verdict["significant"]:
        return NEITHER
    return BETTER if verdict["mean_difference"] > 0 else WORSE


def _symbols(means: np.ndarray, adjusted: np.ndarray) -> np.ndarray:
    return np.where(adjusted < statistics.ALPHA, np.where(means > 0, BETTER, np.where(means < 0, WORSE, NEITHER)), NEITHER)


@dataclass(frozen=True)
class Family:
    """The corrected verdicts of one family of comparisons, by key (a variant name, a sweep point)."""

    name: str  # what the family compares, e.g. "mnist: every variant against scratch, test set"
    verdicts: dict[str, dict[str, Any]]

    @property
    def size(self) -> int:
        return len(self.verdicts)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.verdicts.get(key)

    def mde(self) -> float | None:
        """The median minimum detectable difference over the family's comparisons (None when none has one)."""
        values = [v["mde"] for v in self.verdicts.values() if v.get("mde") is not None]
        return float(np.median(values)) if values else None

    def describe(self) -> str:
        """`15 comparisons, Holm-adjusted; could detect ±2.1 points (median)`: how sure the family can be."""
        text = f"{self.size} comparison{'s' if self.size != 1 else ''}, Holm-adjusted"
        if (mde := self.mde()) is not None:
            text += (f"; the smallest difference detectable with power {statistics.POWER:g} at α = {statistics.ALPHA:g}/{self.size}"
                     f" is ±{100 * mde:.1f} points (median over comparisons)")
        return text

    def conclusions(self) -> dict[str, str]:
        """{key: ✔ / ✘ / –}: what a rebuild on another machine must reproduce."""
        return {key: symbol(verdict) for key, verdict in self.verdicts.items()}


def _aligned(pair: Pair) -> tuple[list[int], np.ndarray, np.ndarray]:
    mine, theirs = pair
    common = sorted(set(mine) & set(theirs))
    return common, np.array([mine[i] for i in common], dtype=np.float64), np.array([theirs[i] for i in common], dtype=np.float64)


def judge(name: str, pairs: Mapping[str, Pair], resamples: int = RESAMPLES) -> Family:
    """Test every pair, Holm-correct over the family, add the check, the MDE and the stability."""
    aligned = {key: _aligned(pair) for key, pair in pairs.items()}
    aligned = {key: value for key, value in aligned.items() if value[0]}  # no shared repetition: no comparison
    raw = {key: statistics.paired_difference(x, y) for key, (_, x, y) in aligned.items()}
    testable = [key for key, diff in raw.items() if diff["p_value"] is not None]
    differences = {key: aligned[key][1] - aligned[key][2] for key in testable}
    adjusted = dict(zip(testable, statistics.holm([raw[key]["p_value"] for key in testable])))
    checks = {key: statistics.permutation_p(differences[key]) for key in testable}
    checked = dict(zip(testable, statistics.holm([checks[key] for key in testable])))
    strictest = statistics.ALPHA / max(len(testable), 1)
    stability = _stability(differences, adjusted, resamples)
    verdicts = {}
    for key, diff in raw.items():
        p = adjusted.get(key)
        verdict = {**diff, "p_adjusted": p, "significant": p is not None and p < statistics.ALPHA,
                   "check_p": checks.get(key), "check_p_adjusted": checked.get(key),
                   "mde": statistics.minimum_detectable_difference(diff["std_difference"], diff["n"], strictest),
                   "family": name, "family_size": len(testable)}
        verdict["stability"] = stability.get(key)
        verdict["fragile"] = verdict["stability"] is not None and verdict["stability"] < STABLE
        verdicts[key] = verdict
    return Family(name, verdicts)


def _stability(differences: Mapping[str, np.ndarray], adjusted: Mapping[str, float], resamples: int) -> dict[str, float]:
    """Share of bootstrap resamples of the repetitions in which each comparison keeps its verdict."""
    if not differences:
        return {}
    keys = list(differences)
    observed = _symbols(np.array([differences[k].mean() for k in keys]), np.array([adjusted[k] for k in keys]))
    rng = np.random.default_rng(0)
    draws: dict[int, np.ndarray] = {}  # one draw per number of repetitions: paired comparisons resample together
    for n in sorted({differences[k].size for k in keys}):
        draws[n] = rng.integers(0, n, size=(resamples, n))
    p = np.stack([statistics.t_test_p_values(differences[k][draws[differences[k].size]]) for k in keys])  # (m, B)
    means = np.stack([differences[k][draws[differences[k].size]].mean(axis=-1) for k in keys])
    kept = _symbols(means, statistics.holm_columns(p)) == observed[:, None]
    return {key: float(kept[i].mean()) for i, key in enumerate(keys)}


def stability_text(verdict: Mapping[str, Any] | None) -> str:
    """`stable 97 %` / `fragile 62 %`: how often the verdict held over resamples of the repetitions."""
    if verdict is None or verdict.get("stability") is None:
        return "–"
    return f"{'fragile' if verdict['fragile'] else 'stable'} {100 * verdict['stability']:.0f} %"


def p_text(p: float | None) -> str:
    """`0.012`, `<0.001`, or `–`."""
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def robust(verdict: Mapping[str, Any] | None, wanted: str) -> bool:
    """Is this the wanted verdict (✔ or ✘), and not fragile? What a recommendation may rest on."""
    return verdict is not None and symbol(verdict) == wanted and not verdict["fragile"]


def many(families: Sequence[Family]) -> dict[str, dict[str, str]]:
    """{family name: {key: symbol}} for the conclusions file."""
    return {family.name: family.conclusions() for family in families}


def verdict_text(diff: Mapping[str, Any]) -> str:
    """`+1.7 [+0.1, +3.3] points, Holm p 0.021 (permutation 0.25), stable 97 %`: a corrected verdict's numbers; one
    that is not significant also says what it could have detected (`±2.1 detectable`)."""
    text = f"{difference_cell({**diff, 'significant': False})} points"
    if diff.get("p_adjusted") is not None:
        text += f", Holm p {p_text(diff['p_adjusted'])}"
        if diff.get("check_p_adjusted") is not None:
            text += f" (permutation {p_text(diff['check_p_adjusted'])})"
        if not diff["significant"] and diff.get("mde") is not None:
            text += f", ±{100 * diff['mde']:.1f} detectable"
        text += f", {stability_text(diff)}"
    return text


def undetected_text(diffs: Sequence[Mapping[str, Any]]) -> str:
    """`a difference of ±2.1 points (median; 1.4–3.9) would have been detected with power 0.8`."""
    mdes = sorted(d["mde"] for d in diffs if d.get("mde") is not None)
    if not mdes:
        return "one repetition: no power to detect any difference"
    median = mdes[len(mdes) // 2]
    spread = f"; {100 * mdes[0]:.1f}–{100 * mdes[-1]:.1f} over comparisons" if len(mdes) > 1 else ""
    return (f"a true difference of ±{100 * median:.1f} points (median{spread}) would have been detected with power"
            f" {statistics.POWER:g}")
