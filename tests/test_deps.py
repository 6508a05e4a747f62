"""Every DVC stage lists every project file its process imports, so `dvc repro` can never reuse a result of old code.

The closure is read from the source (`ast`), following every `import` of a project module —
also those inside functions, which stages use to start TensorFlow late — so it is what the
stage's process can load, not only what it loads at import time.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PIPELINES, ROOT, addresses, make_project, run, tiny_params

from transferlab.config import load_params, parse_params, read_yaml
from transferlab.tools import pipeline

PACKAGE = "transferlab"
DVC = [sys.executable, "-m", "dvc"]


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
    """(stage name, the module its command runs, its deps) for every stage of both pipeline files."""
    spec = {name: stage for file in PIPELINES for name, stage in yaml.safe_load((ROOT / file).read_text())["stages"].items()}
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
    assert {"src/transferlab/training/race.py", "src/transferlab/training/engine.py", "src/transferlab/data/__init__.py"} <= files


def test_label_budget_stage_names_exactly_the_variants_the_sweep_runs() -> None:
    """DVC cannot template a dependency list from `sweeps.label_budget.variants`: dvc.yaml spells it out, checked here."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = load_params(ROOT / "params.yaml")
    assert pipeline.label_budget_mismatch(spec, params) is None, pipeline.label_budget_mismatch(spec, params)
    assert "variants" not in spec["stages"][pipeline.LABEL_BUDGET_STAGE]["params"], "the whole section would rerun it for any variant"


def test_each_sweep_stage_depends_on_exactly_the_transfer_stages_whose_races_it_reads() -> None:
    """A twin race left out of dvc.yaml is raced twice; a metrics dep that is no twin reruns the sweep for nothing."""
    from transferlab.training import sweeps

    params = load_params(ROOT / "params.yaml")
    for name in sweeps.SWEEPS:
        declared = {dep for dep in pipeline.stage_deps(f"sweep_{name}", ROOT / "dvc.yaml") if dep.startswith(("metrics/", "runs/"))}
        assert declared == set(sweeps.twin_metrics(name, params)), name
    assert set(sweeps.twin_metrics("label_budget", params)) == {  # each at the target's 100 labels: results and run record
        f"{folder}/transfer/{variant}.json" for variant in params.sweeps.label_budget.variants for folder in ("metrics", "runs")}


def test_each_dvc_lock_holds_only_stages_of_its_dvc_yaml() -> None:
    """DVC keeps a removed stage's entry in dvc.lock for ever, and rewrites the whole file after every stage it runs."""
    listed = run([*DVC, "stage", "list", "--all", "--name-only"], ROOT).stdout.split()  # inputs/dvc.yaml:<name>, <name>
    for pipeline_file in PIPELINES:
        mine = {name.split(":")[-1] for name in listed if (name.rpartition(":")[0] or "dvc.yaml") == pipeline_file}
        lock = (ROOT / pipeline_file).with_suffix(".lock")
        locked = yaml.safe_load(lock.read_text())["stages"] if lock.is_file() else {}
        assert mine and sorted(set(locked) - mine) == [], f"remove these entries from {lock.relative_to(ROOT)}"


def test_a_variant_added_to_the_sweep_but_not_to_dvc_yaml_is_named() -> None:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    raw = read_yaml(ROOT / "params.yaml")
    raw["sweeps"]["label_budget"]["variants"] = ["scratch", "reuse5", "freeze2", "ae_reuse"]
    problem = pipeline.label_budget_mismatch(spec, parse_params(raw))
    assert problem == ("dvc.yaml: stage sweep_label_budget: add `- variants.ae_reuse` to its params; add"
                       " `- models/autoencoder.keras` to its deps (it must name exactly the variants of"
                       " sweeps.label_budget.variants and their init models)")
    raw["sweeps"]["label_budget"]["variants"] = ["scratch", "reuse5"]
    problem = pipeline.label_budget_mismatch(spec, parse_params(raw))
    assert problem is not None and "remove `- variants.freeze2` from its params" in problem and "deps" not in problem


def committed_project(path: Path, params: dict) -> Path:
    """A real DVC project whose every stage is recorded as done (placeholder outputs, `dvc commit`): status, no training."""
    from dvc.repo import Repo

    project = make_project(path, params)
    with Repo(str(project)) as repo:
        outputs = [out for stage in repo.index.stages for out in stage.outs]
    for out in outputs:
        target = Path(str(out.fs_path))
        if out.def_path == "reports/figures":
            (target / "placeholder.png").parent.mkdir(parents=True, exist_ok=True)
            (target / "placeholder.png").write_bytes(b"png")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("placeholder\n")
    run([*DVC, "commit", "-f", "-q"], project)
    assert json.loads(run([*DVC, "status", "--json"], project).stdout) == {}
    return project


def changed_after(project: Path, change) -> list[str]:
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return sorted(json.loads(run([*DVC, "status", "--json"], project).stdout))
    finally:
        run(["git", "checkout", "-q", "params.yaml"], project)


def test_editing_a_variant_reruns_its_stage_and_only_the_sweeps_that_run_it(tmp_path: Path) -> None:
    params = tiny_params()
    params["variants"]["reuse1"] = {"strategy": "reuse", "init_from": "source", "target": "mnist", "reuse_layers": 1}
    project = committed_project(tmp_path / "project", params)  # label_budget runs scratch and freeze2, not reuse1

    def edit(name: str):
        return lambda p: p["variants"][name].update(new_hidden=[12])

    assert changed_after(project, edit("reuse1")) == addresses("report", "transfer@reuse1", "validate")
    assert changed_after(project, edit("freeze2")) == addresses("report", "sweep_label_budget", "transfer@freeze2", "validate")


def test_editing_draw_labelled_marks_every_variant_and_sweep_changed(tmp_path: Path) -> None:
    """`data.draw_labelled` decides each repetition's labelled images: every stage that races must rerun."""
    project = committed_project(tmp_path / "project", tiny_params())
    source = project / "src" / "transferlab" / "data.py"
    text = source.read_text()
    assert "def draw_labelled(" in text
    source.write_text(text.replace("def draw_labelled(", "# edited\ndef draw_labelled(", 1))
    changed = set(json.loads(run([*DVC, "status", "--json"], project).stdout))
    racing = set(addresses("transfer@scratch", "transfer@freeze2", "sweep_transferability", "sweep_label_budget"))
    assert racing <= changed, sorted(changed)


def test_sweep_stage_refuses_a_dvc_yaml_that_would_not_rerun_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Before any training: a sweep whose dvc.yaml entry names other variants stops with the one line that says the fix."""
    from transferlab.launch.cli import run_main

    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))  # label_budget: scratch, freeze2
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())  # names scratch, reuse5, freeze2
    from stages import sweep

    with pytest.raises(SystemExit) as stopped:
        run_main(sweep.main, ["label_budget"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: dvc.yaml: stage sweep_label_budget: remove `- variants.reuse5` from its params (it must name exactly"
        " the variants of sweeps.label_budget.variants and their init models)")
    assert not (tmp_path / "metrics").exists()
