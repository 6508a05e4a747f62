"""The recommendation: the target's accuracy verdict, then what the two sweeps support, in paragraphs.

Sweep points are paired (repetition i of every point shares its labelled images and seed), so
"more accurate" is a paired interval against the runner-up or against k = 0; points with any
unconverged run are left out and named. Speed is the mean time to 99 % of a run's own best
validation accuracy, from the per-run rows. With a shifted test set: which variant is most accurate
in-distribution and which under shift (each with its interval), and whether LP-FT's claim holds.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transferlab import statistics
from transferlab.reporting import accuracy_short, difference_short, seconds
from transferlab.results import VariantResult
from transferlab.verdicts import (SHIFT, TEST, Ranking, accuracy_verdict, has_shift, lp_ft_verdict, paired_by_repetition,
                                  paired_vs, significantly_better, significantly_worse)

Sweep = tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]  # (summary per point, rows per run)


def _rows_at(rows: Sequence[Mapping[str, Any]], x: int, series: str) -> list[Mapping[str, Any]]:
    return [row for row in rows if row["x"] == x and row["series"] == series]


def _paired_points(rows: Sequence[Mapping[str, Any]], a: tuple[int, str], b: tuple[int, str]) -> dict[str, Any] | None:
    return paired_by_repetition({r["repetition"]: r["target_accuracy"] for r in _rows_at(rows, *a)},
                                {r["repetition"]: r["target_accuracy"] for r in _rows_at(rows, *b)})


def _point_text(point: Mapping[str, Any]) -> str:
    return accuracy_short({"mean": point["target_accuracy"], "ci95_low": point["ci95_low"], "ci95_high": point["ci95_high"]})


def _mean_near_best(rows: Sequence[Mapping[str, Any]]) -> float:
    return sum(row["seconds_to_near_best"] for row in rows) / len(rows) if rows else 0.0


def budget_verdict(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per label budget: which series ends more accurate (paired against the runner-up), and which gets there sooner."""
    accurate, sooner, left_out = [], [], []
    for x in sorted({point["x"] for point in summary}):
        points = [p for p in summary if p["x"] == x]
        left_out += [f"{p['series']} at {x}" for p in points if p["unconverged"]]
        points = sorted((p for p in points if not p["unconverged"]), key=lambda p: -p["target_accuracy"])
        if not points:
            continue
        best = points[0]
        if len(points) == 1:
            accurate.append(f"with {x}, only {best['series']} converged ({_point_text(best)})")
        else:
            runner = points[1]
            diff = _paired_points(rows, (x, best["series"]), (x, runner["series"]))
            if significantly_better(diff):
                accurate.append(f"with {x}, {best['series']} ends most accurate, {_point_text(best)},"
                                f" {difference_short(diff)} over {runner['series']}")
            else:
                gap = difference_short(diff) if diff else "no shared repetitions"
                accurate.append(f"with {x}, {best['series']} {_point_text(best)} and {runner['series']}"
                                f" {_point_text(runner)} are not distinguishable ({gap})")
        near = {p["series"]: _mean_near_best(_rows_at(rows, x, p["series"])) for p in points}
        if len(near) > 1 and all(near.values()):
            fast, slow = min(near, key=near.get), max(near, key=near.get)
            against = "scratch" if "scratch" in near and fast != "scratch" else slow
            sooner.append(f"with {x}, {fast} in {seconds(near[fast])} against {seconds(near[against])} for {against}"
                          f" ({near[against] / near[fast]:.1f}×)")
    if not accurate:
        return [f"**Label budget:** every sweep point has unconverged runs ({', '.join(left_out)}),"
                " so the sweep supports no claim."]
    paragraphs = ["**Label budget, more accurate** (labels per class; test accuracy with 95 % CI; paired difference"
                  f" to the runner-up): {'; '.join(accurate)}."]
    if sooner:
        paragraphs.append(f"**Label budget, sooner** to 99 % of its own best validation accuracy: {'; '.join(sooner)}.")
    if left_out:
        paragraphs[-1] += f" Left out (unconverged runs): {', '.join(left_out)}."
    return paragraphs


def layers_verdict(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """Per mode: the k with the best mean, and whether it beats k = 0 (scratch) on the paired interval."""
    summary = [p for p in summary if not str(p["series"]).startswith("selffer")]  # controls, not a way to reuse a network
    parts, left_out = [], [f"{p['series']} k = {p['x']}" for p in summary if p["unconverged"]]
    for series in dict.fromkeys(p["series"] for p in summary):
        points = [p for p in summary if p["series"] == series and not p["unconverged"]]
        if not points:
            continue
        best = max(points, key=lambda p: p["target_accuracy"])
        if best["x"] == 0:
            parts.append(f"{series}, none: k = 0 (scratch) has the highest mean, {_point_text(best)}")
            continue
        diff = _paired_points(rows, (best["x"], series), (0, series))
        if not any(p["x"] == 0 for p in points):  # k = 0 missing or unconverged: nothing to compare with
            verdict = "with no converged k = 0 (scratch) point to compare it with"
        elif diff is None:
            verdict = "with no k = 0 run to pair it with"
        elif significantly_better(diff):
            verdict = f"{difference_short(diff)} over k = 0 (scratch)"
        else:
            verdict = f"{difference_short(diff)} against k = 0 (scratch), not a significant gain"
        parts.append(f"{series}, k = {best['x']}: {_point_text(best)}, {verdict}")
    if not parts:
        return (f"**Layers to reuse:** every sweep point has unconverged runs ({', '.join(left_out)}),"
                " so the sweep supports no claim.")
    text = f"**Layers to reuse** (transferability sweep, best mean per mode, 95 % CI): {'; '.join(parts)}."
    if left_out:
        text += f" Left out (unconverged runs): {', '.join(left_out)}."
    return text


SELFFER_PAIRS = (("frozen", "selffer-frozen", "AnB", "BnB"), ("fine-tuned", "selffer-fine-tuned", "AnB+", "BnB+"))


def _by_repetition(rows: Sequence[Mapping[str, Any]], x: int, series: str) -> dict[int, float]:
    return {row["repetition"]: row["target_accuracy"] for row in _rows_at(rows, x, series)}


def _loss_verdict(co: dict[str, Any], specific: dict[str, Any], gap: dict[str, Any]) -> str:
    """Which loss is the larger, each judged by its paired interval (a loss is a positive difference)."""
    co_loss, specific_loss = significantly_better(co), significantly_better(specific)
    if co_loss and specific_loss:
        if gap["significant"]:
            return "co-adaptation dominates" if gap["mean_difference"] > 0 else "specificity dominates"
        return "both, not distinguishable from each other"
    if co_loss or specific_loss:
        return "co-adaptation dominates" if co_loss else "specificity dominates"
    if gains := [name for name, diff in (("co-adaptation", co), ("specificity", specific)) if significantly_worse(diff)]:
        return f"no loss ({' and '.join(gains)}: a significant gain)"
    return "neither distinguishable from zero"


def selffer_verdict(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Yosinski et al. 2014's two effects at each k, from the paired per-repetition differences (95 % intervals).

    Co-adaptation loss = k = 0 (scratch) − BnB: reusing a network's own lowest k layers and
    re-learning the rest costs this much. Specificity loss = BnB − AnB: what the source's
    features cost beyond that. One paragraph per pair of modes the grid has (frozen; fine-tuned).
    """
    present = {p["series"] for p in summary}
    unconverged = {(p["x"], p["series"]) for p in summary if p["unconverged"]}
    paragraphs = []
    for source, selffer, anb, bnb in SELFFER_PAIRS:
        if not {source, selffer} <= present:
            continue
        ks = sorted({p["x"] for p in summary if p["series"] == selffer and p["x"] > 0})
        name = (f"**Selffer controls, {source} rows** (Yosinski et al. 2014; {bnb} = {selffer}, {anb} = {source};"
                " each loss is a paired per-repetition difference with its 95 % CI, positive = a loss)")
        base = _by_repetition(rows, 0, source)
        if not base or (0, source) in unconverged:
            why = "no k = 0 (scratch) point" if not base else "the k = 0 (scratch) point has unconverged runs"
            paragraphs.append(f"{name}: {why}, so the loss from broken co-adaptation cannot be measured and no claim is made.")
            continue
        parts, verdicts = [], {}
        for k in ks:
            if {(k, source), (k, selffer)} & unconverged:
                parts.append(f"k = {k}: no claim (unconverged runs)")
                continue
            theirs, mine = _by_repetition(rows, k, source), _by_repetition(rows, k, selffer)
            common = sorted(set(base) & set(theirs) & set(mine))
            if not common:
                parts.append(f"k = {k}: no shared repetitions")
                continue
            co = statistics.paired_difference([base[i] for i in common], [mine[i] for i in common])
            specific = statistics.paired_difference([mine[i] for i in common], [theirs[i] for i in common])
            gap = statistics.paired_difference([base[i] - mine[i] for i in common], [mine[i] - theirs[i] for i in common])
            verdicts[k] = _loss_verdict(co, specific, gap)
            parts.append(f"k = {k}: broken co-adaptation (k = 0 − {bnb}) {difference_short(co)}, specificity"
                         f" ({bnb} − {anb}) {difference_short(specific)}: {verdicts[k]}")
        if not parts:
            continue
        text = f"{name}: {'; '.join(parts)}."
        if verdicts:
            groups: dict[str, list[int]] = {}
            for k, verdict in verdicts.items():
                groups.setdefault(verdict, []).append(k)
            everywhere = len(groups) == 1 and len(verdicts) == len(ks)
            where = [f"{verdict} at {'every k' if everywhere else 'k = ' + ', '.join(map(str, found))}"
                     for verdict, found in groups.items()]
            text += f" **Conclusion ({source} rows):** {'; '.join(where)}."
        paragraphs.append(text)
    return paragraphs


def _by_mean(ranking: Ranking, key: str) -> list[VariantResult]:
    """The converged ranked variants scored on that set, highest mean first."""
    return sorted((r for r in ranking.claimable if key == TEST or r.has_shift), key=lambda r: -r.mean(key))


def _most_accurate(ordered: Sequence[VariantResult], key: str) -> str:
    """`reuse5 (reuse) 91.2 % [90.1, 92.3], +0.4 [-0.3, +1.1] points over the runner-up lp_ft5 (not significant)`."""
    best = ordered[0]
    text = f"{best.variant} ({best.strategy}) {accuracy_short(best.summary(key))}"
    if len(ordered) > 1:
        runner = ordered[1]
        diff = paired_vs(best, runner, key)
        gap = difference_short(diff) if diff else "no shared repetitions"
        text += f", {gap} over the runner-up {runner.variant}" + ("" if significantly_better(diff) else " (not significant)")
    return text


def shift_recommendation(ranking: Ranking) -> list[str]:
    """Most accurate on the test set and on the shifted test set, apart; then LP-FT's claim. Empty without a shifted set."""
    inside, shifted = _by_mean(ranking, TEST), _by_mean(ranking, SHIFT)
    if not has_shift(ranking) or not shifted:
        return []
    same = " The same variant leads on both." if inside[0] is shifted[0] else " A different variant leads under shift."
    parts = [f"**More accurate, in-distribution and under shift** (highest mean accuracy among the converged ranked"
             f" variants, 95 % CI; paired difference to the runner-up): on the test set {_most_accurate(inside, TEST)};"
             f" on the shifted test set {_most_accurate(shifted, SHIFT)}.{same}"]
    if (claim := lp_ft_verdict(ranking)) is not None:
        parts.append(f"**LP-FT under shift.** {claim}")
    return parts


def recommendation(ranking: Ranking | None, transfer: Sweep | None, budget: Sweep | None) -> list[str]:
    """Paragraphs: best strategy vs scratch (the same verdict as the target's summary), label budgets, layers.

    `transfer` and `budget` are each a sweep's (summary, per-run rows), or None when it is switched off.
    """
    parts = []
    if ranking is not None and ranking.ranked:
        parts.append(f"Strategy ({ranking.ranked[0].labels_per_class} labels per class): {accuracy_verdict(ranking)}")
        parts += shift_recommendation(ranking)
    if budget is not None:
        parts += budget_verdict(*budget)
    if transfer is not None:
        parts.append(layers_verdict(*transfer))
    return parts or ["No variant or sweep to recommend from."]
