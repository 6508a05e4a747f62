"""The layer check: each folder of the package may import only the folders below it.

`python -m transferlab.tools.layers` prints, for each folder, the folders its modules import, and
exits non-zero on an import against the order below (or on TensorFlow imported at module level
where the design says a stage must not pay for it). The order, bottom first:

- the package root: shared leaves (errors, paths, atomic writes, statistics, git);
- `launch/`: how a stage process starts and ends;
- `config/`: the params schema and the strategy table;
- `data/`: loading, splitting and corrupting images, the tasks, the leak check;
- `models/`: building and loading networks;
- `training/`: the race, the engine, early stopping, sweeps, pretraining, typed results;
- `tracking/`: MLflow runs and the model registry;
- `report/`: verdicts, tables, figures, the recommendation;
- `tools/`: operations beside the experiment (verify, the server, generators, this check).

Imports are read from the source (`ast`), also those inside functions. Only `training/` and
`models/` may import TensorFlow or Keras at module level; elsewhere it is imported inside the
function that needs it, so validate, the prepare stages and the report start without it.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "transferlab"
ORDER = ("", "launch", "config", "data", "models", "training", "tracking", "report", "tools")  # "" is the root
HEAVY = ("tensorflow", "keras")
MAY_IMPORT_HEAVY = {"models", "training"}


@dataclass(frozen=True)
class Import:
    module: Path  # the importing file, relative to the package
    target: str  # the imported module, dotted
    line: int
    top_level: bool


def folder_of(dotted: str) -> str:
    """The layer of a `transferlab.…` module: its first sub-package, or "" for a module at the root."""
    parts = dotted.split(".")[1:]
    return parts[0] if parts and parts[0] in ORDER[1:] else ""


def _folder_of_file(relative: Path) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else ""


def imports(package_dir: Path) -> Iterator[Import]:
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                inside = node.module.split(".")[0] == PACKAGE  # `from transferlab.x import y` names y (a module or a name in x)
                names = [f"{node.module}.{alias.name}" for alias in node.names] if inside else [node.module]
            else:
                continue
            for name in names:
                yield Import(path.relative_to(package_dir), name, node.lineno, id(node) in top)


def violations(package_dir: Path) -> tuple[dict[str, set[str]], list[str]]:
    """({folder: folders it imports}, one line per import against the order)."""
    uses: dict[str, set[str]] = {folder: set() for folder in ORDER}
    found = []
    for item in imports(package_dir):
        here = _folder_of_file(item.module)
        if here not in ORDER:
            found.append(f"{PACKAGE}/{item.module}: folder {here!r} is not in the layer order")
            continue
        root = item.target.split(".")[0]
        if root == PACKAGE and item.target != PACKAGE:
            there = folder_of(item.target)
            if there != here:
                uses[here].add(there or "(root)")
            if ORDER.index(there) > ORDER.index(here):
                found.append(f"{PACKAGE}/{item.module}:{item.line}: imports {item.target} ({there or 'root'} is above {here or 'root'})")
        elif root in HEAVY and item.top_level and here not in MAY_IMPORT_HEAVY:
            found.append(f"{PACKAGE}/{item.module}:{item.line}: imports {root} at module level (only {', '.join(sorted(MAY_IMPORT_HEAVY))} may)")
    return uses, found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    package_dir = Path(args[0]) if args else Path(__file__).resolve().parents[1]
    uses, found = violations(package_dir)
    for folder in ORDER:
        print(f"{folder or '(root)':>9} imports {', '.join(sorted(uses[folder])) or 'nothing of the package'}")
    for line in found:
        print(line, file=sys.stderr)
    print(f"{len(found)} import(s) against the layer order" if found else "every import follows the layer order")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
