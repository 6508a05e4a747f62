"""`make verify` on another platform: the same conclusions, and every mean inside its committed interval.

Bits differ between CPUs (SIMD paths round differently; training turns a last bit into another
stopping epoch), so a rebuild elsewhere is held to what the run concludes: every verdict of every
family, every list of the advice (best on each test set, safe, use) in `reports/conclusions.json`,
and every mean accuracy within the 95 % interval the committed run stated for it. One line per
difference, naming the file and the key.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from transferlab import paths
from transferlab.errors import TransferlabError
from transferlab.git import git
from transferlab.tools.verify import Difference, committed_tree, rebuilt_tree

CI_SUFFIX = "_ci95"  # `<mean>_ci95` beside each test set's mean in a variant's metrics file (`target_accuracy`, `shift_accuracy`, …)
NOT_COMPARED = "a source's or pretraining's single-run numbers and the per-epoch histories have no interval and are not compared"


def committed_platform(ref: str, repo: Path) -> dict[str, Any] | None:
    """The platform the run committed at `ref` recorded, or None where it recorded none."""
    try:
        return json.loads(git(["show", f"{ref}:{paths.CONCLUSIONS.as_posix()}"], repo)).get("platform")
    except TransferlabError:
        return None


def rebuilt_platform(repo: Path) -> dict[str, Any] | None:
    """The platform the working tree's report recorded (the rebuild's), or None where there is none."""
    try:
        return json.loads((repo / paths.CONCLUSIONS).read_text()).get("platform")
    except (OSError, ValueError, AttributeError):
        return None


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key != "platform":
                yield from _leaves(item, f"{path}: {key}" if path else str(key))
    else:
        yield path, json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value


def compare_conclusions(committed: str, rebuilt: str) -> tuple[int, list[Difference]]:
    """Every verdict and list, by its key path: (how many compared, the differences)."""
    old, new = dict(_leaves(json.loads(committed))), dict(_leaves(json.loads(rebuilt)))
    file = paths.CONCLUSIONS.as_posix()
    differences = [Difference(file, key, str(old.get(key, "(missing)")), str(new.get(key, "(missing)")))
                   for key in dict.fromkeys([*old, *new]) if old.get(key) != new.get(key)]
    return len(old), differences


def _inside(file: str, key: str, value: Any, interval: Any) -> Difference | None:
    low, high = interval
    if value is None or not isinstance(value, (int, float)):
        return Difference(file, key, f"in [{low}, {high}]", "(missing)")
    if not low <= value <= high:
        return Difference(file, key, f"mean in its 95 % interval [{100 * low:.2f}, {100 * high:.2f}] %", f"{100 * value:.2f} %")
    return None


def compare_means(file: str, committed: str, rebuilt: str) -> tuple[int, list[Difference]]:
    """A metrics file's means against the committed 95 % intervals: JSON `<mean>_ci95`, CSV `ci95_low`/`ci95_high`."""
    compared, differences = 0, []
    if file.endswith(".json"):
        old, new = json.loads(committed), json.loads(rebuilt)
        for name in (key.removesuffix(CI_SUFFIX) for key in old if key.endswith(CI_SUFFIX)):  # every test set it holds
            interval = old[f"{name}{CI_SUFFIX}"]
            if isinstance(interval, list) and None not in interval:
                compared += 1
                if (found := _inside(file, name, new.get(name), interval)) is not None:
                    differences.append(found)
        return compared, differences
    old_rows, new_rows = list(csv.DictReader(io.StringIO(committed))), list(csv.DictReader(io.StringIO(rebuilt)))
    if not old_rows or "ci95_low" not in old_rows[0]:
        return 0, []
    if len(old_rows) != len(new_rows):
        return 1, [Difference(file, "rows", str(len(old_rows)), str(len(new_rows)))]
    for number, (old, new) in enumerate(zip(old_rows, new_rows), start=1):
        if "" in (old["ci95_low"], old["ci95_high"]):
            continue
        compared += 1
        where = f"row {number} ({', '.join(f'{k} {old[k]}' for k in ('x', 'series') if k in old)}).target_accuracy"
        if (found := _inside(file, where, float(new["target_accuracy"]), (float(old["ci95_low"]), float(old["ci95_high"])))):
            differences.append(found)
    return compared, differences


def check(ref: str, repo: Path) -> tuple[int, list[Difference], str]:
    """(how many conclusions and means were compared, the differences, what was not compared)."""
    roots = [paths.METRICS, paths.PLOTS, paths.CONCLUSIONS]  # the sweep summaries (with intervals) are under plots/
    committed = committed_tree(ref, roots, repo)
    if paths.CONCLUSIONS.as_posix() not in committed:
        raise TransferlabError(f"{ref}: no {paths.CONCLUSIONS} committed: no conclusions to compare (run the report stage)")
    rebuilt = rebuilt_tree(roots, repo)
    compared, differences = 0, []
    for file in sorted(committed):
        if file not in rebuilt:
            differences.append(Difference(file, "(file)", "present", "(missing)"))
            continue
        counted, found = (compare_conclusions if file == paths.CONCLUSIONS.as_posix()
                          else lambda old, new, file=file: compare_means(file, old, new))(committed[file], rebuilt[file])
        compared += counted
        differences += found
    return compared, differences, NOT_COMPARED
