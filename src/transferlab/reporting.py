"""The comparison report: tables (pandas), statistics, plots (matplotlib), Markdown + self-contained HTML.

Reads only the stages' metrics and history files; never retrains, never needs MLflow. Every
sentence of the summary is computed from those numbers. No TensorFlow import.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from transferlab import statistics  # noqa: E402


@dataclass
class Figure:
    name: str  # file stem, e.g. "accuracy_per_epoch"
    caption: str
    png: bytes


@dataclass
class Report:
    """An ordered list of blocks, rendered twice: Markdown (GitHub, CI comments) and HTML (one file)."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def figure(self, figure: Figure) -> None:
        self.blocks.append(("figure", figure))

    @property
    def figures(self) -> list[Figure]:
        return [value for kind, value in self.blocks if kind == "figure"]

    def markdown(self, figure_dir: str) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "table":
                out += [value.to_markdown(index=False), ""]
            else:
                out += [f"![{value.caption}]({figure_dir}/{value.name}.png)", "", f"*{value.caption}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(value).replace('**', '')}</p>")
            elif kind == "table":
                body.append(value.to_html(index=False, escape=True, border=0, classes="results"))
            else:
                data = base64.b64encode(value.png).decode()
                body.append(
                    f'<figure><img alt="{html.escape(value.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(value.caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table.results{border-collapse:collapse;font-size:0.9em;margin:1em 0}"
            "table.results th,table.results td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}"
            "table.results th{background:#f4f4f4}img{max-width:100%}figcaption{color:#555;font-size:0.9em}"
        )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


def png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def accuracy_cell(row: dict[str, Any]) -> str:
    """`88.1` for one seed, `88.1 ± 0.9` (half-width of the 95% CI) for several."""
    if row.get("target_accuracy_ci95_high") is None:
        return percent(row["target_accuracy"])
    half = (row["target_accuracy_ci95_high"] - row["target_accuracy_ci95_low"]) / 2
    return f"{percent(row['target_accuracy'])} ± {100 * half:.1f}"


def paired_vs(row: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """Paired difference of accuracy, repetition by repetition, against the baseline variant."""
    if baseline is None or row["variant"] == baseline["variant"]:
        return None
    mine = {r["repetition"]: r["target_accuracy"] for r in row["repetitions"]}
    theirs = {r["repetition"]: r["target_accuracy"] for r in baseline["repetitions"]}
    common = sorted(set(mine) & set(theirs))
    if not common:
        return None
    return statistics.paired_difference([mine[i] for i in common], [theirs[i] for i in common])


def difference_cell(diff: dict[str, Any] | None) -> str:
    if diff is None:
        return "–"
    text = f"{100 * diff['mean_difference']:+.1f}"
    if diff["ci95_low"] is not None:
        text += f" [{100 * diff['ci95_low']:+.1f}, {100 * diff['ci95_high']:+.1f}]"
        text += " ✔" if diff["significant"] and diff["mean_difference"] > 0 else " ✘" if diff["significant"] else ""
    return text


def comparison_table(rows: Sequence[dict[str, Any]], baseline: dict[str, Any] | None, run_link: str) -> pd.DataFrame:
    """One row per variant, sorted by mean target accuracy."""
    table = []
    for row in sorted(rows, key=lambda r: -r["target_accuracy"]):
        diff = paired_vs(row, baseline)
        table.append({
            "variant": row["variant"],
            "strategy": row["strategy"],
            "init from": row["init_from"],
            "reused / frozen / new": f"{row['reuse_layers']} / {row['frozen_layers']} / {row['new_layers']}",
            "trainable params": f"{row['trainable_params']:,}",
            "frozen params": f"{row['frozen_params']:,}",
            "accuracy %": accuracy_cell(row),
            "vs scratch (pp)": difference_cell(diff),
            "p": "–" if diff is None or diff["p_value"] is None else f"{diff['p_value']:.3f}",
            "train s": f"{row['train_seconds']:.2f}",
            "s / epoch": f"{row['seconds_per_epoch']:.4f}",
            "MLflow run": run_link.format(run=row["mlflow_run_id"], short=row["mlflow_run_id"][:8]),
        })
    return pd.DataFrame(table)


def cache_speedups(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(cache variant, its freeze twin, s/epoch ratio) for every cache variant with an identical freeze variant."""
    shape = ("init_from", "target", "reuse_layers", "frozen_layers", "new_layers", "trainable_params", "frozen_params")
    found = []
    for cached in (r for r in rows if r["strategy"] == "cache"):
        for frozen in (r for r in rows if r["strategy"] == "freeze"):
            if all(cached[key] == frozen[key] for key in shape) and cached["seconds_per_epoch"] > 0:
                found.append((cached["variant"], frozen["variant"], frozen["seconds_per_epoch"] / cached["seconds_per_epoch"]))
                break
    return found


def summary(rows: Sequence[dict[str, Any]], baseline: dict[str, Any] | None, speedups: list[tuple[str, str, float]]) -> str:
    """The generated 'what this run shows' paragraph: best variant, its margin over scratch, cache speed-up."""
    best = max(rows, key=lambda r: r["target_accuracy"])
    seeds = best.get("seeds", 1)
    text = f"Best variant: **{best['variant']}** ({best['strategy']} from {best['init_from']}) at {accuracy_cell(best)} % target accuracy"
    text += f" over {seeds} seed{'s' if seeds != 1 else ''}."
    diff = paired_vs(best, baseline)
    if baseline is None:
        text += " No scratch baseline is configured for this target."
    elif diff is None:
        text += " It is the scratch baseline itself: no reuse strategy beat training from scratch."
    elif diff["ci95_low"] is None:
        text += (f" Its margin over scratch is {100 * diff['mean_difference']:+.1f} points from a single seed,"
                 " too little evidence to call it better (set transfer.seeds > 1).")
    else:
        interval = f"{100 * diff['mean_difference']:+.1f} points (95% CI [{100 * diff['ci95_low']:+.1f}, {100 * diff['ci95_high']:+.1f}])"
        if diff["significant"] and diff["mean_difference"] > 0:
            text += f" It is better than scratch by {interval}."
        else:
            text += f" Its margin over scratch, {interval}, is not significant: the interval includes zero."
    for cached, frozen, ratio in speedups:
        text += f" Caching the frozen layers ({cached}) made an epoch {ratio:.1f}x as fast as {frozen}, with the same result."
    return text


def accuracy_curves(histories: dict[str, pd.DataFrame], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors, styles = plt.cm.tab20.colors, ("-", "--", ":", "-.")
    for i, (name, frame) in enumerate(histories.items()):
        ax.plot(frame["epoch"], 100 * frame["test_accuracy"], label=name, linewidth=1.5,
                color=colors[i % len(colors)], linestyle=styles[(i // len(colors)) % len(styles)])
    ax.set(xlabel="epoch", ylabel="target test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return png(fig)


def accuracy_bars(rows: Sequence[dict[str, Any]], title: str) -> bytes:
    ordered = sorted(rows, key=lambda r: r["target_accuracy"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ordered) + 1.2))
    means = [100 * r["target_accuracy"] for r in ordered]
    errors = [
        0 if r.get("target_accuracy_ci95_high") is None else 50 * (r["target_accuracy_ci95_high"] - r["target_accuracy_ci95_low"])
        for r in ordered
    ]
    colors = ["#999999" if r["strategy"] == "scratch" else "#4c72b0" for r in ordered]
    ax.barh([r["variant"] for r in ordered], means, xerr=errors, color=colors, capsize=3)
    ax.set(xlabel="target test accuracy (%) — bars: 95% CI", title=title, xlim=(max(0, min(means) - 10), 100))
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def time_bars(rows: Sequence[dict[str, Any]], title: str) -> bytes:
    ordered = sorted(rows, key=lambda r: r["seconds_per_epoch"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ordered) + 1.2))
    colors = {"cache": "#dd8452", "freeze": "#4c72b0"}
    ax.barh([r["variant"] for r in ordered], [1000 * r["seconds_per_epoch"] for r in ordered],
            color=[colors.get(r["strategy"], "#999999") for r in ordered])
    ax.set(xlabel="milliseconds per training epoch (orange: cache, blue: freeze)", title=title)
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def write(report: Report, markdown_path: Path, html_path: Path) -> list[Path]:
    """Write the Markdown (with its PNGs beside it) and the self-contained HTML; returns every file written."""
    from transferlab.artifacts import atomic_path

    figure_dir = markdown_path.parent / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for figure in report.figures:
        path = figure_dir / f"{figure.name}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(figure.png)
        written.append(path)
    for path, text in ((markdown_path, report.markdown("figures")), (html_path, report.html())):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written.append(path)
    return written
