"""The report's section *What changed since the previous committed run*: a `dvc metrics diff` in words.

Per variant, the accuracy on each test set (`evaluations`) of this run against the metrics file as committed at
`HEAD` (`git show HEAD:metrics/transfer/<variant>.json`), with that commit's short sha and date.
It depends on the git history, not on the run, so it is written into the report only and never
into `reports/conclusions.json` (a function of the run). Without git or a commit it says so in one
line; it never stops the report. No TensorFlow, no DVC: git's own command line.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab import paths
from transferlab.git import git_or_none
from transferlab.report import render
from transferlab.training.results import VariantResult

HEADING = "What changed since the previous committed run"
MOVED = 0.0005  # a change the report's one decimal shows (0.05 points); smaller is "nothing moved"
SETS = {"target_accuracy": "test"}  # the metrics files' keys, the table's words: the test set's; the report adds the others


@dataclass(frozen=True)
class Commit:
    sha: str  # short
    date: str  # the commit date, YYYY-MM-DD


def commit_of(ref: str = "HEAD", repo: Path = Path(".")) -> Commit | None:
    """The commit `ref` names, or None outside a git repository, without git, or before the first commit."""
    found = git_or_none(["log", "-1", "--format=%h %cs", ref, "--"], repo)
    if not found or not found.strip():
        return None
    sha, date = found.split()
    return Commit(sha, date)


def committed_metrics(ref: str, variant: str, repo: Path = Path(".")) -> dict[str, Any] | None:
    """The variant's metrics file as committed at `ref`, or None where that commit has none (or holds no JSON)."""
    text = git_or_none(["show", f"{ref}:{paths.variant_metrics(variant).as_posix()}"], repo)  # paths are the repository root's
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def committed_variants(ref: str, repo: Path = Path(".")) -> list[str]:
    """The variants whose metrics files the commit holds."""
    listed = git_or_none(["ls-tree", "--name-only", f"{ref}:{paths.variant_metrics('x').parent.as_posix()}"], repo) or ""
    return [Path(name).stem for name in listed.split() if name.endswith(".json")]


def _moved(now: float | None, then: float | None) -> bool:
    if now is None or then is None:
        return (now is None) != (then is None)
    return abs(now - then) >= MOVED


def diff_rows(results: Sequence[VariantResult], ref: str = "HEAD", repo: Path = Path("."),
              sets: Mapping[str, str] = SETS) -> tuple[list[dict[str, Any]], list[str]]:
    """(one row per variant whose accuracy on a test set of `sets` moved, the variants new since the commit)."""
    rows, new = [], []
    for result in results:
        then = committed_metrics(ref, result.variant, repo)
        if then is None:
            new.append(result.variant)
            continue
        now = result.to_json()
        pairs = {name: (now.get(key), then.get(key)) for key, name in sets.items()}
        if any(_moved(*pair) for pair in pairs.values()):
            rows.append({"variant": result.variant, **pairs})
    return rows, new


def _cells(name: str, pair: tuple[float | None, float | None], commit: Commit) -> dict[str, str]:
    now, then = pair
    change = "–" if now is None or then is None else render.pp(now - then)
    return {f"{name} % now": render.percent(now), f"{name} % at {commit.sha}": render.percent(then), f"{name} Δ points": change}


def section(report: render.Report, results: Sequence[VariantResult], ref: str = "HEAD", repo: Path = Path("."),
            sets: Mapping[str, str] = SETS) -> None:
    """The section: a table of what moved, or one sentence saying nothing did, or one line saying there is no commit.
    `sets`: {metrics key: the table's word} of every test set (the test set's, then each target's `evaluations`)."""
    report.heading(HEADING)
    commit = commit_of(ref, repo)
    if commit is None:
        report.paragraph(f"No previous run to compare with: git or its commit `{ref}` is not available here.")
        return
    rows, new = diff_rows(results, ref, repo, sets)
    words = list(sets.values())
    accuracy = " and ".join(filter(None, [", ".join(words[:-1]), words[-1]]))  # `test and shifted`
    configured = {result.variant for result in results}
    gone = [name for name in committed_variants(ref, repo) if name not in configured]
    against = f"commit `{commit.sha}` ({commit.date})"
    if not rows and not new and not gone:
        report.paragraph(f"Nothing moved: every variant's {accuracy} accuracy is what {against} recorded,"
                         f" to the report's 0.1 point.")
        return
    shown = [name for name in sets.values() if any(row[name] != (None, None) for row in rows)]
    moved = (f"{len(rows)} variant(s) moved by at least {100 * MOVED:.2f} points on a test set" if rows
             else f"no variant's {accuracy} accuracy moved")
    report.paragraph(f"Against {against}: {moved}"
                     + (f"; new since then: {', '.join(new)}" if new else "")
                     + (f"; no longer in this run: {', '.join(gone)}" if gone else "") + ".")
    if rows:
        table = [{"variant": row["variant"]} | {column: cell for name in shown for column, cell in _cells(name, row[name], commit).items()}
                 for row in rows]
        report.table(pd.DataFrame(table))
