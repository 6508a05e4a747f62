"""A sweep's output: the per-point summary of its per-run rows (`summarize_rows`, which `stages.sweep` writes), read back typed.

Kept apart from `sweeps` (which races the grid) so that the report, which only reads these
files, imports neither the training code nor TensorFlow, and its DVC deps stay its own.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transferlab import statistics
from transferlab.errors import DataError


def _number(text: str) -> float | None:
    return float(text) if text != "" else None


def load_summary(path: Path) -> list[dict[str, Any]]:
    """Read a summary CSV back with its types (an empty cell, as one seed leaves, is `None`)."""
    try:
        with Path(path).open(newline="") as handle:
            return [
                {"x": int(row["x"]), "series": row["series"], "target_accuracy": float(row["target_accuracy"]),
                 "std": _number(row["std"]), "ci95_low": _number(row["ci95_low"]), "ci95_high": _number(row["ci95_high"]),
                 "n": int(row["n"]), "unconverged": int(row["unconverged"])}
                for row in csv.DictReader(handle)
            ]
    except FileNotFoundError:
        raise DataError(f"{path}: sweep summary not found (run its stage first: dvc repro)") from None
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a sweep summary of this version ({type(error).__name__}: {error});"
                        " rerun its stage: dvc repro") from None


# The per-run columns the report's claims rest on (pairing, convergence, time to near best), with their types.
ROW_TYPES: dict[str, Callable[[str], Any]] = {
    "sweep": str, "x": int, "series": str, "repetition": int, "target_accuracy": float, "converged": lambda text: text == "True",
    "seconds_to_near_best": float,
}


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Read a sweep's per-run CSV (the rows of `run_sweep`) back: the `ROW_TYPES` columns, typed."""
    try:
        with Path(path).open(newline="") as handle:
            return [{key: parse(row[key]) for key, parse in ROW_TYPES.items()} for row in csv.DictReader(handle)]
    except FileNotFoundError:
        raise DataError(f"{path}: sweep runs not found (run its stage first: dvc repro)") from None
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a sweep's per-run file of this version ({type(error).__name__}: {error});"
                        " rerun its stage: dvc repro") from None


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
