"""Does a rebuild reproduce the committed run? The check behind `make verify` and CI.

    python -m transferlab.tools.verify [--ref HEAD] [--mode auto|exact|conclusions] [--tolerance 0] [metrics plots …]

Bits are per platform; conclusions must not be. `--mode auto` (the default) reads the platform
the committed run recorded (`reports/conclusions.json`, `transferlab.tools.machine`) and compares it
with the rebuild's (the working tree's conclusions file; this machine's where there is none):

- **exact** (the same platform): every metrics and history file as committed at a git ref against
  the working tree's (freshly rebuilt) copy, each JSON value by its key path, each CSV cell by row and
  column, and the conclusions file. Every accuracy, loss, count, epoch, chosen setting and stop reason
  must be equal (exactly, unless `--tolerance` allows a relative difference); a file only on one side
  is a difference too.
- **conclusions** (another platform): every verdict (✔ / ✘ / –) of every family, every "best" list
  and the recommendation in `reports/conclusions.json` must be the same, and every mean accuracy
  with a committed 95 % interval (`target_accuracy_ci95`, `shift_accuracy_ci95`, each sweep point's
  `ci95_low`/`ci95_high`) must lie inside that interval. Numbers of one run with no interval
  (a source model's accuracy, the histories) are not compared there, and it says so.

Exit 0 when the run reproduced, 1 with one line per difference, 2 on bad input (no git, a bad ref).

What may differ between two honest runs is excluded by key name, here and only here
(`is_volatile`): wall-clock timings, MLflow run and experiment ids and links, registry version
numbers, file hashes, dates. No TensorFlow import: it runs in a second.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab import paths
from transferlab.errors import TransferlabError
from transferlab.git import git
from transferlab.launch.cli import run_main

# per-variant numbers, what each run raced and chose (its recipe, budget, chosen settings), their histories, the verdicts
DEFAULT_ROOTS = (paths.METRICS, paths.RUNS, paths.PLOTS, paths.CONCLUSIONS)
# A key is volatile when one of its words (split at `_`, `-`, `.`, spaces) is one of these ...
VOLATILE_WORDS = frozenset({
    "seconds", "elapsed", "time", "timestamp", "duration", "date",  # timings and dates
    "sha256", "md5", "hash", "digest",  # file hashes
    "url", "uri", "link",  # links into a tracking server
    "version",  # registry version numbers (`registered_version`)
    "platform",  # the machine that computed a run (`machine.record`): what decides the mode, not a result
})
VOLATILE_FIRST_WORDS = frozenset({"mlflow"})  # ... or its first word is one of these (mlflow_run_id, mlflow_experiment_id)
VOLATILE_ENDINGS = (("run", "id"),)  # ... or it ends with these words (run_id, parent_run_id)
SHOWN_LENGTH = 60


def _words(key: str) -> tuple[str, ...]:
    return tuple(word for word in re.split(r"[_\-.\s]+", key.lower()) if word)


def is_volatile(key: str) -> bool:
    """Is a JSON key or CSV column one that may differ between two runs of the same code on the same data?"""
    words = _words(key)
    if not words:
        return False
    return (
        bool(VOLATILE_WORDS.intersection(words))
        or words[0] in VOLATILE_FIRST_WORDS
        or any(words[-len(ending):] == ending for ending in VOLATILE_ENDINGS)
    )


@dataclass(frozen=True)
class Difference:
    file: str
    key: str  # a JSON key path (`repetitions[2].target_accuracy`), a CSV cell (`row 3.val_loss`), or `(file)`
    committed: str
    rebuilt: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: committed {self.committed}, rebuilt {self.rebuilt}"


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN_LENGTH else text[: SHOWN_LENGTH - 1] + "…"


def _equal(committed: Any, rebuilt: Any, tolerance: float) -> bool:
    if type(committed) is not type(rebuilt) and not {type(committed), type(rebuilt)} <= {int, float}:
        return False  # True is not 1, "1" is not 1
    if isinstance(committed, float) or isinstance(rebuilt, float):
        if math.isnan(committed) and math.isnan(rebuilt):
            return True
        return math.isclose(committed, rebuilt, rel_tol=tolerance, abs_tol=0.0) if tolerance else committed == rebuilt
    return committed == rebuilt


def _json_leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, value) of every leaf, skipping volatile keys and everything below them."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not is_volatile(str(key)):
                yield from _json_leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        yield f"{path}[]" if path else "[]", len(value)  # the length, so a missing element reads as such
        for index, item in enumerate(value):
            yield from _json_leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def compare_json(file: str, committed: str, rebuilt: str, tolerance: float = 0.0) -> list[Difference]:
    old, new = dict(_json_leaves(json.loads(committed))), dict(_json_leaves(json.loads(rebuilt)))
    return _compare_values(file, old, new, tolerance)


def _csv_cells(text: str) -> dict[str, Any]:
    rows = list(csv.DictReader(io.StringIO(text)))
    cells: dict[str, Any] = {"rows": len(rows)}
    for number, row in enumerate(rows, start=1):
        for column, value in row.items():
            if column is not None and not is_volatile(column):
                cells[f"row {number}.{column}"] = _number(value)
    return cells


def _number(text: str | None) -> Any:
    """A CSV cell as a number where it is one, so `--tolerance` applies; else the text."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def compare_csv(file: str, committed: str, rebuilt: str, tolerance: float = 0.0) -> list[Difference]:
    return _compare_values(file, _csv_cells(committed), _csv_cells(rebuilt), tolerance)


def _compare_values(file: str, old: Mapping[str, Any], new: Mapping[str, Any], tolerance: float) -> list[Difference]:
    differences = []
    for key in sorted(set(old) | set(new), key=_natural):
        if key not in new:
            differences.append(Difference(file, key, _shown(old[key]), "(missing)"))
        elif key not in old:
            differences.append(Difference(file, key, "(missing)", _shown(new[key])))
        elif not _equal(old[key], new[key], tolerance):
            differences.append(Difference(file, key, _shown(old[key]), _shown(new[key])))
    return differences


def _natural(key: str) -> list[Any]:
    """`row 2` before `row 10`."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", key)]


def compare_trees(committed: Mapping[str, str], rebuilt: Mapping[str, str], tolerance: float = 0.0) -> list[Difference]:
    """Differences between two {relative path: text} trees of metrics files."""
    differences = []
    for file in sorted(set(committed) | set(rebuilt)):
        if file not in rebuilt:
            differences.append(Difference(file, "(file)", "present", "(missing)"))
        elif file not in committed:
            differences.append(Difference(file, "(file)", "(not committed)", "present"))
        elif file.endswith(".json"):
            differences.extend(compare_json(file, committed[file], rebuilt[file], tolerance))
        else:
            differences.extend(compare_csv(file, committed[file], rebuilt[file], tolerance))
    return differences


def committed_tree(ref: str, roots: Sequence[Path], repo: Path) -> dict[str, str]:
    """{path: text} of the files under `roots` as committed at `ref`."""
    listed = git(["ls-tree", "-r", "--name-only", ref, "--", *map(str, roots)], repo).splitlines()
    return {name: git(["show", f"{ref}:{name}"], repo) for name in listed if name.endswith((".json", ".csv"))}


def rebuilt_tree(roots: Sequence[Path], repo: Path) -> dict[str, str]:
    """{path: text} of the files under `roots` (folders or files) in the working tree."""
    found = [file for root in roots for file in ([repo / root] if (repo / root).is_file() else sorted((repo / root).rglob("*")))]
    return {file.relative_to(repo).as_posix(): file.read_text()
            for file in found if file.is_file() and file.suffix in (".json", ".csv")}


def verify(ref: str = "HEAD", roots: Sequence[Path] = DEFAULT_ROOTS, repo: Path = Path("."), tolerance: float = 0.0) -> tuple[int, list[Difference]]:
    """(files compared, differences) between `ref`'s committed metrics and the working tree's."""
    committed = committed_tree(ref, roots, repo)
    if not committed:
        raise TransferlabError(f"{ref}: no committed metrics under {', '.join(map(str, roots))}: nothing to verify against")
    rebuilt = rebuilt_tree(roots, repo)
    return len(set(committed) | set(rebuilt)), compare_trees(committed, rebuilt, tolerance)


def tolerance_value(text: str) -> float:
    """`--tolerance`: a finite relative difference ≥ 0 (argparse prints the one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite relative difference >= 0 (0: exact)")
    return value


def main(argv: list[str]) -> None:
    from transferlab.tools import crosscheck, machine

    parser = argparse.ArgumentParser(prog="python -m transferlab.tools.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, default=list(DEFAULT_ROOTS),
                        help="folders or files to compare (default: metrics runs plots reports/conclusions.json)")
    parser.add_argument("--ref", default="HEAD", help="the git ref holding the committed run (default: HEAD)")
    parser.add_argument("--mode", choices=("auto", "exact", "conclusions"), default="auto",
                        help="exact on the committed run's platform, conclusions elsewhere (default: auto, by the platform)")
    parser.add_argument("--tolerance", type=tolerance_value, default=0.0,
                        help="exact mode: relative difference allowed in numbers (default: 0, exact)")
    args = parser.parse_args(argv)
    mode = args.mode
    if mode == "auto":
        committed = crosscheck.committed_platform(args.ref, Path("."))  # None: a run from before platforms were recorded
        rebuilt = crosscheck.rebuilt_platform(Path(".")) or machine.record()  # where the rebuild's report ran, else here
        moved = machine.differences(committed, rebuilt) if committed is not None else []
        mode = "exact" if not moved else "conclusions"
        if moved:
            print(f"verify: the rebuild's platform is not the one that made the committed run ({'; '.join(moved)}):"
                  " comparing conclusions, not bits")
    if mode == "conclusions":
        compared, differences, skipped = crosscheck.check(args.ref, Path("."))
        if differences:
            print(f"verify: {len(differences)} conclusion(s) differ between the run committed at {args.ref} and the rebuild:")
            for difference in differences:
                print(f"  {difference}")
            sys.exit(1)
        print(f"verify: {compared} verdicts, lists and means reproduce the conclusions of {args.ref} ({skipped})")
        return
    files, differences = verify(args.ref, args.roots, Path("."), args.tolerance)
    where = " ".join(map(str, args.roots))
    if differences:
        print(f"verify: {len(differences)} difference(s) between {where} as committed at {args.ref} and as rebuilt:")
        for difference in differences:
            print(f"  {difference}")
        print("(timings, MLflow ids and links, registry versions, hashes, dates and the platform are not compared:"
              " transferlab.tools.verify.is_volatile)")
        sys.exit(1)
    print(f"verify: {files} files under {where} reproduce {args.ref} exactly" + (f" (tolerance {args.tolerance})" if args.tolerance else ""))


if __name__ == "__main__":
    run_main(main)
