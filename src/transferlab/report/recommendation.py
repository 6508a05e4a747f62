"""The recommendation: what to use in-distribution, under shift and safely on both, then what the sweeps support.

Every claim rests on a family of comparisons corrected together (`inference`): the target's
variants against scratch on each test set (`Ranking.families`), each sweep's points. A variant is
recommended only on verdicts that are not fragile, and never without a warning when it is
significantly worse than scratch under shift. Sweep points are paired (repetition i of every
point shares its labelled images and seed); points with any unconverged run are left out and named.
`Advice.conclusions` and `sweep_conclusions` are what a rebuild on another machine must reproduce.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transferlab.report import inference
from transferlab.report.families import lp_ft_verdict
from transferlab.report.render import accuracy_short
from transferlab.report.sweep_verdicts import (
    Conclusions,
    Sweep,
    budget_verdict,
    layers_verdict,
)
from transferlab.report.verdicts import (
    TEST,
    Ranking,
    accuracy_verdict,
    by_repetition,
    scored,
    verdict_text,
)
from transferlab.training.results import VariantResult


@dataclass(frozen=True)
class Advice:
    """What to use, from the corrected verdicts against scratch on every set the target was scored on."""

    better: dict[str, list[str]]  # {set: variants significantly above scratch there, verdict not fragile}, by mean
    safe: list[str]  # not significantly below scratch on any set (scratch included)
    use: list[str]  # the recommendation: one variant, or the leaders not distinguishable from each other
    rests_on: list[dict[str, Any]] = field(default_factory=list)  # the verdicts the recommendation rests on
    warnings: list[str] = field(default_factory=list)  # above scratch somewhere, below it under shift, or fragile
    titles: dict[str, str] = field(default_factory=dict)  # {set: what the report calls it} (`Ranking.sets`)

    @property
    def stability(self) -> float | None:
        """The weakest stability among the verdicts the recommendation rests on (None when it rests on none)."""
        values = [v["stability"] for v in self.rests_on if v.get("stability") is not None]
        return min(values) if values else None

    def conclusions(self) -> dict[str, Any]:
        return {"use": sorted(self.use), "safe": sorted(self.safe),
                **{f"better on the {self.titles[key]}": sorted(names) for key, names in self.better.items()}}


def advise(ranking: Ranking) -> Advice | None:
    """Best in-distribution, best under shift, safe on both, and the one to use; None without a converged baseline."""
    scratch, families = ranking.baseline, ranking.families
    if scratch is None or not families:
        return None
    sets = [key for key in ranking.sets if key in families]
    titles = {key: ranking.sets[key].title for key in sets}
    others = [r for r in ranking.claimable if r is not scratch]
    verdict = {(r.variant, key): ranking.vs_scratch(r, key) for r in others for key in sets if scored(r, key)}
    better = {key: [r.variant for r in sorted(others, key=lambda r: -r.mean(key))
                    if inference.robust(verdict.get((r.variant, key)), inference.BETTER)] for key in sets}
    worse_somewhere = {name for (name, _), v in verdict.items() if inference.symbol(v) == inference.WORSE}
    missing = {r.variant for r in others if not all(scored(r, key) for key in sets)}
    safe = [scratch.variant] + [r.variant for r in others if r.variant not in worse_somewhere | missing]
    firm = {r.variant for r in others if not any(v["fragile"] for (name, _), v in verdict.items() if name == r.variant)}
    candidates = [r for r in sorted(others, key=lambda r: -r.mean(TEST))
                  if r.variant in safe and r.variant in firm and any(r.variant in better[key] for key in sets)]
    warnings = [f"{name} is above scratch on the {titles[key]} but significantly below it on the"
                f" {titles[other]}" for key in sets for name in better[key] for other in sets
                if other != key and inference.symbol(verdict.get((name, other))) == inference.WORSE]
    warnings += [f"{name} is above scratch on the {titles[key]} but one of its verdicts is fragile, so it is not"
                 " recommended" for key in sets for name in better[key] if name in safe and name not in firm]
    if not candidates:
        rests = [v for v in verdict.values() if v is not None]
        return Advice(better, safe, [scratch.variant], rests, warnings, titles)
    # the candidates no other candidate beats: significantly above it on some test set and below it on none
    pairwise = inference.judge(f"{ranking.target}: the candidates against each other", {
        f"{a.variant} vs {b.variant}, {titles[key]}": (by_repetition(a, key), by_repetition(b, key))
        for i, a in enumerate(candidates) for b in candidates[i + 1:] for key in sets})

    def beats(a: VariantResult, b: VariantResult) -> list[dict[str, Any]] | None:
        """The verdicts by which a is ahead of b (above on a test set, below on none, none of them fragile), or None."""
        found = []
        for key in sets:
            forward = pairwise.get(f"{a.variant} vs {b.variant}, {titles[key]}")
            between = forward or pairwise.get(f"{b.variant} vs {a.variant}, {titles[key]}")
            if between is None or between["fragile"]:
                return None
            found.append((between, inference.symbol(between) if forward else
                          {inference.BETTER: inference.WORSE, inference.WORSE: inference.BETTER}.get(inference.symbol(between),
                                                                                                 inference.NEITHER)))
        signs = [sign for _, sign in found]
        return [v for v, _ in found] if inference.BETTER in signs and inference.WORSE not in signs else None

    use, rests = [], []
    for c in candidates:
        beaten = [found for other in candidates if other is not c if (found := beats(other, c)) is not None]
        if beaten:
            rests += beaten[0]
        else:
            use.append(c.variant)
    rests += [v for (name, _), v in verdict.items() if name in use and v is not None]
    return Advice(better, safe, use, rests, warnings, titles)


SHOWN = 3  # variants named with their numbers in one "best on" line, highest mean first


def advice_text(ranking: Ranking, advice: Advice) -> list[str]:
    """The three answers and the recommendation, each with its corrected interval and stability."""
    by_name = {r.variant: r for r in ranking.ranked}

    def row(name: str, key: str) -> str:
        return f"{name} {accuracy_short(by_name[name].summary(key))}, {verdict_text(ranking.vs_scratch(by_name[name], key))}"

    lines = []
    for key, names in advice.better.items():
        where = advice.titles[key]
        shown = "; ".join(row(n, key) for n in names[:SHOWN]) + (f"; and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
        lines.append(f"**Best on the {where}:** " + (shown if names else
                                                      f"no variant is robustly more accurate than scratch on the {where}") + ".")
    safe = [n for n in advice.safe if n != (ranking.baseline.variant if ranking.baseline else None)]
    lines.append(f"**Safe on {({1: 'it', 2: 'both'}).get(len(advice.better), 'all')}** (not significantly below scratch on any test"
                 f" set): {', '.join(safe) if safe else 'no variant but scratch'}.")
    stability = f" (stability {100 * advice.stability:.0f} %, the weakest verdict it rests on)" if advice.stability is not None else ""
    scratch = ranking.baseline.variant if ranking.baseline else "scratch"
    if advice.use == [scratch]:
        lines.append(f"**Use:** {scratch} — no reuse strategy is robustly more accurate than training from scratch and"
                     f" safe on every test set{stability}. The safe ones cost no accuracy that this run could detect.")
    else:
        tied = (f" or {', '.join(advice.use[1:])} (no firm verdict puts one of them ahead of another)"
                if len(advice.use) > 1 else "")
        lines.append(f"**Use:** {advice.use[0]}{tied}: robustly more accurate than scratch on"
                     f" {'a test set' if len(advice.better) > 1 else 'the test set'}, not below it on any, and beaten by no"
                     f" other such variant{stability}.")
    if advice.warnings:
        lines.append("**Warnings:** " + "; ".join(advice.warnings) + ".")
    return lines


def recommendation(ranking: Ranking | None, transfer: Sweep | None, budget: Sweep | None) -> tuple[list[str], Conclusions]:
    """Paragraphs (the advice, the verdict against scratch, label budgets, layers) and their conclusions.

    `transfer` and `budget` are each a sweep's (summary, per-run rows), or None when it is switched off.
    """
    parts: list[str] = []
    conclusions: Conclusions = {}
    if ranking is not None and ranking.ranked:
        if (advice := advise(ranking)) is not None:
            parts += advice_text(ranking, advice)
        parts.append(f"Strategy ({ranking.ranked[0].labels_per_class} labels per class): {accuracy_verdict(ranking)}")
        if (claim := lp_ft_verdict(ranking)) is not None:
            parts.append(f"**LP-FT under shift.** {claim}")
    if budget is not None:
        paragraphs, found = budget_verdict(*budget)
        parts += paragraphs
        conclusions |= found
    if transfer is not None:
        text, found = layers_verdict(*transfer)
        parts.append(text)
        conclusions |= found
    return parts or ["No variant or sweep to recommend from."], conclusions
