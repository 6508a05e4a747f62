"""Sweeps: one grid of variants, each point run over the same paired repetitions, as tidy rows.

`transferability` (after Yosinski et al. 2014) reuses the lowest k hidden layers of the init
model, frozen or fine-tuned, with the layers above k re-created at the init model's sizes, so
every k has the same architecture. `label_budget` runs configured variants at several
`labels_per_class`. Every point is raced by `strategies.race` under the same protocol
(validation split, early stopping, tuning grid) and repetition plan, so points are paired and
tuned exactly as the `transfer@<variant>` stages are. Importing this module starts neither
TensorFlow nor matplotlib.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferlab import statistics
from transferlab.config import BUILTIN_INIT, Params, Protocol, VariantSpec
from transferlab.errors import ConfigError, DataError
from transferlab.repetitions import Repetition

if TYPE_CHECKING:
    import keras

    from transferlab.config import NetworkSpec

SWEEPS = ("transferability", "label_budget")
XLABELS = {"transferability": "hidden layers reused from the init model (k)", "label_budget": "labelled images per class"}


@dataclass(frozen=True)
class Point:
    """One grid point: a variant trained at `labels_per_class`, plotted at `x` in line `series`."""

    sweep: str
    x: int
    series: str
    variant: VariantSpec
    protocol: Protocol
    labels_per_class: int


def init_hidden_units(params: Params, init_from: str) -> list[int]:
    if init_from == BUILTIN_INIT:
        return list(params.source_model.network.hidden_units)
    return list(params.pretrain[init_from].hidden_units)


def transferability_points(params: Params) -> list[Point]:
    """k = 0 … depth (or `layers`) × modes; k = 0 is the scratch baseline of both modes."""
    spec = params.sweeps.transferability
    if spec is None:
        raise ConfigError("sweeps.transferability", "is null: this sweep is switched off")
    units = init_hidden_units(params, spec.init_from)
    layers = spec.layers if spec.layers is not None else range(len(units) + 1)
    protocol = params.protocol()
    points = []
    for k in layers:
        for mode in spec.modes:
            strategy = "scratch" if k == 0 else "freeze" if mode == "frozen" else "reuse"
            variant = VariantSpec(
                strategy=strategy, init_from=spec.init_from, target=spec.target, reuse_layers=k,
                frozen_layers=k if strategy == "freeze" else 0, new_hidden=units[k:],
            )
            points.append(Point("transferability", k, mode, variant, protocol, params.targets[spec.target].labels_per_class))
    return points


def label_budget_points(params: Params, pool_per_class: int) -> tuple[list[Point], list[dict[str, Any]]]:
    """Each variant at each budget the pool allows; budgets larger than the pool are skipped and returned."""
    spec = params.sweeps.label_budget
    if spec is None:
        raise ConfigError("sweeps.label_budget", "is null: this sweep is switched off")
    budgets = [n for n in spec.labels_per_class if n <= pool_per_class]
    skipped = [
        {"x": n, "reason": f"labels_per_class {n} > {pool_per_class} pool images in the smallest class of {spec.target!r}"}
        for n in spec.labels_per_class if n > pool_per_class
    ]
    points = []
    for name in spec.variants:
        # the variant's recipe (strategy, layers, init model, overrides) evaluated on the sweep's target
        variant = params.variants[name].model_copy(update={"target": spec.target})
        points += [Point("label_budget", n, name, variant, params.protocol(variant), n) for n in budgets]
    return points, skipped


def grid(name: str, params: Params, pool_per_class: int) -> tuple[list[Point], list[dict[str, Any]]]:
    """The sweep's points and the grid values it had to skip."""
    if name == "transferability":
        return transferability_points(params), []
    if name == "label_budget":
        return label_budget_points(params, pool_per_class)
    raise ConfigError("sweeps", f"{name!r} is not a sweep (choose from: {', '.join(SWEEPS)})")


def pool_per_class(y_pool: np.ndarray) -> int:
    """Labelled-pool images in the smallest class: the largest `labels_per_class` every class allows."""
    return int(np.unique(y_pool, return_counts=True)[1].min())


OnPoint = Callable[[Point, list[dict[str, Any]]], None]


def run_sweep(
    points: Sequence[Point],
    plan: Sequence[Repetition],
    init_models: Mapping[str, keras.Model],
    network: NetworkSpec,
    arrays: Mapping[str, np.ndarray],
    on_point: OnPoint | None = None,
) -> list[dict[str, Any]]:
    """Race every point over the same repetitions; returns one tidy row per repetition and point.

    Points with identical settings (k = 0 is the scratch baseline of every mode) are raced once
    and their rows reused, so the lines of a figure share that point exactly.
    """
    from transferlab import strategies

    done: dict[tuple[str, str, int], list[Any]] = {}
    rows: list[dict[str, Any]] = []
    for point in points:
        key = (point.variant.model_dump_json(), point.protocol.model_dump_json(), point.labels_per_class)
        if key not in done:
            done[key] = strategies.race(point.variant, init_models[point.variant.init_from], network, point.protocol,
                                        arrays, point.labels_per_class, plan).results
        point_rows = [
            {"sweep": point.sweep, "x": point.x, "series": point.series, "repetition": run.repetition,
             "seed": run.seed, "labels_seed": run.labels_seed, "labels_per_class": point.labels_per_class,
             "setting": run.setting, "target_accuracy": run.target_accuracy, "target_loss": run.target_loss,
             "val_accuracy": run.val_accuracy, "best_epoch": run.best_epoch, "epochs_run": run.epochs_run,
             "stop_reason": run.stop_reason, "converged": run.converged, "train_seconds": run.train_seconds,
             "seconds_to_near_best": run.seconds_to_near_best}
            for run in done[key]
        ]
        rows += point_rows
        if on_point is not None:
            on_point(point, point_rows)
    return rows


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (x, series), in first-seen order: mean accuracy (`target_accuracy`), std, 95% CI, n, unconverged runs."""
    groups: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((int(row["x"]), str(row["series"])), []).append(row)
    summary = []
    for (x, series), runs in groups.items():
        stats = statistics.summarize([float(run["target_accuracy"]) for run in runs])
        unconverged = sum(str(run["converged"]) not in ("True", "true", "1") for run in runs)
        summary.append({"x": x, "series": series, "target_accuracy": stats["mean"], "std": stats["std"],
                        "ci95_low": stats["ci95_low"], "ci95_high": stats["ci95_high"], "n": stats["n"],
                        "unconverged": unconverged})
    return summary


def load_summary(path: Path) -> list[dict[str, Any]]:
    """Read a summary CSV back with its types (an empty cell, as one seed leaves, is `None`)."""
    def number(text: str) -> float | None:
        return float(text) if text != "" else None

    try:
        with Path(path).open(newline="") as handle:
            return [
                {"x": int(row["x"]), "series": row["series"], "target_accuracy": float(row["target_accuracy"]),
                 "std": number(row["std"]), "ci95_low": number(row["ci95_low"]), "ci95_high": number(row["ci95_high"]),
                 "n": int(row["n"]), "unconverged": int(row["unconverged"])}
                for row in csv.DictReader(handle)
            ]
    except FileNotFoundError:
        raise DataError(f"{path}: sweep summary not found (run its stage first: dvc repro)") from None
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a sweep summary ({type(error).__name__}: {error})") from None


def sweep_figure(summary_rows: Sequence[Mapping[str, Any]], xlabel: str, title: str, log_x: bool = False) -> bytes:
    """A PNG: one line per series (mean accuracy) with its 95% CI as a shaded band."""
    # presentation only: the numeric path (stages, tests of the grid) never loads matplotlib
    import matplotlib.pyplot as plt

    from transferlab import reporting

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for series in dict.fromkeys(row["series"] for row in summary_rows):
        line = sorted((row for row in summary_rows if row["series"] == series), key=lambda row: row["x"])
        xs = [row["x"] for row in line]
        drawn = ax.plot(xs, [100 * row["target_accuracy"] for row in line], marker="o", label=series)[0]
        low = [np.nan if row["ci95_low"] is None else 100 * row["ci95_low"] for row in line]
        high = [np.nan if row["ci95_high"] is None else 100 * row["ci95_high"] for row in line]
        ax.fill_between(xs, low, high, color=drawn.get_color(), alpha=0.2, linewidth=0)
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
    grid_values = sorted({row["x"] for row in summary_rows})
    ax.set_xticks(grid_values, [str(x) for x in grid_values])  # the grid's own values, not 10^k
    ax.set(xlabel=xlabel, ylabel="target test accuracy (%) — band: 95% CI", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return reporting.png(fig)


def _interval(row: Mapping[str, Any], low: str, high: str) -> str:
    if row.get(low) is None or row.get(high) is None:
        return "one seed, no interval"
    return f"95% CI [{100 * row[low]:.1f}, {100 * row[high]:.1f}]"


def _best_strategy(variant_metrics: Sequence[Mapping[str, Any]], labels_per_class: int) -> str:
    from transferlab import reporting

    rows = [row for row in variant_metrics if row.get("labels_per_class", labels_per_class) == labels_per_class]
    if not rows:
        return f"No variant was trained with {labels_per_class} labels per class."
    best = max(rows, key=lambda row: row["target_accuracy"])
    scratch = next((row for row in rows if row["strategy"] == "scratch"), None)
    where = f"With {labels_per_class} labels per class"
    accuracy = (f"{reporting.percent(best['target_accuracy'])} %"
                f" ({_interval(best, 'target_accuracy_ci95_low', 'target_accuracy_ci95_high')})")
    named = f"{best['variant']} ({best['strategy']}) at {accuracy}"
    if scratch is None:
        return f"{where}, the highest mean accuracy is {named}; no scratch baseline is configured to compare it with."
    if best["variant"] == scratch["variant"]:
        return f"{where}, no strategy beat scratch: scratch itself has the highest mean accuracy, {accuracy}."
    diff = reporting.paired_vs(dict(best), dict(scratch))
    if diff is None or diff["ci95_low"] is None:
        return (f"{where}, no strategy beat scratch significantly: the best mean, {named}, has no paired interval"
                " against scratch (too few shared seeds; set transfer.seeds > 1).")
    margin = (f"{100 * diff['mean_difference']:+.1f} points over scratch (paired 95% CI"
              f" [{100 * diff['ci95_low']:+.1f}, {100 * diff['ci95_high']:+.1f}])")
    if diff["significant"] and diff["mean_difference"] > 0:
        return f"{where}, use {named}, {margin}."
    return f"{where}, no strategy beat scratch significantly: the best mean, {named}, is {margin}, an interval that includes zero."


def _budget_winners(budget_summary: Sequence[Mapping[str, Any]]) -> str:
    if not budget_summary:
        return ""
    winners: dict[str, list[int]] = {}
    for x in sorted({row["x"] for row in budget_summary}):
        best = max((row for row in budget_summary if row["x"] == x), key=lambda row: row["target_accuracy"])
        winners.setdefault(best["series"], []).append(x)
    listed = "; ".join(f"{series} at {', '.join(map(str, xs))}" for series, xs in winners.items())
    return f"Highest mean accuracy in the label-budget sweep: {listed} labels per class."


def _layers_to_reuse(transfer_summary: Sequence[Mapping[str, Any]]) -> str:
    if not transfer_summary:
        return ""
    parts = []
    for series in dict.fromkeys(row["series"] for row in transfer_summary):
        best = max((row for row in transfer_summary if row["series"] == series), key=lambda row: row["target_accuracy"])
        none = " (none: scratch)" if best["x"] == 0 else ""
        parts.append(f"k = {best['x']}{none} when {series} ({100 * best['target_accuracy']:.1f} %, {_interval(best, 'ci95_low', 'ci95_high')})")
    scratch = next((row for row in transfer_summary if row["x"] == 0), None)
    baseline = f"; k = 0 (scratch) reaches {100 * scratch['target_accuracy']:.1f} %" if scratch else ""
    return f"Layers to reuse (transferability sweep, best mean per mode): {' and '.join(parts)}{baseline}."


def recommendation(
    transfer_summary_rows: Sequence[Mapping[str, Any]],
    budget_summary_rows: Sequence[Mapping[str, Any]],
    variant_metrics: Sequence[Mapping[str, Any]],
    labels_per_class: int,
) -> str:
    """One paragraph computed from the numbers: best strategy vs scratch (paired), budgets, layers to reuse.

    `variant_metrics` are the metrics files of one target's variants (metrics/transfer/*.json).
    """
    parts = [_best_strategy(variant_metrics, labels_per_class), _budget_winners(budget_summary_rows),
             _layers_to_reuse(transfer_summary_rows)]
    return " ".join(part for part in parts if part)
