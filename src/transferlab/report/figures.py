"""The report's figures as PNG bytes (matplotlib, Agg): readable with 20+ variants, validation never called test.

Per-epoch curves are small multiples by strategy (split by init source when a strategy has many
variants), at most four curves a panel, each with the scratch baseline drawn grey for reference on
a shared accuracy axis. There is no curve against seconds: on a monotone time axis (epoch × the
variant's median seconds per epoch) it is the per-epoch curve stretched by one constant per variant,
so each legend entry names that constant instead and `time_bars` draws it.
"""
from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from transferlab.config import (
    BUILTIN_INIT,  # noqa: E402
    strategies,  # noqa: E402
)
from transferlab.report import speed
from transferlab.report.render import Figure  # noqa: E402
from transferlab.training.lanes import (
    lanes,  # the cores this process may use: one home for that count
)
from transferlab.training.results import VariantResult  # noqa: E402

UNCONVERGED = " ⚠ unconverged"
MAX_CURVES = 4  # variants per panel, besides the grey scratch baseline: more cannot be told apart
STRATEGY_ORDER = ("scratch", "reuse", "freeze", "cache", "unfreeze")  # panels in this order, unknown ones last
SWEEP_AXES = {  # sweep kind: (title, x axis, log x)
    "transferability": ("Layer transferability", "hidden layers reused (k): from the init model; dashed: from the target's"
                        " own network (selffer); surgical: all reused, only hidden k trained", False),
    "label_budget": ("Label budget", "labelled images per class", True),
}
STRATEGY_COLORS = {name: rule.color for name, rule in strategies.STRATEGIES.items()}  # one colour per strategy, from its table


def png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _draw(job: tuple[Callable[..., bytes], tuple]) -> bytes:
    function, args = job
    return function(*args)


def rendered(jobs: Sequence[tuple[Callable[..., bytes], tuple]]) -> list[bytes]:
    """Each (figure function, its arguments) drawn to PNG bytes, in order, one forked process per core.

    matplotlib draws in Python under one lock, so threads would not help; a fork inherits everything
    imported and draws the same bytes as this process would. One core, one figure, or another thread
    alive (a fork copies only this one, and any lock another holds): drawn here.
    """
    workers = min(len(jobs), lanes())
    if workers <= 1 or threading.active_count() > 1:
        return [_draw(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_draw, jobs))


def _label(result: VariantResult) -> str:
    return result.variant + ("" if result.converged else UNCONVERGED)



def target_figures(target: str, ranked: Sequence[VariantResult], not_ranked: Sequence[VariantResult],
                   histories: Mapping[str, pd.DataFrame]) -> list[Figure]:
    """A target's four figures: tuning grid, validation accuracy per epoch, test accuracy, time per epoch."""
    where = f"{target}, mean over repetitions still running"
    figures = [
        (f"tuning_{target}",
         f"Validation accuracy at every grid setting ({target}, mean over repetitions; ×k: chosen in k repetitions)",
         tuning_heatmap, (ranked, not_ranked, f"target {target}: tuning grid")),
        (f"val_accuracy_per_epoch_{target}",
         f"Validation accuracy per epoch, small multiples by strategy and init source ({where}); each legend entry gives"
         " the variant's median milliseconds per epoch, so epoch × that is its training time",
         curve_panels, (ranked, histories, "epoch", "epoch (× the legend's ms per epoch = training time)",
                       f"target {target}: validation accuracy per epoch")),
        (f"accuracy_{target}", f"Final test accuracy with 95% CI ({target}; hatched: unconverged)",
         accuracy_bars, (ranked, f"target {target}: test accuracy")),
        (f"time_per_epoch_{target}", f"Training time per epoch ({target}, median over repetitions)", time_bars, (ranked, f"target {target}: time per epoch")),
    ]
    images = rendered([(function, args) for _, _, function, args in figures])
    return [Figure(name, caption, image) for (name, caption, _, _), image in zip(figures, images, strict=True)]


def tuning_heatmap(ranked: Sequence[VariantResult], not_ranked: Sequence[VariantResult], title: str) -> bytes:
    """Mean validation accuracy of every variant at every grid setting; `×k`: chosen in k repetitions."""
    results = [*ranked, *not_ranked]
    labels = [_label(r) for r in ranked] + [f"{r.variant} (other budget)" for r in not_ranked]
    tables = {r.variant: {row["setting"]: row for row in r.tuning()} for r in results}
    settings = list(dict.fromkeys(name for table in tables.values() for name in table))
    values = np.array([[100 * tables[r.variant][s]["val_accuracy"] if s in tables[r.variant] else np.nan
                        for s in settings] for r in results], dtype=float)
    fig, ax = plt.subplots(figsize=(2.0 + 1.5 * max(1, len(settings)), 1.4 + 0.38 * len(results)))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    finite = values[np.isfinite(values)]
    middle = float(finite.mean()) if finite.size else 0.0
    for i, result in enumerate(results):
        for j, setting in enumerate(settings):
            row = tables[result.variant].get(setting)
            if row is not None:
                text = f"{100 * row['val_accuracy']:.1f}" + (f" ×{row['chosen']}" if row["chosen"] else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > middle else "white")
    ax.set_xticks(range(len(settings)), settings)
    ax.set_yticks(range(len(results)), labels)
    ax.set(title=title, xlabel="grid setting (optimizer, learning rate)")
    fig.colorbar(image, ax=ax, label="validation accuracy (%), mean over repetitions")
    return png(fig)


def panels(results: Sequence[VariantResult], most: int = MAX_CURVES) -> list[tuple[str, list[VariantResult]]]:
    """The small multiples: one panel per strategy; a strategy with more than `most` variants is split
    by init source (the source model, then the others) and each part into near-equal panels of ≤ `most`."""
    present = dict.fromkeys(r.strategy for r in results)
    strategies = [s for s in STRATEGY_ORDER if s in present] + [s for s in present if s not in STRATEGY_ORDER]
    found = []
    for strategy in strategies:
        members = [r for r in results if r.strategy == strategy]
        if len(members) <= most:
            found.append((strategy, members))
            continue
        for origin, group in ((f"from {BUILTIN_INIT}", [r for r in members if r.init_from == BUILTIN_INIT]),
                              ("other init", [r for r in members if r.init_from != BUILTIN_INIT])):
            count = -(-len(group) // most)
            for i in range(count):
                part = group[i * len(group) // count:(i + 1) * len(group) // count]
                found.append((f"{strategy} · {origin}" + (f" ({i + 1}/{count})" if count > 1 else ""), part))
    return found


def curve_panels(results: Sequence[VariantResult], histories: Mapping[str, pd.DataFrame], x: str, xlabel: str,
                 title: str) -> bytes:
    """Validation accuracy against `x` (a history column, `epoch`), small multiples from `panels`; each legend entry
    names the variant's median milliseconds per epoch (`speed.epoch_cost`), what turns its epochs into training time.

    Each panel draws at most `MAX_CURVES` variants plus the scratch baseline in grey, on its own x range
    (a frozen variant's 250 epochs would squeeze a fine-tuned one's 20 into a sliver) and a shared y axis."""
    chosen = panels(results)
    baseline = next((r for r in results if r.strategy == "scratch"), None)
    columns = min(3, len(chosen))
    rows = -(-len(chosen) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows), sharey=True, squeeze=False)
    for ax, (name, members) in zip(axes.flat, chosen, strict=False):
        if baseline is not None and baseline not in members:
            frame = histories[baseline.variant]
            ax.plot(frame[x], 100 * frame["val_accuracy"], color="#aaaaaa", linewidth=1.2,
                    label=f"{baseline.variant} (baseline) · {1000 * speed.epoch_cost(baseline):.1f} ms")
        for i, result in enumerate(members):
            frame = histories[result.variant]
            origin = "" if result.init_from == BUILTIN_INIT else f" ({result.init_from})"
            ax.plot(frame[x], 100 * frame["val_accuracy"], linewidth=1.4, label=f"{_label(result)}{origin} · {1000 * speed.epoch_cost(result):.1f} ms",
                    color=plt.cm.tab10.colors[i])
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(chosen):]:
        ax.set_visible(False)
    for column in range(columns):  # the lowest visible panel of each column names the x axis
        axes[(len(chosen) - 1 - column) // columns, column].set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    return png(fig)


def accuracy_bars(results: Sequence[VariantResult], title: str) -> bytes:
    """Final test accuracy (scored once) with its 95 % interval; unconverged variants hatched."""
    ordered = sorted(results, key=lambda r: r.mean("target_accuracy"))
    stats = [r.summary("target_accuracy") for r in ordered]
    means = [100 * s["mean"] for s in stats]
    errors = [0 if s["ci95_high"] is None else 50 * (s["ci95_high"] - s["ci95_low"]) for s in stats]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ordered) + 1.3))
    bars = ax.barh([_label(r) for r in ordered], means, xerr=errors, capsize=3,
                   color=[STRATEGY_COLORS.get(r.strategy, "#4c72b0") for r in ordered])
    for bar, result in zip(bars, ordered, strict=True):
        if not result.converged:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set(xlabel="test accuracy (%), scored once on the weights chosen on validation — whiskers: 95% CI",
           title=title, xlim=(max(0, min(means) - 10), 100))
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def strategy_legend(ax: plt.Axes, strategies: Sequence[str], **where: Any) -> None:
    """A legend naming each strategy's colour (the strategy table's), for the strategies drawn."""
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=STRATEGY_COLORS.get(s, "#4c72b0"), label=s) for s in dict.fromkeys(strategies)],
              fontsize=8, **where)


def time_bars(results: Sequence[VariantResult], title: str) -> bytes:
    """Each variant's cost of an epoch, the median over repetitions (`speed.epoch_cost`, as the speed verdicts use it)."""
    ordered = sorted(results, key=speed.epoch_cost)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ordered) + 1.3))
    ax.barh([_label(r) for r in ordered], [1000 * speed.epoch_cost(r) for r in ordered],
            color=[STRATEGY_COLORS.get(r.strategy, "#4c72b0") for r in ordered])
    ax.set(xlabel="milliseconds per training epoch (one core), median over repetitions", title=title)
    strategy_legend(ax, [r.strategy for r in ordered], loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def forest(rows: Sequence[tuple[str, str, Mapping[str, Mapping[str, Any] | None]]], sets: Mapping[str, str], title: str) -> bytes:
    """Each variant's gain over scratch with its paired 95 % interval, one panel per test set, sorted by the first set's gain.

    `rows`: (variant, strategy, {set: corrected verdict}); a filled dot is a significant verdict (Holm), a hollow one not.
    """
    first = next(iter(sets))
    ordered = sorted(rows, key=lambda row: row[2][first]["mean_difference"] if row[2].get(first) else -np.inf)
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets) + 1.5, 0.21 * len(ordered) + 1.3), sharey=True, squeeze=False)
    for ax, (key, name) in zip(axes[0], sets.items(), strict=True):
        for y, (_, strategy, verdicts) in enumerate(ordered):
            verdict = verdicts.get(key)
            if verdict is None:
                continue
            mean = 100 * verdict["mean_difference"]
            color = STRATEGY_COLORS.get(strategy, "#4c72b0")
            if verdict["ci95_low"] is not None:
                ax.plot([100 * verdict["ci95_low"], 100 * verdict["ci95_high"]], [y, y], color=color, lw=2)
            ax.plot([mean], [y], "o", ms=7, color=color, mfc=color if verdict["significant"] else "white", mew=2)
        ax.axvline(0, color="#555555", lw=1)
        ax.set(xlabel="gain over scratch (points), paired 95 % CI", title=name)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(ordered)), [row[0] for row in ordered])
    strategy_legend(axes[0][-1], [row[1] for row in ordered], loc="center left", bbox_to_anchor=(1.02, 0.5))  # off the dots
    fig.suptitle(title)
    fig.tight_layout()
    return png(fig)


SELFFER = "selffer-"  # a transferability series with layers from the target's own network (dashed)


def sweep_figure(summary: Sequence[Mapping[str, Any]], xlabel: str, title: str, log_x: bool = False) -> bytes:
    """One line per series (mean test accuracy) with its 95 % CI band; points with unconverged runs marked ✕."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    marked, colors = False, {}
    for series in dict.fromkeys(row["series"] for row in summary):
        line = sorted((row for row in summary if row["series"] == series), key=lambda row: row["x"])
        xs = [row["x"] for row in line]
        ys = [100 * row["target_accuracy"] for row in line]
        # a selffer control (BnB) dashed, in the colour of its source-network line (AnB)
        control = series.removeprefix(SELFFER) if series.startswith(SELFFER) else None
        style: dict[str, Any] = {"marker": "o"}
        if control is not None:
            style = {"linestyle": "--", "marker": "s", **({"color": colors[control]} if control in colors else {})}
        drawn = ax.plot(xs, ys, label=series, **style)[0]
        colors[series] = drawn.get_color()
        low = [np.nan if row["ci95_low"] is None else 100 * row["ci95_low"] for row in line]
        high = [np.nan if row["ci95_high"] is None else 100 * row["ci95_high"] for row in line]
        ax.fill_between(xs, low, high, color=drawn.get_color(), alpha=0.2, linewidth=0)
        bad = [(x, y) for x, y, row in zip(xs, ys, line, strict=True) if row.get("unconverged")]
        if bad:
            ax.scatter(*zip(*bad, strict=True), marker="x", s=90, color="#c44e52", zorder=5,
                       label=None if marked else "⚠ has unconverged runs (no claim)")
            marked = True
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
    grid_values = sorted({row["x"] for row in summary})
    ax.set_xticks(grid_values, [str(x) for x in grid_values])  # the grid's own values, not 10^k
    ax.set(xlabel=xlabel, ylabel="test accuracy (%) — band: 95% CI", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def sweep_figures(summaries: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]) -> list[Figure]:
    """The figure of every sweep given (name -> (its kind, its summary rows)), in the order given."""
    images = rendered([(sweep_figure, (summary, SWEEP_AXES[kind][1], f"{SWEEP_AXES[kind][0]} ({name})", SWEEP_AXES[kind][2]))
                       for name, (kind, summary) in summaries.items()])
    return [Figure(f"sweep_{name}", f"{SWEEP_AXES[kind][0]} (`{name}`): test accuracy per sweep point, mean over repetitions"
                   " (95% CI band; ✕: unconverged)", image) for (name, (kind, _)), image in zip(summaries.items(), images, strict=True)]
