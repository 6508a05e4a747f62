"""Every generated claim of the report, in one place: who may be ranked, who is more accurate, who is faster.

The rules of the fair race (DESIGN.md): only variants tuned under the same budget are ranked;
no claim rests on an unconverged variant or sweep point; "more accurate" (final test accuracy,
with its paired interval against scratch) and "faster" (epochs to 99 % of a variant's own best
validation accuracy) are separate sentences. Every ✔ / ✘ comes from a family of comparisons judged
together (`inference`): a target's variants against scratch on each test set it was scored on
(`Ranking.sets`: the test set, then each of the target's `evaluations`, worded by its params entry), and the
family checks against full fine-tuning (`Ranking.families`).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from transferlab import statistics
from transferlab.config import EvaluationSpec, strategies
from transferlab.report import inference
from transferlab.report.inference import undetected_text, verdict_text  # (others import them from here too)
from transferlab.report.render import accuracy_text, difference_cell, percent
from transferlab.training.results import VariantResult

# What a variant's race depends on besides its recipe: two results rank together only if all of these agree.
SPLIT_KEYS = ("labels_per_class", "train_per_class", "validation_per_class")
MAX_NAMED = 5  # variants named in one sentence before "and N more"
# What a variant and its twin (`strategies.StrategyRule.twin`) must share: the same network trained from the same init.
TWIN_KEYS = ("init_from", "target", "reuse_layers", "frozen_layers", "new_layers", "trainable_params", "frozen_params")
SAME_NETWORK = ("init_from", "target", "reuse_layers", "new_layers")  # a full fine-tuning twin: what is fixed may differ
TEST = "target_accuracy"  # the test set, by its result field; a further test set `<set>` is `<set>_accuracy`


class Wording(NamedTuple):  # how the report names a test set: a table column's word, its name, "on it" in a sentence
    label: str
    title: str
    phrase: str


MAIN = Wording("test", "test set", "in-distribution")  # the test set's, always there; the others' come from params
CHECKS = "checks"  # the family of comparisons with full fine-tuning (LP-FT, surgical, discriminative)


def budget_of(result: VariantResult) -> dict[str, Any]:
    return {**result.budget, **{key: getattr(result, key) for key in SPLIT_KEYS}}


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def budget_differences(mine: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """`max_epochs 30 (reference 300)` for every key whose value differs (a missing key counts)."""
    return [f"{key} {_shown(mine.get(key, '–'))} (reference {_shown(reference.get(key, '–'))})"
            for key in dict.fromkeys([*reference, *mine]) if mine.get(key) != reference.get(key)]


def paired_vs(result: VariantResult, baseline: VariantResult | None, key: str = TEST) -> dict[str, Any] | None:
    """Paired difference of test accuracy (`key`: on that test set), repetition by repetition, against the
    baseline (None for itself, or when either was not scored on that set)."""
    if baseline is None or result.variant == baseline.variant or not (scored(result, key) and scored(baseline, key)):
        return None
    return paired_by_repetition(by_repetition(result, key), by_repetition(baseline, key))


def paired_by_repetition(mine: Mapping[int, float], theirs: Mapping[int, float]) -> dict[str, Any] | None:
    common = sorted(set(mine) & set(theirs))
    if not common:
        return None
    return statistics.paired_difference([mine[i] for i in common], [theirs[i] for i in common])


def significantly_better(diff: Mapping[str, Any] | None) -> bool:
    return diff is not None and diff["significant"] and diff["mean_difference"] > 0


def significantly_worse(diff: Mapping[str, Any] | None) -> bool:
    return diff is not None and diff["significant"] and diff["mean_difference"] < 0


def scored(result: VariantResult, key: str) -> bool:
    return result.scored(key)  # every repetition scored on that set


def by_repetition(result: VariantResult, key: str) -> dict[int, float]:
    return {r.repetition: r.metric(key) for r in result.repetitions}


def wording(name: str, spec: EvaluationSpec | None = None) -> Wording:
    """A further test set's words: its params entry's (`targets.<name>.evaluations.<set>`), else made from its name."""
    label = (spec and spec.label) or name
    title = (spec and spec.title) or f"{label} test set"
    return Wording(label, title, (spec and spec.phrase) or f"on the {title}")


def wordings(results: Sequence[VariantResult], evaluations: Mapping[str, EvaluationSpec]) -> dict[str, Wording]:
    """{result field: wording} of every set any of these results was scored on: the test set first, then the
    target's `evaluations` in their order (one missing from them, e.g. an older run's, named by its own name)."""
    names = dict.fromkeys([*evaluations, *(name for r in results for name in r.evaluations)])
    return {TEST: MAIN} | {f"{name}_accuracy": wording(name, evaluations.get(name)) for name in names
                           if any(name in r.evaluations for r in results)}


def twin_of(result: VariantResult, results: Sequence[VariantResult]) -> VariantResult | None:
    """The variant of the same network that the strategy table pairs this one with, under the same budget (first in order)."""
    rule = strategies.STRATEGIES.get(result.strategy)
    if rule is None or rule.twin is None:
        return None
    shared = TWIN_KEYS if rule.same_as_twin else SAME_NETWORK
    return next((r for r in results if r.strategy == rule.twin and budget_of(r) == budget_of(result)
                 and all(getattr(r, key) == getattr(result, key) for key in shared)), None)


@dataclass(frozen=True)
class Ranking:
    """One target's variants, split by whether they may be ranked against each other, and the verdicts on them."""

    baseline: VariantResult | None  # the scratch variant every row is compared with
    reference: dict[str, Any]  # the tuning budget (and label split) ranked variants share
    ranked: list[VariantResult]  # that budget; converged first, each group by mean test accuracy
    not_ranked: list[tuple[VariantResult, str]]  # another budget, with the keys that differ
    sets: dict[str, Wording]  # every test set a variant of the target was scored on, by result field (`wordings`)

    @property
    def claimable(self) -> list[VariantResult]:
        """The variants a generated statement may rest on: ranked and converged."""
        return [r for r in self.ranked if r.converged]

    @property
    def left_out(self) -> list[str]:
        return ([f"{r.variant} (unconverged {unconverged(r)}/{r.seeds})" for r in self.ranked if not r.converged]
                + [f"{r.variant} (other tuning budget)" for r, _ in self.not_ranked])

    @property
    def target(self) -> str:
        return (self.baseline or self.ranked[0]).target if self.ranked else "?"

    @cached_property
    def aliases(self) -> dict[str, str]:
        """{variant: its twin}: variants whose results equal their twin's by construction (cache ≡ freeze), and do."""
        same = {}
        for result in self.claimable:
            twin = twin_of(result, self.claimable)
            if (twin is not None and strategies.STRATEGIES[result.strategy].same_as_twin
                    and all(by_repetition(result, key) == by_repetition(twin, key) for key in self.sets if scored(result, key))):
                same[result.variant] = twin.variant
        return same

    @cached_property
    def families(self) -> dict[str, inference.Family]:
        """Every family of comparisons this target's statements rest on, judged once: against scratch on each set
        the baseline was scored on, and the family checks (`CHECKS`). Empty without a converged scratch baseline."""
        scratch = self.baseline
        if scratch is None or not scratch.converged:
            return {}
        compared = [r for r in self.claimable if r is not scratch and r.variant not in self.aliases]
        families = {key: inference.judge(f"{self.target}: against scratch, {wording.title}",
                                         {r.variant: (by_repetition(r, key), by_repetition(scratch, key))
                                          for r in compared if scored(r, key)})
                    for key, wording in self.sets.items() if scored(scratch, key)}
        families[CHECKS] = inference.judge(f"{self.target}: against full fine-tuning", check_pairs(self.claimable, self.sets))
        return families

    def vs_scratch(self, result: VariantResult, key: str = TEST) -> dict[str, Any] | None:
        """The corrected verdict of a variant against scratch on that set; for one outside the family (unconverged,
        or scratch itself unconverged) the paired difference with no verdict (`significant` False)."""
        family = self.families.get(key)
        verdict = family.get(self.aliases.get(result.variant, result.variant)) if family else None
        if verdict is not None:
            return verdict
        diff = paired_vs(result, self.baseline, key)
        return None if diff is None else {**diff, "significant": False, "p_adjusted": None, "stability": None, "fragile": False}

    def conclusions(self) -> dict[str, dict[str, str]]:
        """{family: {comparison: ✔ / ✘ / –}} (a variant counted as its twin is listed under both names)."""
        out = inference.many(list(self.families.values()))
        for family in (self.families.get(key) for key in self.sets):
            if family is not None:
                out[family.name] |= {alias: out[family.name][twin] for alias, twin in self.aliases.items()
                                     if twin in out[family.name]}
        return out


def check_pairs(results: Sequence[VariantResult], sets: Mapping[str, Wording]) -> dict[str, inference.Pair]:
    """The family checks: each variant with a full fine-tuning twin against it, on every set both were scored on,
    and for LP-FT (Kumar et al. 2022) whether its gain on each further (shifted) set exceeds its gain in-distribution."""
    pairs: dict[str, inference.Pair] = {}
    for result in results:
        twin = twin_of(result, results)
        if twin is None or strategies.STRATEGIES[result.strategy].same_as_twin:
            continue
        for key, wording in sets.items():
            if scored(result, key) and scored(twin, key):
                pairs[check_key(result, twin, wording)] = (by_repetition(result, key), by_repetition(twin, key))
        for key, wording in sets.items():
            if key != TEST and result.strategy == "lp_ft" and scored(result, key) and scored(twin, key):
                pairs[widening_key(result, twin, wording)] = (_gain(result, twin, key), _gain(result, twin, TEST))
    return pairs


def check_key(result: VariantResult, twin: VariantResult, wording: Wording) -> str:
    return f"{result.variant} vs {twin.variant}, {wording.title}"


def widening_key(result: VariantResult, twin: VariantResult, wording: Wording) -> str:
    return f"{result.variant} vs {twin.variant}, gain {wording.phrase} minus gain {MAIN.phrase}"


def _gain(probed: VariantResult, tuned: VariantResult, key: str) -> dict[int, float]:
    theirs = by_repetition(tuned, key)
    return {i: value - theirs[i] for i, value in by_repetition(probed, key).items() if i in theirs}


def unconverged(result: VariantResult) -> int:
    return sum(not r.converged for r in result.repetitions)


def rank(results: Sequence[VariantResult], evaluations: Mapping[str, EvaluationSpec] | None = None) -> Ranking:
    """Reference budget: the scratch baseline's, else the most common; other budgets are refused a rank.
    `evaluations` (the target's params) word its further test sets."""
    baseline = next((r for r in results if r.strategy == "scratch"), None)
    if baseline is not None:
        reference = budget_of(baseline)
    else:
        counts = Counter(json.dumps(budget_of(r), sort_keys=True) for r in results)
        reference = json.loads(counts.most_common(1)[0][0]) if counts else {}
    ranked, not_ranked = [], []
    for result in results:
        differ = budget_differences(budget_of(result), reference)
        if differ:
            not_ranked.append((result, "; ".join(differ)))
        else:
            ranked.append(result)
    ranked.sort(key=lambda r: (not r.converged, -r.mean("target_accuracy")))
    return Ranking(baseline, reference, ranked, not_ranked, wordings(results, evaluations or {}))


def accuracy_verdict(ranking: Ranking, key: str = TEST) -> str:
    """Which variants end more or less accurate than scratch on that set, by the family's corrected verdicts."""
    scratch = ranking.baseline
    if scratch is None:
        return "There is no scratch baseline for this target, so no variant is called more accurate."
    if not scratch.converged:
        return (f"No accuracy claim: the scratch baseline {scratch.variant} did not converge"
                f" ({unconverged(scratch)}/{scratch.seeds} repetitions hit the epoch cap while improving).")
    if not scored(scratch, key):
        wording = ranking.sets.get(key, MAIN)
        return f"The scratch baseline {scratch.variant} was not scored on the {wording.title}, so no claim {wording.phrase}."
    others = [r for r in ranking.claimable if r is not scratch and scored(r, key)]
    base = f"scratch ({scratch.variant}) ends at {accuracy_text(scratch.summary(key))}"
    against = f"scratch ({scratch.variant}, {accuracy_text(scratch.summary(key))})"
    if not others:
        return f"No converged variant under the same tuning budget to compare with scratch; {base}."
    family = ranking.families[key]
    diffs = {r.variant: ranking.vs_scratch(r, key) for r in others}
    if all(d is None or d["p_value"] is None for d in diffs.values()):
        return (f"No variant is called more or less accurate than scratch: with one shared repetition there is no paired"
                f" interval (set transfer.seeds > 1); {base}.")
    better = sorted((r for r in others if significantly_better(diffs[r.variant])), key=lambda r: -r.mean(key))
    worse = [r for r in others if significantly_worse(diffs[r.variant])]
    text = f"Against {against}; {family.describe()}. "
    if better:
        text += f"Significantly more accurate: {named(better, diffs, verdict_text)}."
    else:
        text += "No variant is significantly more accurate."
    if worse:
        text += f" Significantly less accurate: {len(worse)} of {len(others)} ({named(worse, diffs, verdict_text)})."
    neither = [r for r in others if r not in better and r not in worse]
    if neither:
        text += (f" Not distinguishable from scratch: {len(neither)} ({named(neither)}); "
                 f"{undetected_text([diffs[r.variant] for r in neither])}.")
    if fragile := [r.variant for r in others if diffs[r.variant]["fragile"]]:
        text += (f" Fragile (the verdict holds in under {100 * inference.STABLE:.0f} % of bootstrap resamples of the"
                 f" repetitions): {', '.join(fragile)}.")
    if same := {a: t for a, t in ranking.aliases.items() if any(r.variant == a for r in others)}:
        text += " " + "; ".join(f"{a} is counted once with {t} (the same results by construction)" for a, t in same.items()) + "."
    return text


def named(results: Sequence[VariantResult], diffs: Mapping[str, Mapping[str, Any] | None] | None = None,
          shown: Callable[[Mapping[str, Any] | None], str] | None = None) -> str:
    """`a, b, c and 4 more` (each with its difference in brackets when `diffs` is given): readable with 20+ variants."""
    show = shown or difference_cell
    text = ", ".join(r.variant + (f" ({show(diffs[r.variant])})" if diffs else "") for r in results[:MAX_NAMED])
    return text + (f" and {len(results) - MAX_NAMED} more" if len(results) > MAX_NAMED else "")


def best_claimable(ranking: Ranking) -> str:
    """For the stage's one-line printout: the best converged ranked variant, or why there is none."""
    if not ranking.claimable:
        return "no converged variant"
    best = ranking.claimable[0]
    return f"{best.variant} {percent(best.mean('target_accuracy'))} %"


def further_sets(ranking: Ranking) -> dict[str, Wording]:
    """The further test sets (beyond the test set) any of this target's ranked variants was scored on."""
    return {key: wording for key, wording in ranking.sets.items() if key != TEST and any(scored(r, key) for r in ranking.ranked)}
