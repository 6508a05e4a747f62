"""The dependency lists of the pipeline files, generated: no stage's list is kept by hand.

`python -m transferlab.tools.pipeline` (`make pipeline`) rewrites, in `dvc.yaml`, `inputs/dvc.yaml`
and `variants/dvc.yaml`, the lists DVC cannot derive itself, and leaves every other line (comments,
data, params, outputs) as written:

- each stage's **code**: the project files its command's module can import (`ast`, following every
  `import`, also those inside functions), so editing a file reruns exactly the stages that can run it;
- each **sweep**'s `metrics/transfer/*.json`: the `transfer@<variant>` stages whose race is one of the
  sweep's points (`sweeps.twin_metrics`), so DVC runs them first and the sweep reads their races;
- each **label-budget sweep**'s `variants.<name>` params and init models: DVC templates a value, never a
  list from a list (`sweeps.<name>.variants`);
- the **sweep stages** themselves: one `sweep_<name>` per entry of `sweeps:`, from its kind's template
  (`templates/sweep_<kind>.yaml`), between the two marker comments of `dvc.yaml`.

`--check` (what `make run` and the tests do) changes nothing and fails with one line per stale file.
No stage reads a pipeline file: the generator is the one home of these lists.
"""
from __future__ import annotations

import ast
import functools
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab import paths
from transferlab.config import LabelBudgetSweep, Params, load_params
from transferlab.errors import TransferlabError, scrub

PACKAGES = {"transferlab": Path("src/transferlab"), "stages": Path("stages")}
# How a stage process starts, not what it computes: a stage run through the warm stage server writes the
# same outputs as a cold one (tests/test_warm.py), so editing the launcher or its server reruns nothing; nor does
# editing the launcher's pre-flight (run before DVC starts, it reads no stage's input for a stage).
STARTS_ONLY = {Path("src/transferlab/launch/warm.py"), Path("src/transferlab/launch/stage_server.py"),
               Path("src/transferlab/launch/preflight.py")}
SWEEP_STAGE = "python -m stages.sweep "


def module_file(name: str, root: Path) -> Path | None:
    """The file of a project module (`transferlab.x.y`, `stages.z`), relative to `root`; None for third-party ones."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = PACKAGES[parts[0]].joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    return set(_imports(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=None)
def _imports(path: str, mtime_ns: int) -> frozenset[str]:
    """A file's imports, parsed once per version of it (every stage's closure walks the same files)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from transferlab import zoo`
    return frozenset(found)


def trivial(path: Path) -> bool:
    """A package marker holding nothing but a docstring carries no behaviour."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def closure(module: str, root: Path = Path(".")) -> set[Path]:
    """Every project file reachable by imports from `module` (importing a.b.c runs a/__init__ and a/b/__init__ too)."""
    todo, seen = [module], set()
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]), root)
            if path is not None and path not in seen:
                seen.add(path)
                todo += sorted(imported_modules(root / path))
    return seen


def code_deps(module: str, root: Path = Path(".")) -> list[str]:
    """What a stage running `python -m <module>` depends on as code: stages/ first, then the package."""
    files = [path for path in closure(module, root) if not trivial(root / path) and path not in STARTS_ONLY]
    return sorted((path.as_posix() for path in files), key=lambda name: (not name.startswith("stages/"), name))


def sweep_of(cmd: str, params: Params) -> tuple[str, Any] | None:
    """(name, entry) of the sweep a `python -m stages.sweep <name>` stage runs; None for other stages or a switched-off one."""
    if not cmd.startswith(SWEEP_STAGE) or (spec := params.sweeps.get(name := cmd.split()[-1])) is None:
        return None
    return name, spec


def sweep_twins(cmd: str, params: Params) -> list[str]:
    from transferlab.training import (
        sweeps,  # NumPy only; the grid needs the sweep's rules
    )

    found = sweep_of(cmd, params)
    return sweeps.twin_metrics(found[0], params) if found is not None else []


def budget_variants(cmd: str, params: Params) -> list[str]:
    """The variants a label-budget sweep races (none for other stages)."""
    found = sweep_of(cmd, params)
    return list(found[1].variants) if found is not None and isinstance(found[1], LabelBudgetSweep) else []


def label_budget_needs(cmd: str, params: Params) -> tuple[list[str], list[str]]:
    """(params keys, model files) a label-budget sweep reads beyond its fixed ones: its variants and their init models."""
    names = budget_variants(cmd, params)
    models = dict.fromkeys(paths.init_model(params.variants[name].init_from).as_posix() for name in names)
    return [f"variants.{name}" for name in names], list(models)


@dataclass(frozen=True)
class Generated:
    """One generated list: in which stages and section, which entries it owns, where it goes, what it holds."""

    applies: Callable[[str, Params], bool]  # (the stage's command, params) -> does the stage have this list
    section: str  # "deps" or "params"
    owns: Callable[[str], bool]  # an entry of this list, as written (replaced, never kept)
    after: str | None  # the comment line the list follows; None: where its first entry was
    entries: Callable[[str, Params, Path], list[str]]  # (command, params, repository root) -> the list


RULES = [
    Generated(lambda cmd, params: True, "deps", lambda entry: entry.startswith(("stages/", "src/")), None,
              lambda cmd, params, root: code_deps(cmd.split("-m ", 1)[1].split()[0], root)),
    Generated(lambda cmd, params: cmd.startswith(SWEEP_STAGE), "deps",
              lambda entry: entry.startswith(("metrics/transfer/", "runs/transfer/")),
              "# generated (make pipeline): the metrics and run record of each transfer@<variant> stage whose race is one of"
              " the sweep's points", lambda cmd, params, root: sweep_twins(cmd, params)),
    Generated(lambda cmd, params: bool(budget_variants(cmd, params)), "deps",
              lambda entry: entry.startswith(f"{paths.MODELS.as_posix()}/"),
              "# generated (make pipeline): the init model of every variant this label-budget sweep races",
              lambda cmd, params, root: label_budget_needs(cmd, params)[1]),
    Generated(lambda cmd, params: bool(budget_variants(cmd, params)), "params", lambda entry: entry.startswith("variants."),
              "# generated (make pipeline): every variant this label-budget sweep races, and no other",
              lambda cmd, params, root: label_budget_needs(cmd, params)[0]),
]
ITEM = re.compile(r"^(?P<indent>\s*)- (?P<entry>[^#\s][^#]*?)\s*(#.*)?$")
KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_]+):(?P<value>.*)$")


TEMPLATES = Path(__file__).parent / "templates"
BEGIN, END = "  # begin generated sweep stages\n", "  # end generated sweep stages\n"


def sweep_stages(params: Params) -> str:
    """One stage per sweep entry that is switched on, from its kind's template, in params order."""
    return "".join((TEMPLATES / f"sweep_{spec.kind}.yaml").read_text().replace("{name}", name)
                   for name, spec in params.sweeps.items() if spec is not None)


def render(text: str, params: Params, root: Path = Path(".")) -> str:
    """The pipeline file `text` with the sweep stages and every generated list recomputed; all other lines kept as written."""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN) + len(BEGIN)] + sweep_stages(params) + text[text.index(END):]
    out: list[str] = []
    cmd, section, placed = "", None, set()  # section: (name, indent) of the list being read
    for line in text.splitlines(keepends=True):
        key = KEY.match(line)
        if key and (section is None or len(key["indent"]) <= section[1]):
            section = None
            if key["key"] == "cmd":
                cmd, placed = key["value"].split("#")[0].strip(), set()
            elif key["key"] in {"deps", "params"}:
                section = (key["key"], len(key["indent"]))
            out.append(line)
            continue
        rules = [rule for rule in RULES if section is not None and rule.section == section[0] and rule.applies(cmd, params)]
        item, indent = ITEM.match(line), line[: len(line) - len(line.lstrip())]
        owner = next((rule for rule in rules if item and rule.owns(item["entry"])), None)
        anchored = next((rule for rule in rules if rule.after is not None and line.strip() == rule.after), None)
        if owner is not None:
            if owner.after is None and id(owner) not in placed:  # a list without its own comment starts at its first entry
                out += [f"{indent}- {entry}\n" for entry in owner.entries(cmd, params, root)]
                placed.add(id(owner))
            continue  # an entry of a generated list: the list is written once, where it belongs
        out.append(line)
        if anchored is not None:
            out += [f"{indent}- {entry}\n" for entry in anchored.entries(cmd, params, root)]
    return "".join(out)


def stale(params: Params, root: Path = Path(".")) -> list[Path]:
    """The pipeline files whose generated lists differ from what the code and params give."""
    return [file for file in paths.PIPELINES if (root / file).is_file()
            and render((root / file).read_text(), params, root) != (root / file).read_text()]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        params = load_params(paths.PARAMS)
    except TransferlabError as error:  # bad params: the one line `validate` would print, before DVC starts
        print(f"error: {scrub(' '.join(str(error).split()))}", file=sys.stderr)
        return 2
    files = stale(params)
    if "--check" in args:
        for file in files:
            print(f"{file}: its dependency lists are stale (code imports or sweeps changed): run `make pipeline`", file=sys.stderr)
        return 1 if files else 0
    for file in files:
        file.write_text(render(file.read_text(), params))
        print(f"{file}: dependency lists regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
