"""The report's tables: one row per variant, every cell a string in the shared formats of `reporting`."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from transferlab import reporting, verdicts
from transferlab.results import VariantResult

RunLink = Callable[[VariantResult], str]
# What the columns of the comparison table mean, printed under it.
LEGEND = (
    "Test accuracy: scored once per repetition on the weights chosen on validation; mean ± half-width of its 95 %"
    " t-interval. `vs scratch`: paired difference in percentage points, repetition by repetition, with its 95 %"
    " interval; ✔ / ✘ mark variants significantly better / worse than scratch, `p` the paired t-test. `chosen"
    " setting`: the grid setting validation picked, per repetition. `stop`: why each repetition's chosen run"
    " stopped. `s to 99 % of best`: training seconds until the run first reached 99 % of its own best validation"
    " accuracy (seconds are each run's share of the batched training step). `best epoch / epochs run` and the"
    " seconds: means over repetitions."
)
# Added under the legend when the target has a shifted test set.
SHIFT_LEGEND = (
    "Shifted %: the same chosen weights scored once on the shifted test set (each test image corrupted, see above), mean"
    " ± half-width of its 95 % t-interval; `shifted vs scratch`: the paired difference there, as for the test set."
    " Nothing is chosen on either test set."
)


def chosen_cell(result: VariantResult) -> str:
    """`sgd 0.1 ×4, adam 0.001 ×1`: how often each grid setting won on validation."""
    return ", ".join(f"{name} ×{count}" for name, count in result.chosen_settings().items() if count)


def stop_cell(result: VariantResult) -> str:
    """`patience ×3, max_epochs ×2 ⚠ unconverged 2/5`."""
    counts = Counter(r.stop_reason for r in result.repetitions)
    text = ", ".join(f"{reason} ×{count}" for reason, count in counts.items())
    missed = verdicts.unconverged(result)
    return text + (f" ⚠ unconverged {missed}/{result.seeds}" if missed else "")


def shift_cells(result: VariantResult, baseline: VariantResult | None) -> dict[str, str]:
    """The shifted test set's accuracy and its paired difference to the baseline, as the test set's cells read."""
    accuracy = reporting.accuracy_cell(result.summary(verdicts.SHIFT)) if result.has_shift else "–"
    return {"shifted %": accuracy,
            "shifted vs scratch (pp)": reporting.difference_cell(verdicts.paired_vs(result, baseline, verdicts.SHIFT))}


def variant_row(result: VariantResult, baseline: VariantResult | None, link: RunLink, shift: bool = False) -> dict[str, str]:
    """One row of the comparison; `shift`: with the shifted test set's two columns after the test set's."""
    diff = verdicts.paired_vs(result, baseline)
    return {
        "variant": result.variant,
        "strategy": result.strategy,
        "init from": result.init_from,
        "reused / frozen / new": f"{result.reuse_layers} / {result.frozen_layers} / {result.new_layers}",
        "params trainable / frozen": f"{result.trainable_params:,} / {result.frozen_params:,}",
        "test accuracy %": reporting.accuracy_cell(result.summary("target_accuracy")),
        "vs scratch (pp)": reporting.difference_cell(diff),
        "p": "–" if diff is None or diff["p_value"] is None else f"{diff['p_value']:.3f}",
        **(shift_cells(result, baseline) if shift else {}),
        "chosen setting": chosen_cell(result),
        "best epoch / epochs run": f"{result.mean('best_epoch'):.1f} / {result.mean('epochs_run'):.1f}",
        "stop": stop_cell(result),
        "s to 99 % of best": f"{result.mean('seconds_to_near_best'):.3g}",
        "train s": f"{result.mean('train_seconds'):.3g}",
        "ms / epoch": f"{1000 * result.mean('seconds_per_epoch'):.2f}",
        "MLflow run": link(result),
    }


def comparison(ranking: verdicts.Ranking, link: RunLink) -> pd.DataFrame:
    """The ranked variants: converged ones by mean test accuracy, then the unconverged (marked ⚠)."""
    shift = verdicts.has_shift(ranking)
    return pd.DataFrame([variant_row(r, ranking.baseline, link, shift) for r in ranking.ranked])


def not_ranked(ranking: verdicts.Ranking, link: RunLink) -> pd.DataFrame:
    """Variants raced under another tuning budget: their numbers, the reason, and no paired comparison."""
    rows, shift = [], any(result.has_shift for result, _ in ranking.not_ranked)
    for result, reason in ranking.not_ranked:
        row = variant_row(result, None, link, shift)
        shown = ("variant", "strategy", "init from", "test accuracy %", "shifted %", "chosen setting", "best epoch / epochs run",
                 "stop")
        rows.append({key: row[key] for key in shown if key in row} | {"why not ranked": reason, "MLflow run": row["MLflow run"]})
    return pd.DataFrame(rows)


def pretraining(entries: Mapping[str, Mapping[str, Any]], ui: str) -> pd.DataFrame:
    """One row per pretraining entry: its method, depth, unlabelled images and final metrics."""
    rows = []
    for name, metrics in entries.items():
        measured = ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()
                             if isinstance(value, float) and key not in ("depth", "pool_images"))
        rows.append({"entry": name, "method": metrics["method"], "layers": metrics["depth"],
                     "unlabelled images": metrics["pool_images"], "final metrics": measured,
                     "MLflow run": reporting.run_link(ui, metrics.get("mlflow_experiment_id", ""), metrics["mlflow_run_id"])})
    return pd.DataFrame(rows)


def imported(entries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per zoo entry or model file: where it came from, its layers, its source accuracy, its digest."""
    return pd.DataFrame([
        {"entry": name, "kind": metrics["kind"], "from": metrics["source"],
         "hidden layers": "-".join(str(units) for units in metrics["hidden_layers"].values()),
         "source test accuracy %": reporting.percent(metrics.get("source_test_accuracy")), "sha256": metrics["sha256"][:12]}
        for name, metrics in entries.items()
    ])
