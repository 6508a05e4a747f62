"""Every generated claim of the report, in one place: who may be ranked, who is more accurate, who is faster.

The rules of the fair race (DESIGN.md): only variants tuned under the same budget are ranked;
no claim rests on an unconverged variant or sweep point; "more accurate" (final test accuracy,
with its paired interval against scratch) and "faster" (seconds to 99 % of a variant's own best
validation accuracy) are separate sentences. `recommendation` reuses these verdicts for the sweeps.
A target with a shifted test set gets the same paired verdicts on it (`key=SHIFT`), and LP-FT's claim
(Kumar et al. 2022) is checked against its full fine-tuning twin (`lp_ft_verdict`).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transferlab import statistics
from transferlab.reporting import accuracy_text, difference_cell, difference_text, percent, seconds
from transferlab.results import VariantResult

# What a variant's race depends on besides its recipe: two results rank together only if all of these agree.
SPLIT_KEYS = ("labels_per_class", "train_per_class", "validation_per_class")
MAX_NAMED = 5  # variants named in one sentence before "and N more"
# What a `cache` variant and its `freeze` twin must share to be the same network trained the same way.
TWIN_KEYS = ("init_from", "target", "reuse_layers", "frozen_layers", "new_layers", "trainable_params", "frozen_params")
TEST, SHIFT = "target_accuracy", "shift_accuracy"  # the test set, and the shifted test set (`targets.<name>.shift`)


def budget_of(result: VariantResult) -> dict[str, Any]:
    return {**result.budget, **{key: getattr(result, key) for key in SPLIT_KEYS}}


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def budget_differences(mine: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """`max_epochs 30 (reference 300)` for every key whose value differs (a missing key counts)."""
    return [f"{key} {_shown(mine.get(key, '–'))} (reference {_shown(reference.get(key, '–'))})"
            for key in dict.fromkeys([*reference, *mine]) if mine.get(key) != reference.get(key)]


def paired_vs(result: VariantResult, baseline: VariantResult | None, key: str = TEST) -> dict[str, Any] | None:
    """Paired difference of test accuracy (`key=SHIFT`: on the shifted test set), repetition by repetition,
    against the baseline (None for itself, or when either was not scored on that set)."""
    if baseline is None or result.variant == baseline.variant:
        return None
    if key == SHIFT and not (result.has_shift and baseline.has_shift):
        return None
    return paired_by_repetition({r.repetition: getattr(r, key) for r in result.repetitions},
                                {r.repetition: getattr(r, key) for r in baseline.repetitions})


def paired_by_repetition(mine: Mapping[int, float], theirs: Mapping[int, float]) -> dict[str, Any] | None:
    common = sorted(set(mine) & set(theirs))
    if not common:
        return None
    return statistics.paired_difference([mine[i] for i in common], [theirs[i] for i in common])


def significantly_better(diff: Mapping[str, Any] | None) -> bool:
    return diff is not None and diff["significant"] and diff["mean_difference"] > 0


def significantly_worse(diff: Mapping[str, Any] | None) -> bool:
    return diff is not None and diff["significant"] and diff["mean_difference"] < 0


@dataclass(frozen=True)
class Ranking:
    """One target's variants, split by whether they may be ranked against each other."""

    baseline: VariantResult | None  # the scratch variant every row is compared with
    reference: dict[str, Any]  # the tuning budget (and label split) ranked variants share
    ranked: list[VariantResult]  # that budget; converged first, each group by mean test accuracy
    not_ranked: list[tuple[VariantResult, str]]  # another budget, with the keys that differ

    @property
    def claimable(self) -> list[VariantResult]:
        """The variants a generated statement may rest on: ranked and converged."""
        return [r for r in self.ranked if r.converged]

    @property
    def left_out(self) -> list[str]:
        return ([f"{r.variant} (unconverged {unconverged(r)}/{r.seeds})" for r in self.ranked if not r.converged]
                + [f"{r.variant} (other tuning budget)" for r, _ in self.not_ranked])


def unconverged(result: VariantResult) -> int:
    return sum(not r.converged for r in result.repetitions)


def rank(results: Sequence[VariantResult]) -> Ranking:
    """Reference budget: the scratch baseline's, else the most common; other budgets are refused a rank."""
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
    return Ranking(baseline, reference, ranked, not_ranked)


def protocol(result: VariantResult) -> str:
    """The race every ranked variant ran, stated from its recorded budget."""
    budget = result.budget
    grid = budget.get("grid", [])
    if budget.get("patience"):
        stopping = (f"early stopping on {budget['monitor']} (patience {budget['patience']} epochs, min_delta"
                    f" {budget.get('min_delta', 0):g}) with at most {budget['max_epochs']} epochs, best weights restored")
    else:
        stopping = f"a fixed {budget['max_epochs']} epochs (no early stopping, last epoch kept)"
    repetitions = "One repetition draws" if result.seeds == 1 else f"Each of {result.seeds} repetitions draws"
    return (
        f"**Protocol.** {repetitions} {result.labels_per_class} labelled images per class"
        f" and splits them into {result.train_per_class} for training and {result.validation_per_class} for"
        f" validation (validation share {budget['validation_fraction']:g}); the test set is scored once, on the"
        f" weights chosen on validation. Every variant tries the same {len(grid)} optimizer setting"
        f"{'s' if len(grid) != 1 else ''} ({'; '.join(grid)}) in every repetition and keeps the one with the"
        f" best {budget['monitor']}; {stopping}; batch size {budget['batch_size']}. Repetitions are paired: every variant of"
        " repetition i sees the same labelled images, the same split and the same seed. A repetition that hit the"
        " epoch cap while still improving is *unconverged*: its row is marked ⚠ and no statement rests on it."
    )


def protocols(rankings: Mapping[str, Ranking]) -> list[str]:
    """One protocol paragraph when every target ran the same race, else one per target, named."""
    texts = {target: protocol(r.baseline or r.ranked[0]) for target, r in rankings.items() if r.ranked}
    if len(set(texts.values())) <= 1:
        return list(dict.fromkeys(texts.values()))
    return [text.replace("**Protocol.**", f"**Protocol, target `{target}`.**") for target, text in texts.items()]


def accuracy_verdict(ranking: Ranking, key: str = TEST) -> str:
    """Which variant ends more accurate than scratch: the paired interval must exclude zero.

    `key=SHIFT`: the same verdict on the shifted test set (the same chosen weights, scored there once).
    """
    scratch = ranking.baseline
    if scratch is None:
        return "There is no scratch baseline for this target, so no variant is called more accurate."
    if not scratch.converged:
        return (f"No accuracy claim: the scratch baseline {scratch.variant} did not converge"
                f" ({unconverged(scratch)}/{scratch.seeds} repetitions hit the epoch cap while improving).")
    if key == SHIFT and not scratch.has_shift:
        return f"The scratch baseline {scratch.variant} was not scored on a shifted test set, so no claim under shift."
    others = [r for r in ranking.claimable if r is not scratch and (key != SHIFT or r.has_shift)]
    base = f"scratch ({scratch.variant}) ends at {accuracy_text(scratch.summary(key))}"
    if not others:
        return f"No converged variant under the same tuning budget to compare with scratch; {base}."
    diffs = {r.variant: paired_vs(r, scratch, key) for r in others}
    better = [r for r in others if significantly_better(diffs[r.variant])]
    worse = [r for r in others if significantly_worse(diffs[r.variant])]
    if better:
        best = max(better, key=lambda r: r.mean(key))
        text = (f"{best.variant} ({best.strategy} from {best.init_from}) ends at"
                f" {accuracy_text(best.summary(key))}, {difference_text(diffs[best.variant])} over scratch")
        if len(better) > 1:
            text += f"; also significantly more accurate than scratch: {named([r for r in better if r is not best], diffs)}"
        text += "."
        higher = [r for r in others if r not in better and r.mean(key) > best.mean(key)]
        if higher:
            text += f" Higher means, but not significantly above scratch: {named(higher, diffs)}."
    else:
        top = max(others, key=lambda r: r.mean(key))
        diff = diffs[top.variant]
        if diff is None or diff["ci95_low"] is None:
            return (f"No variant is called more accurate than scratch: with one shared repetition there is no paired"
                    f" interval (set transfer.seeds > 1); {base}.")
        where = ("an interval below zero" if significantly_worse(diff) else "an interval that includes zero")
        text = (f"No variant ends significantly more accurate than scratch, which reaches"
                f" {accuracy_text(scratch.summary(key))}; the highest mean among the others,"
                f" {top.variant} ({top.strategy}), is {difference_text(diff)} from it, {where}.")
    if worse:
        text += f" Significantly less accurate than scratch: {len(worse)} of {len(others)} ({named(worse)})."
    return text


def named(results: Sequence[VariantResult], diffs: Mapping[str, Mapping[str, Any] | None] | None = None) -> str:
    """`a, b, c and 4 more` (each with its paired difference cell when `diffs` is given): readable with 20+ variants."""
    shown = ", ".join(r.variant + (f" ({difference_cell(diffs[r.variant])})" if diffs else "")
                      for r in results[:MAX_NAMED])
    return shown + (f" and {len(results) - MAX_NAMED} more" if len(results) > MAX_NAMED else "")


def cache_twins(results: Sequence[VariantResult]) -> list[tuple[VariantResult, VariantResult]]:
    """(cache variant, its freeze twin): the same network from the same init under the same budget."""
    pairs = []
    for cached in (r for r in results if r.strategy == "cache"):
        twins = [r for r in results if r.strategy == "freeze" and budget_of(r) == budget_of(cached)
                 and all(getattr(r, key) == getattr(cached, key) for key in TWIN_KEYS)]
        # several identical freeze variants: prefer the namesake (cache2 -> freeze2)
        twins.sort(key=lambda r: r.variant != cached.variant.replace("cache", "freeze", 1))
        if twins:
            pairs.append((cached, twins[0]))
    return pairs


def cache_sentence(cached: VariantResult, frozen: VariantResult) -> str:
    ratio = frozen.mean("seconds_per_epoch") / max(cached.mean("seconds_per_epoch"), 1e-12)  # a timer can read 0
    diff = paired_vs(cached, frozen)
    if diff is not None and diff["mean_difference"] == 0 and diff["ci95_low"] in (0.0, None):
        same = "the same test accuracy in every repetition"
    else:
        same = f"test accuracy {difference_text(diff)} against it" if diff else "no shared repetition to compare accuracy"
    return (f"Caching the frozen layers ({cached.variant}) trains an epoch in {1000 * cached.mean('seconds_per_epoch'):.2f} ms"
            f" against {1000 * frozen.mean('seconds_per_epoch'):.2f} ms for its freeze twin {frozen.variant}"
            f" ({ratio:.1f}× as fast per epoch) and reaches 99 % of its own best validation accuracy after"
            f" {seconds(cached.mean('seconds_to_near_best'))} against {seconds(frozen.mean('seconds_to_near_best'))},"
            f" with {same}.")


def speed_verdict(ranking: Ranking) -> str:
    """Which variant reaches 99 % of its own best validation accuracy soonest, what reuse and caching buy."""
    claimable = ranking.claimable
    if not claimable:
        return "No converged variant under the reference tuning budget to time."
    near = {r.variant: r.mean("seconds_to_near_best") for r in claimable}
    fastest = min(claimable, key=lambda r: near[r.variant])
    text = (f"{fastest.variant} ({fastest.strategy}) reaches 99 % of its own best validation accuracy soonest,"
            f" after {seconds(near[fastest.variant])} of training on average")
    scratch = ranking.baseline if ranking.baseline in claimable else None
    if scratch is not None and fastest is not scratch:
        others = [r for r in claimable if r is not scratch]
        sooner = [r for r in others if near[r.variant] < near[scratch.variant]]
        ratio = near[scratch.variant] / max(near[fastest.variant], 1e-12)  # reached on the first epoch: a timer can read 0
        text += (f", against {seconds(near[scratch.variant])} for scratch ({ratio:.1f}×"
                 f" sooner); {len(sooner)} of {len(others)} other variants get there sooner than scratch")
    elif scratch is not None:
        text += ": no reuse variant gets there sooner than training from scratch"
    text += "."
    for cached, frozen in cache_twins(claimable):
        text += " " + cache_sentence(cached, frozen)
    return text


def best_claimable(ranking: Ranking) -> str:
    """For the stage's one-line printout: the best converged ranked variant, or why there is none."""
    if not ranking.claimable:
        return "no converged variant"
    best = ranking.claimable[0]
    return f"{best.variant} {percent(best.mean('target_accuracy'))} %"


def has_shift(ranking: Ranking) -> bool:
    """Whether this target's ranked variants were also scored on a shifted test set."""
    return any(r.has_shift for r in ranking.ranked)


# What a variant and its full fine-tuning twin share: the same layers from the same init (what is fixed may differ).
SAME_NETWORK = ("init_from", "target", "reuse_layers", "new_layers")


def fine_tuning_twin(result: VariantResult, results: Sequence[VariantResult]) -> VariantResult | None:
    """The `reuse` variant that trains the same layers from the same init model, every one at the tuned rate, same budget.

    What LP-FT, surgical fine-tuning and discriminative rates change is how that network trains, so
    this twin is what says whether the change helps. One with a matching name (lp_ft5 -> reuse5) comes first.
    """
    twins = [r for r in results if r.strategy == "reuse" and budget_of(r) == budget_of(result)
             and all(getattr(r, key) == getattr(result, key) for key in SAME_NETWORK)]
    twins.sort(key=lambda r: r.variant != result.variant.replace(result.strategy, "reuse", 1))
    return twins[0] if twins else None


def lp_ft_twins(results: Sequence[VariantResult]) -> list[tuple[VariantResult, VariantResult]]:
    """(lp_ft variant, its full fine-tuning twin) for every lp_ft variant that has one."""
    return [(probed, twin) for probed in results if probed.strategy == "lp_ft"
            if (twin := fine_tuning_twin(probed, results)) is not None]


def _gain(probed: VariantResult, tuned: VariantResult, key: str) -> dict[int, float]:
    theirs = {r.repetition: getattr(r, key) for r in tuned.repetitions}
    return {r.repetition: getattr(r, key) - theirs[r.repetition] for r in probed.repetitions if r.repetition in theirs}


def lp_ft_sentence(probed: VariantResult, tuned: VariantResult) -> str:
    """Kumar et al. 2022's claim on one (lp_ft, reuse) pair: LP-FT's gain over fine-tuning is larger under shift."""
    name = f"{probed.variant} against {tuned.variant}"
    if not (probed.converged and tuned.converged):
        late = [f"{r.variant} ({unconverged(r)}/{r.seeds})" for r in (probed, tuned) if not r.converged]
        return f"{name}: no claim, unconverged repetitions in {', '.join(late)}."
    inside, shifted = paired_vs(probed, tuned), paired_vs(probed, tuned, SHIFT)
    widening = paired_by_repetition(_gain(probed, tuned, SHIFT), _gain(probed, tuned, TEST))
    if inside is None or shifted is None or widening is None:
        return f"{name}: no shared repetition to compare."
    text = (f"{name}: {difference_text(inside)} in-distribution, {difference_text(shifted)} under shift;"
            f" the gain under shift minus the gain in-distribution is {difference_text(widening)}")
    if widening["ci95_low"] is None:
        return text + ": one repetition, so no claim either way (set transfer.seeds > 1)."
    if significantly_better(widening) and significantly_better(shifted):
        return text + ": the claim holds here (LP-FT is ahead under shift, by more than in-distribution)."
    if significantly_better(widening):
        return text + (": the gap moves LP-FT's way under shift, but LP-FT is not significantly ahead under shift,"
                       " so the claim holds only in part.")
    if significantly_worse(widening):
        return text + ": the opposite of the claim (LP-FT loses ground under shift)."
    return text + ": the interval includes zero, so this run neither supports nor refutes the claim."


def lp_ft_verdict(ranking: Ranking) -> str | None:
    """Whether LP-FT beats full fine-tuning more under shift than in-distribution; None without a pair and a shifted set."""
    pairs = [(a, b) for a, b in lp_ft_twins(ranking.ranked) if a.has_shift and b.has_shift]
    if not pairs:
        return None
    return ("Kumar et al. (2022) report that a linear probe then fine-tuning (LP-FT) beats full fine-tuning by more"
            " under distribution shift than in-distribution. Here (paired, repetition by repetition): "
            + " ".join(lp_ft_sentence(a, b) for a, b in pairs))
