"""The report's tables: one row per variant, every cell a string in the shared formats of `reporting`."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from transferlab.report import inference, render, speed, verdicts
from transferlab.training.results import VariantResult

RunLink = Callable[[VariantResult], str]
# What the columns of the comparison table mean, printed under it.
LEGEND = (
    "Test accuracy: scored once per repetition on the weights chosen on validation; mean ± half-width of its 95 %"
    " t-interval. `vs scratch`: paired difference in percentage points, repetition by repetition, with its 95 %"
    " interval; ✔ / ✘ mark variants significantly better / worse than scratch after Holm's correction over every"
    " variant compared on that test set (`Holm p`: the adjusted paired t-test p; the interval itself is not adjusted,"
    " so it can exclude zero without a mark). `stability`: the share of bootstrap resamples of the repetitions in which"
    " the verdict holds (*fragile* below 80 %). A variant whose results equal its twin's by construction (cache ≡"
    " freeze) is one comparison. The details table below has what each variant trained and how long."
)
DETAILS_LEGEND = (
    "`chosen setting`: the grid setting validation picked, per repetition. `stop`: why each repetition's chosen run"
    " stopped. `epochs to 99 %`: epochs until the run first reached 99 % of its own best validation accuracy;"
    " `ms / epoch`: one core's wall time per training epoch, median over repetitions. Means over repetitions."
)


def further_legend(sets: Sequence[verdicts.Wording]) -> str:
    """Added under the legend for a target's further test sets (`targets.<name>.evaluations`), in their words."""
    return " ".join(
        f"{wording.label.capitalize()} %: the same chosen weights scored once on the {wording.title} (each test image"
        f" corrupted, see above), mean ± half-width of its 95 % t-interval; `{wording.label} vs scratch`: the paired"
        " difference there, corrected as a family of its own." for wording in sets
    ) + f" Nothing is chosen on {'either' if len(sets) == 1 else 'any'} test set."


def chosen_cell(result: VariantResult) -> str:
    """`sgd 0.1 ×4, adam 0.001 ×1`: how often each grid setting won on validation."""
    return ", ".join(f"{name} ×{count}" for name, count in result.chosen_settings().items() if count)


def stop_cell(result: VariantResult) -> str:
    """`patience ×3, max_epochs ×2 ⚠ unconverged 2/5`."""
    counts = Counter(r.stop_reason for r in result.repetitions)
    text = ", ".join(f"{reason} ×{count}" for reason, count in counts.items())
    missed = verdicts.unconverged(result)
    return text + (f" ⚠ unconverged {missed}/{result.seeds}" if missed else "")


def verdict_cells(ranking: verdicts.Ranking, result: VariantResult, key: str, prefix: str = "") -> dict[str, str]:
    """Accuracy, the corrected difference to scratch, its Holm p and stability on one test set."""
    scored = verdicts.scored(result, key)
    diff = ranking.vs_scratch(result, key) if scored else None
    return {f"{prefix}accuracy %": render.accuracy_cell(result.summary(key)) if scored else "–",
            f"{prefix}vs scratch (pp)": render.difference_cell(diff),
            f"{prefix}Holm p": inference.p_text(diff.get("p_adjusted")) if diff else "–",
            f"{prefix}stability": inference.stability_text(diff)}


def variant_row(ranking: verdicts.Ranking, result: VariantResult, link: RunLink) -> dict[str, str]:
    """One row of the main comparison: what the variant is, its verdicts on every test set, its MLflow run."""
    row = {"variant": result.variant, "strategy": result.strategy + ("" if result.converged else " ⚠")}
    for key, wording in {verdicts.TEST: verdicts.MAIN, **verdicts.further_sets(ranking)}.items():
        row |= verdict_cells(ranking, result, key, f"{wording.label} ")
    return row | {"MLflow run": link(result)}


def detail_row(result: VariantResult) -> dict[str, str]:
    """What a variant trained and how its race went."""
    return {
        "variant": result.variant,
        "init from": result.init_from,
        "reused / frozen / new": f"{result.reuse_layers} / {result.frozen_layers} / {result.new_layers}",
        "params trainable / frozen": f"{result.trainable_params:,} / {result.frozen_params:,}",
        "chosen setting": chosen_cell(result),
        "best epoch / epochs run": f"{result.mean('best_epoch'):.1f} / {result.mean('epochs_run'):.1f}",
        "stop": stop_cell(result),
        "epochs to 99 %": f"{sum(speed.epochs_to_near_best(r) for r in result.repetitions) / result.seeds:.1f}",
        "ms / epoch": f"{1000 * speed.epoch_cost(result):.2f}",
    }


def constant_columns(frame: pd.DataFrame, keep: tuple[str, ...] = ("variant",)) -> tuple[pd.DataFrame, str]:
    """The table without columns whose every cell is the same, and one sentence saying what they all were."""
    if len(frame) < 2:
        return frame, ""
    constant = [c for c in frame.columns if c not in keep and frame[c].nunique() == 1]
    said = "; ".join(f"{c}: {frame[c].iloc[0]}" for c in constant)
    return frame.drop(columns=constant), (f"The same in every row — {said}." if said else "")


def comparison(ranking: verdicts.Ranking, link: RunLink) -> pd.DataFrame:
    """The ranked variants: converged ones by mean test accuracy, then the unconverged (marked ⚠)."""
    return pd.DataFrame([variant_row(ranking, r, link) for r in ranking.ranked])


def details(ranking: verdicts.Ranking) -> tuple[pd.DataFrame, str]:
    """The ranked variants' recipe and race, constant columns said once."""
    return constant_columns(pd.DataFrame([detail_row(r) for r in ranking.ranked]))


def not_ranked(ranking: verdicts.Ranking, link: RunLink) -> pd.DataFrame:
    """Variants raced under another tuning budget: their numbers, the reason, and no paired comparison."""
    rows = []
    for result, reason in ranking.not_ranked:
        detail = detail_row(result)
        rows.append({"variant": result.variant, "strategy": result.strategy,
                     "test accuracy %": render.accuracy_cell(result.summary(verdicts.TEST)),
                     **{f"{wording.label} accuracy %": render.accuracy_cell(result.summary(key))
                        for key, wording in ranking.sets.items() if key != verdicts.TEST and result.scored(key)},
                     "chosen setting": detail["chosen setting"], "stop": detail["stop"], "why not ranked": reason,
                     "MLflow run": link(result)})
    return pd.DataFrame(rows)


def pretraining(entries: Mapping[str, Mapping[str, Any]], ui: str) -> pd.DataFrame:
    """One row per pretraining entry: its method, depth, unlabelled images and final metrics."""
    rows = []
    for name, metrics in entries.items():
        measured = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()
                             if isinstance(value, float) and key not in ("depth", "pool_images"))
        rows.append({"entry": name, "method": metrics["method"], "layers": metrics["depth"],
                     "unlabelled images": metrics["pool_images"], "final metrics": measured,
                     "MLflow run": render.run_link(ui, metrics.get("mlflow_experiment_id", ""), metrics["mlflow_run_id"])})
    return pd.DataFrame(rows)


def layers_cell(metrics: Mapping[str, Any]) -> str:
    """A Dense stack's hidden units (`300-100`), or any other network's blocks (`6 blocks + head`)."""
    if "hidden_layers" in metrics:
        return "-".join(str(units) for units in metrics["hidden_layers"].values())
    return f"{len(metrics['blocks']) - 1} blocks + head"


def imported(entries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per zoo entry or model file: where it came from, its layers, its source accuracy, its digest."""
    return pd.DataFrame([
        {"entry": name, "kind": metrics["kind"], "from": metrics["source"], "hidden layers": layers_cell(metrics),
         "source test accuracy %": render.percent(metrics.get("source_test_accuracy")), "sha256": metrics["sha256"][:12]}
        for name, metrics in entries.items()
    ])
