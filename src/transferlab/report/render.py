"""The comparison report as blocks, rendered twice: Markdown (GitHub, CI comments) and one self-contained HTML file.

Also the few formats every table and sentence shares (percentages, intervals, run links), so a
number reads the same wherever it appears. Wording of the claims lives in `verdicts`, plots in
`figures`. Plain Python and pandas: no TensorFlow, no matplotlib.
"""
from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

import pandas as pd

DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` serves the local store


@dataclass(frozen=True)
class Figure:
    name: str  # file stem, e.g. "accuracy_per_epoch_mnist"
    caption: str
    png: bytes


@dataclass
class Report:
    """An ordered list of blocks: headings, paragraphs (inline Markdown), tables (DataFrames of strings), figures."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", text))

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
            if kind.startswith("h"):
                out += [f"{'#' * int(kind[1:])} {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "table":
                out += [value.to_markdown(index=False), ""]
            else:
                out += [f"![{value.caption}]({figure_dir}/{value.name}.png)", "", f"*{value.caption}*", ""]
        return "\n".join(out)

    def html(self, figure_dir: str = "figures") -> str:
        """The page, figures inline; each figure links to its full-size PNG in `figure_dir` (what `write` puts there),
        so a click (or a tap on a phone) opens it at full size to zoom."""
        body = [f"<h1>{inline_html(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind.startswith("h"):
                body.append(f"<{kind}>{inline_html(value)}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{inline_html(value)}</p>")
            elif kind == "table":
                body.append(html_table(value))
            else:
                data = base64.b64encode(value.png).decode()
                full = html.escape(f"{figure_dir}/{value.name}.png")
                body.append(
                    f'<figure><a href="{full}" title="open at full size"><img alt="{html.escape(value.caption)}"'
                    f' src="data:image/png;base64,{data}"></a>'
                    f"<figcaption>{inline_html(value.caption)} (<a href=\"{full}\">full size</a>)</figcaption></figure>"
                )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>\n'
            + "\n".join(body) + "\n</body></html>\n"
        )


# The page never scrolls sideways: cells wrap, and a table wider than the page scrolls inside its own box.
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1320px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
    ".table-wrap{max-width:100%;overflow-x:auto;margin:1em 0}"
    "table.results{border-collapse:collapse;font-size:0.82em}"
    "table.results th,table.results td{padding:3px 5px;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}"
    "table.results th{background:#f4f4f4;text-align:center}"
    "table.results td{white-space:nowrap}table.results td.long{white-space:normal;min-width:9em}"
    "table.results td:first-child{text-align:left;font-weight:600}"
    "table.results td:first-child,table.results th:first-child{position:sticky;left:0;background:#fff;z-index:1}"
    "table.results th:first-child{background:#f4f4f4}"
    "img{max-width:100%;height:auto}figure{margin:1.2em 0}figure>a{display:block;cursor:zoom-in}"
    "figcaption{color:#555;font-size:0.9em}"
    "code{background:#f4f4f4;padding:0 3px;border-radius:3px}a{color:#1f5fa8}"
)

SHORT_CELL = 22  # visible characters: shorter cells (numbers, intervals, names) never break; longer text wraps

_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(((?:https?://|#)[^)\s]*)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_EMPHASIS = re.compile(r"(?<![*\w])\*(?!\s)([^*]+?)\*(?![*\w])")


def inline_html(text: str) -> str:
    """The inline Markdown this report writes (`code`, [links](http…), **bold**, *emphasis*) as escaped HTML."""
    escaped = html.escape(str(text), quote=True)
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:  # code spans are literal: no links or bold inside them
        codes.append(f"<code>{match.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    out = _CODE.sub(keep_code, escaped)
    out = _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    out = _EMPHASIS.sub(r"<em>\1</em>", out)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], out)


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{inline_html(column)}</th>" for column in frame.columns)
    rows = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in frame.astype(str).itertuples(index=False))
    return f'<div class="table-wrap"><table class="results"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _cell(text: str) -> str:
    visible = _LINK.sub(r"\1", text)  # a run link shows its 8-character id, not its address
    return f'<td class="long">{inline_html(text)}</td>' if len(visible) > SHORT_CELL else f"<td>{inline_html(text)}</td>"


# -- shared formats -------------------------------------------------------------------------------

def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def accuracy_cell(stats: Mapping[str, Any]) -> str:
    """`88.1` for one repetition, `88.1 ± 0.9` (half-width of the 95 % t-interval) for several."""
    if stats.get("ci95_high") is None:
        return percent(stats["mean"])
    return f"{percent(stats['mean'])} ± {50 * (stats['ci95_high'] - stats['ci95_low']):.1f}"


def accuracy_text(stats: Mapping[str, Any]) -> str:
    """`88.1 % (95 % CI [87.2, 89.0])`: an accuracy claim always carries its interval."""
    if stats.get("ci95_high") is None:
        return f"{percent(stats['mean'])} % (one repetition, no interval)"
    return f"{percent(stats['mean'])} % (95 % CI [{percent(stats['ci95_low'])}, {percent(stats['ci95_high'])}])"


def pp(fraction: float) -> str:
    """A signed difference in percentage points, `+5.3`; one that rounds to zero is `+0.0`, never `-0.0`."""
    return f"{round(100 * fraction, 1) + 0.0:+.1f}"


def accuracy_short(stats: Mapping[str, Any]) -> str:
    """`88.1 % [87.2, 89.0]` for lists whose sentence already says the brackets are 95 % intervals."""
    if stats.get("ci95_high") is None:
        return f"{percent(stats['mean'])} % (one repetition)"
    return f"{percent(stats['mean'])} % [{percent(stats['ci95_low'])}, {percent(stats['ci95_high'])}]"


def difference_short(diff: Mapping[str, Any]) -> str:
    """`+5.3 [+3.9, +6.8] points`."""
    if diff["ci95_low"] is None:
        return f"{pp(diff['mean_difference'])} points (one repetition)"
    return f"{pp(diff['mean_difference'])} [{pp(diff['ci95_low'])}, {pp(diff['ci95_high'])}] points"


def difference_text(diff: Mapping[str, Any]) -> str:
    """`+5.3 points (paired 95 % CI [+3.9, +6.8])`."""
    text = f"{pp(diff['mean_difference'])} points"
    if diff["ci95_low"] is None:
        return text + " (one repetition, no interval)"
    return text + f" (paired 95 % CI [{pp(diff['ci95_low'])}, {pp(diff['ci95_high'])}])"


def difference_cell(diff: Mapping[str, Any] | None) -> str:
    """`+5.3 [+3.9, +6.8] ✔`: ✔ / ✘ when the paired interval excludes zero above / below."""
    if diff is None:
        return "–"
    text = f"{pp(diff['mean_difference'])}"
    if diff["ci95_low"] is not None:
        text += f" [{pp(diff['ci95_low'])}, {pp(diff['ci95_high'])}]"
        if diff["significant"]:
            text += " ✔" if diff["mean_difference"] > 0 else " ✘"
    return text


def seconds(value: float) -> str:
    return f"{value:#.3g} s"


def ui_address(tracking_uri: str | None) -> str:
    """The MLflow UI the run links point at: the tracking server itself when it is one, else the local `make ui`
    (`TRANSFERLAB_UI_ADDRESS`, which the Makefile sets from `UI_PORT`; an environment variable DVC does not track).

    Never with credentials: the report is committed and posted on pull requests, so a password
    (`user:pass@`), a token in the query string and a fragment are dropped.
    """
    if tracking_uri and urlparse(tracking_uri).scheme in ("http", "https"):
        return _public(tracking_uri)
    return _public(os.environ.get("TRANSFERLAB_UI_ADDRESS", "").strip() or DEFAULT_UI)


def _public(url: str) -> str:
    """`url` without userinfo, query string or fragment, and without a trailing slash."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="")).rstrip("/")


# MLflow 3's UI shows a run as a GenAI "evaluation" unless the page asks for the model-training
# view; the experiment's kind tag alone does not switch it (seen in MLflow 3.17's UI).
UI_VIEW = "?workflowType=machine_learning"


def run_link(ui: str, experiment_id: str, run_id: str) -> str:
    if not run_id:
        return "–"
    return f"[{run_id[:8]}]({_public(ui)}/#/experiments/{experiment_id or '0'}/runs/{run_id}{UI_VIEW})"


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
    for stale in set(figure_dir.glob("*.png")) - set(written):  # a figure this report no longer draws
        stale.unlink()
    for path, text in ((markdown_path, report.markdown("figures")), (html_path, report.html("figures"))):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written.append(path)
    return written


def network_text(network: Any) -> str:
    """A source network (`config.NetworkSpec`) in words: `DNN 300-50-50-50-50`, or `CNN conv 8-16 (BatchNormalization), dense 32`."""
    dense = "-".join(map(str, network.hidden_units))
    return f"CNN conv {'-'.join(map(str, network.conv))} (BatchNormalization), dense {dense}" if network.conv else f"DNN {dense}"
