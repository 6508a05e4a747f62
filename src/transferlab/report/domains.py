"""What another domain changes: the same recipe's gain over scratch on two targets of one source.

Two variants are the same recipe when their params entries are equal but for `target` (the table
says so, never their names). For two targets that start from the same source model — the first
listed the reference, e.g. `mnist` (digits 5–9, like the source's digits 0–4) and `fashion`
(clothes: a dissimilar domain) — each shared recipe's gain over its own target's scratch baseline is
compared across the targets, repetition by repetition: the differences of gains are independent
across repetitions, so the paired test and its Holm family (`inference.judge`) apply as elsewhere.
A positive change means reuse pays more on the second target. One family per test set scored on both.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import pandas as pd

from transferlab.config import Params
from transferlab.report import inference
from transferlab.report.render import difference_cell, pp
from transferlab.report.verdicts import (
    Ranking,
    by_repetition,
    scored,
    verdict_text,
)
from transferlab.training.results import VariantResult


@dataclass(frozen=True)
class Comparison:
    """The shared recipes of two targets of one source, and a family per test set of how their gains moved."""

    reference: str  # the target listed first in params
    other: str
    recipes: dict[str, tuple[VariantResult, VariantResult]]  # "reuse5 → fashion_reuse5": (on reference, on other)
    gains: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]]  # set → recipe → (gain on reference, on other)
    families: dict[str, inference.Family]  # set → the change of gain, Holm over the recipes
    titles: dict[str, str] = field(default_factory=dict)  # set → what the report calls it (the reference's `Ranking.sets`)

    def conclusions(self) -> dict[str, dict[str, str]]:
        return inference.many(list(self.families.values()))


def same_recipe(params: Params, a: str, b: str) -> bool:
    """Equal params entries but for the target: the same way of reusing the same source."""
    return params.variants[a].model_dump(exclude={"target"}) == params.variants[b].model_dump(exclude={"target"})


def _gain(result: VariantResult, scratch: VariantResult, key: str) -> dict[int, float]:
    mine, theirs = by_repetition(result, key), by_repetition(scratch, key)
    return {i: mine[i] - theirs[i] for i in sorted(set(mine) & set(theirs))}


def compare(params: Params, rankings: Mapping[str, Ranking]) -> list[Comparison]:
    """Every pair of ranked targets with a converged scratch baseline, the same source and a shared recipe beyond scratch."""
    found = []
    usable = {t: r for t, r in rankings.items() if r.baseline is not None and r.baseline.converged}
    for near, far in combinations([t for t in params.targets if t in usable], 2):
        first, second = usable[near], usable[far]
        if first.baseline.init_from != second.baseline.init_from:
            continue
        recipes = {f"{a.variant} → {b.variant}": (a, b) for a in first.claimable for b in second.claimable
                   if a is not first.baseline and same_recipe(params, a.variant, b.variant)}
        if not recipes:
            continue
        keys = [k for k in first.sets if k in second.sets and scored(first.baseline, k) and scored(second.baseline, k)]
        gains, families = {}, {}
        for key in keys:
            pairs = {name: (_gain(b, second.baseline, key), _gain(a, first.baseline, key)) for name, (a, b) in recipes.items()
                     if scored(a, key) and scored(b, key)}
            families[key] = inference.judge(f"{near} → {far}: change of the gain over scratch, {first.sets[key].title}", pairs)
            gains[key] = {name: (first.vs_scratch(a, key), second.vs_scratch(b, key)) for name, (a, b) in recipes.items()
                          if name in pairs}
        found.append(Comparison(near, far, recipes, gains, families, {key: first.sets[key].title for key in keys}))
    return found


def table(comparison: Comparison, key: str) -> pd.DataFrame:
    family = comparison.families[key]
    rows = []
    for name, (near, far) in comparison.gains[key].items():
        rows.append({"recipe": name, f"gain on {comparison.reference}": difference_cell(near),
                     f"gain on {comparison.other}": difference_cell(far),
                     "change": difference_cell(family.get(name)),
                     "p (Holm)": inference.p_text(family.get(name)["p_adjusted"]) if family.get(name) else "–",
                     "stability": inference.stability_text(family.get(name))})
    return pd.DataFrame(rows)


def summary(comparison: Comparison) -> str:
    """One sentence per set for the first screen: each recipe whose gain over scratch moved, from what to what."""
    parts = []
    for key, family in comparison.families.items():
        moved = [(name, v) for name, v in family.verdicts.items() if v["significant"]]
        text = "; ".join(
            f"{name}: {pp(comparison.gains[key][name][0]['mean_difference'])} → {pp(comparison.gains[key][name][1]['mean_difference'])}"
            f" points over scratch, a change of {verdict_text(v)}" for name, v in moved)
        parts.append(f"on the {comparison.titles[key]}, " + (text if moved else
                     f"no recipe's gain over scratch changed detectably ({family.describe()})"))
    return (f"**From `{comparison.reference}` to `{comparison.other}`** (the same source and recipes; each gain is over its"
            f" own target's scratch): " + "; ".join(parts) + ".")
