"""What the two sweeps support: label budgets, layers to reuse, and the selffer controls.

Each sweep's comparisons form one family, corrected together (`inference.judge`): at each label
budget the best series against the runner-up; every (mode, k > 0) point of the transferability
sweep against its k = 0 (scratch) point; every loss of the selffer controls. Sweep points are paired
(repetition i of every point shares its labelled images and seed); points with any unconverged run
are left out and named. Each verdict function returns its paragraphs and the family's conclusions
({comparison: ✔ / ✘ / –}) that a rebuild on another machine must reproduce.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transferlab.report import inference
from transferlab.report.render import accuracy_short, difference_short, seconds
from transferlab.report.verdicts import (
    significantly_better,
    significantly_worse,
    verdict_text,
)

Sweep = tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]  # (summary per point, rows per run)
Conclusions = dict[str, dict[str, str]]  # {family: {comparison: symbol}}


def _rows_at(rows: Sequence[Mapping[str, Any]], x: int, series: str) -> list[Mapping[str, Any]]:
    return [row for row in rows if row["x"] == x and row["series"] == series]


def _by_repetition(rows: Sequence[Mapping[str, Any]], x: int, series: str) -> dict[int, float]:
    return {row["repetition"]: row["target_accuracy"] for row in _rows_at(rows, x, series)}


def _sweep(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sweep's entry name, as its stage wrote it in every row: the family's name starts with it."""
    return str(rows[0].get("sweep") or "sweep") if rows else "sweep"


def _point_text(point: Mapping[str, Any]) -> str:
    return accuracy_short({"mean": point["target_accuracy"], "ci95_low": point["ci95_low"], "ci95_high": point["ci95_high"]})


def _mean_near_best(rows: Sequence[Mapping[str, Any]]) -> float:
    return sum(row["seconds_to_near_best"] for row in rows) / len(rows) if rows else 0.0


def budget_verdict(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], Conclusions]:
    """Per label budget: which series ends more accurate (paired against the runner-up), and which gets there sooner."""
    left_out = [f"{p['series']} at {p['x']}" for p in summary if p["unconverged"]]
    leaders: dict[int, tuple[Mapping[str, Any], Mapping[str, Any] | None]] = {}
    for x in sorted({point["x"] for point in summary}):
        points = sorted((p for p in summary if p["x"] == x and not p["unconverged"]), key=lambda p: -p["target_accuracy"])
        if points:
            leaders[x] = (points[0], points[1] if len(points) > 1 else None)
    family = inference.judge(f"{_sweep(rows)}: best series against the runner-up", {
        str(x): (_by_repetition(rows, x, best["series"]), _by_repetition(rows, x, runner["series"]))
        for x, (best, runner) in leaders.items() if runner is not None})
    accurate, sooner = [], []
    for x, (best, runner) in leaders.items():
        if runner is None:
            accurate.append(f"with {x}, only {best['series']} converged ({_point_text(best)})")
            continue
        diff = family.get(str(x))
        if significantly_better(diff):
            accurate.append(f"with {x}, {best['series']} ends most accurate, {_point_text(best)},"
                            f" {verdict_text(diff)} over {runner['series']}")
        else:
            gap = verdict_text(diff) if diff else "no shared repetitions"
            accurate.append(f"with {x}, {best['series']} {_point_text(best)} and {runner['series']}"
                            f" {_point_text(runner)} are not distinguishable ({gap})")
        converged = [p["series"] for p in summary if p["x"] == x and not p["unconverged"]]
        near = {series: _mean_near_best(_rows_at(rows, x, series)) for series in converged}
        if len(near) > 1 and all(near.values()):
            fast, slow = min(near, key=near.get), max(near, key=near.get)
            against = "scratch" if "scratch" in near and fast != "scratch" else slow
            sooner.append(f"with {x}, {fast} in {seconds(near[fast])} against {seconds(near[against])} for {against}"
                          f" ({near[against] / near[fast]:.1f}×, mean wall time, not a tested claim)")
    conclusions = {family.name: {x: (f"{leaders[int(x)][0]['series']} {symbol}" if symbol != inference.NEITHER else symbol)
                                 for x, symbol in family.conclusions().items()}}
    if not accurate:
        return [f"**Label budget:** every sweep point has unconverged runs ({', '.join(left_out)}),"
                " so the sweep supports no claim."], conclusions
    paragraphs = [f"**Label budget, more accurate** (labels per class; test accuracy with 95 % CI; paired difference"
                  f" to the runner-up; {family.describe()}): {'; '.join(accurate)}."]
    if sooner:
        paragraphs.append(f"**Label budget, sooner** to 99 % of its own best validation accuracy: {'; '.join(sooner)}.")
    if left_out:
        paragraphs[-1] += f" Left out (unconverged runs): {', '.join(left_out)}."
    return paragraphs, conclusions


def layers_verdict(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> tuple[str, Conclusions]:
    """Every (mode, k > 0) point against k = 0 (scratch) of its mode, judged together; per mode the best mean."""
    summary = [p for p in summary if not str(p["series"]).startswith("selffer")]  # controls, not a way to reuse a network
    left_out = [f"{p['series']} k = {p['x']}" for p in summary if p["unconverged"]]
    converged = [p for p in summary if not p["unconverged"]]
    has_zero = {p["series"] for p in converged if p["x"] == 0}
    family = inference.judge(f"{_sweep(rows)}: every k against k = 0 (scratch)", {
        f"{p['series']}, k = {p['x']}": (_by_repetition(rows, p["x"], p["series"]), _by_repetition(rows, 0, p["series"]))
        for p in converged if p["x"] > 0 and p["series"] in has_zero})
    parts = []
    for series in dict.fromkeys(p["series"] for p in summary):
        points = [p for p in converged if p["series"] == series]
        if not points:
            continue
        best = max(points, key=lambda p: p["target_accuracy"])
        if best["x"] == 0:
            parts.append(f"{series}, none: k = 0 (scratch) has the highest mean, {_point_text(best)}")
            continue
        diff = family.get(f"{series}, k = {best['x']}")
        if series not in has_zero:
            verdict = "with no converged k = 0 (scratch) point to compare it with"
        elif diff is None:
            verdict = "with no k = 0 run to pair it with"
        elif significantly_better(diff):
            verdict = f"{verdict_text(diff)} over k = 0 (scratch)"
        else:
            verdict = f"{verdict_text(diff)} against k = 0 (scratch), not a significant gain"
        parts.append(f"{series}, k = {best['x']}: {_point_text(best)}, {verdict}")
    conclusions = {family.name: family.conclusions()}
    if not parts:
        return (f"**Layers to reuse:** every sweep point has unconverged runs ({', '.join(left_out)}),"
                " so the sweep supports no claim."), conclusions
    text = (f"**Layers to reuse** (transferability sweep, best mean per mode, 95 % CI; every k tested against k = 0,"
            f" {family.describe()}): {'; '.join(parts)}.")
    if worse := [key for key, verdict in family.verdicts.items() if significantly_worse(verdict)]:
        text += f" Significantly below k = 0: {', '.join(worse)}."
    if left_out:
        text += f" Left out (unconverged runs): {', '.join(left_out)}."
    return text, conclusions


SELFFER_PAIRS = (("frozen", "selffer-frozen", "AnB", "BnB"), ("fine-tuned", "selffer-fine-tuned", "AnB+", "BnB+"))
LOSSES = ("broken co-adaptation", "specificity", "co-adaptation minus specificity")


def _loss_verdict(co: Mapping[str, Any], specific: Mapping[str, Any], gap: Mapping[str, Any]) -> str:
    """Which loss is the larger, each judged by its corrected verdict (a loss is a positive difference)."""
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


def selffer_verdict(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], Conclusions]:
    """Yosinski et al. 2014's two effects at each k, from the paired per-repetition differences, judged together.

    Co-adaptation loss = k = 0 (scratch) − BnB: reusing a network's own lowest k layers and
    re-learning the rest costs this much. Specificity loss = BnB − AnB: what the source's
    features cost beyond that. One paragraph per pair of modes the grid has (frozen; fine-tuned).
    """
    present = {p["series"] for p in summary}
    unconverged = {(p["x"], p["series"]) for p in summary if p["unconverged"]}
    pairs, plans = {}, []
    for source, selffer, anb, bnb in SELFFER_PAIRS:
        if not {source, selffer} <= present:
            continue
        base = _by_repetition(rows, 0, source)
        ks = sorted({p["x"] for p in summary if p["series"] == selffer and p["x"] > 0})
        plans.append((source, selffer, anb, bnb, base, ks))
        if not base or (0, source) in unconverged:
            continue
        for k in ks:
            if {(k, source), (k, selffer)} & unconverged:
                continue
            theirs, mine = _by_repetition(rows, k, source), _by_repetition(rows, k, selffer)
            common = sorted(set(base) & set(theirs) & set(mine))
            co = ({i: base[i] for i in common}, {i: mine[i] for i in common})
            specific = ({i: mine[i] for i in common}, {i: theirs[i] for i in common})
            gap = ({i: base[i] - mine[i] for i in common}, {i: mine[i] - theirs[i] for i in common})
            for loss, pair in zip(LOSSES, (co, specific, gap)):
                pairs[f"{source} k = {k}: {loss}"] = pair
    family = inference.judge(f"{_sweep(rows)}: selffer controls, the two losses", pairs)
    paragraphs = []
    for source, selffer, anb, bnb, base, ks in plans:
        name = (f"**Selffer controls, {source} rows** (Yosinski et al. 2014; {bnb} = {selffer}, {anb} = {source};"
                f" each loss is a paired per-repetition difference with its 95 % CI, positive = a loss; {family.describe()})")
        if not base or (0, source) in unconverged:
            why = "no k = 0 (scratch) point" if not base else "the k = 0 (scratch) point has unconverged runs"
            paragraphs.append(f"{name}: {why}, so the loss from broken co-adaptation cannot be measured and no claim is made.")
            continue
        parts, verdicts = [], {}
        for k in ks:
            co, specific, gap = (family.get(f"{source} k = {k}: {loss}") for loss in LOSSES)
            if co is None or specific is None or gap is None:
                parts.append(f"k = {k}: no claim (unconverged runs or no shared repetitions)")
                continue
            verdicts[k] = _loss_verdict(co, specific, gap)
            parts.append(f"k = {k}: broken co-adaptation (k = 0 − {bnb}) {difference_short(co)}, Holm p"
                         f" {inference.p_text(co['p_adjusted'])}; specificity ({bnb} − {anb}) {difference_short(specific)},"
                         f" Holm p {inference.p_text(specific['p_adjusted'])}: {verdicts[k]}")
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
    return paragraphs, {family.name: family.conclusions()} if family.size else {}
