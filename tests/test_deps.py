"""Every DVC stage lists every project file its process imports, so `dvc repro` can never reuse a result of old code.

The closure is read from the source (`ast`), following every `import` of a project module —
also those inside functions, which stages use to start TensorFlow late — so it is what the
stage's process can load, not only what it loads at import time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

PACKAGE = "transferlab"


def module_file(name: str) -> Path | None:
    """The file of a project module (`transferlab.x.y`, `stages.z`), or None for third-party modules."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        base = ROOT / "src" / Path(*parts)
    elif parts[0] == "stages":
        base = ROOT / Path(*parts)
    else:
        return None
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from transferlab import zoo`
    return found


def closure(module: str) -> set[Path]:
    """Every project file reachable by imports from `module` (packages bring their `__init__`)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo += sorted(imported_modules(path))
    return seen


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def stages() -> list[tuple[str, str, list[str]]]:
    """(stage name, the module its command runs, its deps) for every stage of dvc.yaml."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found = []
    for name, stage in spec.items():
        body = stage.get("do", stage)
        module = body["cmd"].split("-m ", 1)[1].split()[0]
        found.append((name, module, [dep for dep in body.get("deps", []) if "${" not in dep]))
    return found


def trivial(path: Path) -> bool:
    """A package marker holding nothing but a docstring carries no behaviour."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


# How a stage process starts, not what it computes: a stage run through the warm stage server writes
# the same outputs as a cold one (tests/test_warm.py), so editing the launcher reruns nothing.
STARTS_ONLY = {ROOT / "src" / "transferlab" / "warm.py"}


@pytest.mark.parametrize(("stage", "module", "deps"), stages(), ids=[s[0] for s in stages()])
def test_stage_deps_cover_its_import_closure(stage: str, module: str, deps: list[str]) -> None:
    needed = {path for path in closure(module) if not trivial(path) and path not in STARTS_ONLY}
    missing = sorted(path.relative_to(ROOT).as_posix() for path in needed if not covered(path, deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports these project files but does not depend on them: {missing}"


def test_the_closure_follows_imports_inside_functions() -> None:
    # stages.transfer imports strategies (TensorFlow) inside main(): it must still be in the closure
    files = {path.relative_to(ROOT).as_posix() for path in closure("stages.transfer")}
    assert {"src/transferlab/strategies.py", "src/transferlab/batched.py", "src/transferlab/data.py"} <= files
