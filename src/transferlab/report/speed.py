"""Speed claims ("sooner than scratch") on a measure that does not move between identical runs.

Time to quality is counted in epochs — the first epoch at which a repetition's chosen run reaches
99 % of its own best validation accuracy, deterministic on one machine — and a variant is called
sooner (or later) than scratch only when the paired interval of the log epoch ratio,
Holm-corrected over every variant compared (`inference`), excludes parity. Seconds are not judged:
a per-epoch cost (the median over repetitions of one core's wall time per epoch) moves between two
runs of the same params (by up to 2x per repetition on a shared machine), so a claim on epochs x
cost could flip from one run to the next. The costs are stated beside the claims, as measurements,
with what caching buys per epoch. Accuracy is judged elsewhere (`verdicts`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from transferlab.config import strategies
from transferlab.report import inference
from transferlab.report.render import difference_text
from transferlab.report.verdicts import Ranking, paired_vs, twin_of
from transferlab.training.results import (
    RepetitionResult,
    VariantResult,
    first_near_best,
)


def epochs_to_near_best(run: RepetitionResult) -> int:
    """The first epoch (1-based) whose validation accuracy is at least 99 % of the run's best."""
    curve = run.val_accuracy_per_epoch
    return first_near_best(curve) + 1 if curve else run.best_epoch


def epoch_cost(result: VariantResult) -> float:
    """Seconds of one core per epoch: the median over repetitions (robust to one slow repetition)."""
    return float(np.median([r.seconds_per_epoch for r in result.repetitions]))


def log_epochs_to_quality(result: VariantResult) -> dict[int, float]:
    """{repetition: log(epochs to 99 % of its own best)}: the same in two runs of the same params on one machine."""
    return {r.repetition: math.log(epochs_to_near_best(r)) for r in result.repetitions}


def family(name: str, results: list[VariantResult], baseline: VariantResult) -> inference.Family:
    """Log epochs-to-quality ratios against the baseline, judged together (negative = sooner)."""
    theirs = log_epochs_to_quality(baseline)
    return inference.judge(name, {r.variant: (log_epochs_to_quality(r), theirs) for r in results if r is not baseline})


def ratio_text(verdict: Mapping[str, Any]) -> str:
    """`0.62× [0.51, 0.75]`: the geometric-mean epoch ratio with its paired 95 % interval."""
    text = f"{math.exp(verdict['mean_difference']):.2f}×"
    if verdict["ci95_low"] is not None:
        text += f" [{math.exp(verdict['ci95_low']):.2f}, {math.exp(verdict['ci95_high']):.2f}]"
    return text


def mean_epochs(result: VariantResult) -> float:
    return float(np.mean([epochs_to_near_best(r) for r in result.repetitions]))


def speed_claims(ranking: Ranking) -> str:
    """Who reaches 99 % of its own best validation accuracy in fewer epochs than scratch: the judged part, no timer in it."""
    claimable, scratch = ranking.claimable, ranking.baseline
    if not claimable:
        return "No converged variant under the reference tuning budget to time."
    if scratch is None or scratch not in claimable:
        return "No converged scratch baseline to time the variants against."
    judged = family(f"{scratch.target}: epochs to 99 % of best against scratch", claimable, scratch)
    sooner = [r for r in claimable if inference.symbol(judged.get(r.variant)) == inference.WORSE]  # fewer epochs
    later = [r for r in claimable if inference.symbol(judged.get(r.variant)) == inference.BETTER]
    text = (f"Time to 99 % of a run's own best validation accuracy, judged in epochs (the same in two runs of the same"
            f" params on one machine; seconds are not); scratch: {mean_epochs(scratch):.1f} epochs. Against it"
            f" ({judged.describe().split(';')[0]}, epoch ratio with its paired 95 % interval): ")
    if sooner:
        text += "sooner: " + ", ".join(f"{r.variant} {ratio_text(judged.verdicts[r.variant])} ({mean_epochs(r):.1f} epochs)"
                                       for r in sooner) + "."
    else:
        text += "no variant gets there significantly sooner than scratch."
    if later:
        text += " Later: " + ", ".join(f"{r.variant} {ratio_text(judged.verdicts[r.variant])}" for r in later) + "."
    return text


def speed_verdict(ranking: Ranking) -> str:
    """`speed_claims`, then each variant's measured cost per epoch and what caching buys (measurements, not judged)."""
    text = speed_claims(ranking)
    if ranking.baseline is None or ranking.baseline not in ranking.claimable:
        return text
    text += (" Measured in this run, not judged (one core's median ms per epoch, which moves between runs): "
             + ", ".join(f"{r.variant} {mean_epochs(r):.1f} epochs × {1000 * epoch_cost(r):.2f} ms" for r in ranking.claimable)
             + ".")
    for cached, frozen in cache_twins(ranking.claimable):
        text += " " + cache_sentence(cached, frozen)
    return text


def cache_twins(results: Sequence[VariantResult]) -> list[tuple[VariantResult, VariantResult]]:
    """(cached variant, its twin): the same network from the same init under the same budget (`rules` `same_as_twin`)."""
    return [(r, twin) for r in results if strategies.STRATEGIES.get(r.strategy) and strategies.STRATEGIES[r.strategy].same_as_twin
            if (twin := twin_of(r, results)) is not None]


def cache_sentence(cached: VariantResult, frozen: VariantResult) -> str:
    """What caching buys against its twin: epochs of one core, and whether the results are the same."""
    ratio = frozen.mean("seconds_per_epoch") / max(cached.mean("seconds_per_epoch"), 1e-12)  # a timer can read 0
    diff = paired_vs(cached, frozen)
    if diff is not None and diff["mean_difference"] == 0 and diff["ci95_low"] in (0.0, None):
        same = "the same test accuracy in every repetition"
    else:
        same = f"test accuracy {difference_text(diff)} against it" if diff else "no shared repetition to compare accuracy"
    return (f"Caching the frozen layers ({cached.variant}) trains an epoch in {1000 * cached.mean('seconds_per_epoch'):.2f} ms"
            f" against {1000 * frozen.mean('seconds_per_epoch'):.2f} ms for its twin {frozen.variant}"
            f" ({ratio:.1f}× as fast per epoch, mean wall time of one core), with {same}.")
