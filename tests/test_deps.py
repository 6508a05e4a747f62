"""Every DVC stage lists every project file its process imports, so `dvc repro` can never reuse a result of old code.

The closure is read from the source (`ast`), following every `import` of a project module —
also those inside functions, which stages use to start TensorFlow late — so it is what the
stage's process can load, not only what it loads at import time.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PIPELINES, ROOT, addresses, make_project, run, tiny_params

from transferlab.config import load_params, parse_params, read_yaml
from transferlab.tools import pipeline

DVC = [sys.executable, "-m", "dvc"]


def closure(module: str) -> set[Path]:
    return {ROOT / path for path in pipeline.closure(module, ROOT)}


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


@pytest.mark.parametrize(("stage", "module", "deps"), stages(), ids=[s[0] for s in stages()])
def test_stage_deps_cover_its_import_closure(stage: str, module: str, deps: list[str]) -> None:
    needed = {path for path in closure(module) if not pipeline.trivial(path) and path.relative_to(ROOT) not in pipeline.STARTS_ONLY}
    missing = sorted(path.relative_to(ROOT).as_posix() for path in needed if not covered(path, deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports these project files but does not depend on them: {missing}"


def test_the_closure_follows_imports_inside_functions() -> None:
    # stages.transfer imports strategies (TensorFlow) inside main(): it must still be in the closure
    files = {path.relative_to(ROOT).as_posix() for path in closure("stages.transfer")}
    assert {"src/transferlab/training/race.py", "src/transferlab/training/engine.py", "src/transferlab/data/__init__.py"} <= files


def test_every_generated_list_is_what_the_code_and_params_give() -> None:
    """Each stage's code deps equal its import closure (nothing missing, nothing unused); the sweeps' lists match params."""
    params = load_params(ROOT / "params.yaml")
    assert pipeline.stale(params, ROOT) == [], "run `make pipeline`"
    for stage, module, deps in stages():
        listed = {dep for dep in deps if dep.startswith(("src/", "stages/"))}
        assert listed == set(pipeline.code_deps(module, ROOT)), stage


def test_an_unused_import_is_dropped_and_a_new_one_added(tmp_path: Path) -> None:
    """Both directions: the generated list follows an edit of the imports, whatever was listed before."""
    project = tmp_path / "project"
    for folder in ("src", "stages"):  # the code is all the closure reads
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (project / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    stage = project / "stages" / "validate.py"
    stage.write_text(stage.read_text() + "\nfrom transferlab import statistics  # noqa: E402,F401\n")
    dvc_yaml = project / "dvc.yaml"
    text = dvc_yaml.read_text().replace("      - src/transferlab/paths.py\n", "      - src/transferlab/paths.py\n      - src/transferlab/report/figures.py\n", 1)
    rendered = pipeline.render(text, load_params(project / "params.yaml"), project)
    validate = yaml.safe_load(rendered)["stages"]["validate"]["deps"]
    assert "src/transferlab/statistics.py" in validate and "src/transferlab/report/figures.py" not in validate
    assert "params.yaml" in validate and "data/raw" in validate  # what is not code stays as written


def test_the_label_budget_sweep_lists_exactly_its_variants() -> None:
    """DVC cannot template a dependency list from `sweeps.label_budget.variants`: the generator writes it."""
    raw = read_yaml(ROOT / "params.yaml")
    raw["sweeps"]["label_budget"]["variants"] = ["scratch", "reuse5", "freeze2", "ae_reuse"]
    stage = yaml.safe_load(pipeline.render((ROOT / "dvc.yaml").read_text(), parse_params(raw), ROOT))["stages"]["sweep_label_budget"]
    assert [entry for entry in stage["params"] if str(entry).startswith("variants")] == [
        "variants.scratch", "variants.reuse5", "variants.freeze2", "variants.ae_reuse"]
    assert {"models/source.keras", "models/autoencoder.keras"} <= set(stage["deps"])
    assert "variants" not in stage["params"], "the whole section would rerun it for any variant"


def test_each_sweep_stage_depends_on_exactly_the_transfer_stages_whose_races_it_reads() -> None:
    """A twin race left out of dvc.yaml is raced twice; a metrics dep that is no twin reruns the sweep for nothing."""
    from transferlab.training import sweeps

    params = load_params(ROOT / "params.yaml")
    for name in params.sweeps:
        declared = {dep for dep in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][f"sweep_{name}"]["deps"]
                    if dep.startswith(("metrics/transfer/", "runs/transfer/"))}
        assert declared == set(sweeps.twin_metrics(name, params)), name
    assert set(sweeps.twin_metrics("label_budget", params)) == {  # each at the target's 100 labels: results and run record
        f"{folder}/transfer/{variant}.json" for variant in params.sweeps["label_budget"].variants for folder in ("metrics", "runs")}


def test_each_dvc_lock_holds_only_stages_of_its_dvc_yaml() -> None:
    """DVC keeps a removed stage's entry in dvc.lock for ever, and rewrites the whole file after every stage it runs."""
    listed = run([*DVC, "stage", "list", "--all", "--name-only"], ROOT).stdout.split()  # inputs/dvc.yaml:<name>, <name>
    for pipeline_file in PIPELINES:
        mine = {name.split(":")[-1] for name in listed if (name.rpartition(":")[0] or "dvc.yaml") == pipeline_file}
        lock = (ROOT / pipeline_file).with_suffix(".lock")
        locked = yaml.safe_load(lock.read_text())["stages"] if lock.is_file() else {}
        assert mine and sorted(set(locked) - mine) == [], f"remove these entries from {lock.relative_to(ROOT)}"


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
    source = project / "src" / "transferlab" / "data" / "__init__.py"
    text = source.read_text()
    assert "def draw_labelled(" in text
    source.write_text(text.replace("def draw_labelled(", "# edited\ndef draw_labelled(", 1))
    changed = set(json.loads(run([*DVC, "status", "--json"], project).stdout))
    racing = set(addresses("transfer@scratch", "transfer@freeze2", "sweep_transferability", "sweep_label_budget"))
    assert racing <= changed, sorted(changed)


def test_a_stale_pipeline_file_is_refused_before_dvc_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    """`make run` checks first: a dvc.yaml whose sweep names other variants than params stops with the fix, in one line."""
    project = make_project(tmp_path / "project", tiny_params())  # label_budget: scratch, freeze2
    (project / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())  # names scratch, reuse5, freeze2
    monkeypatch.chdir(project)
    assert pipeline.main(["--check"]) == 1
    assert capsys.readouterr().err.strip() == (
        "dvc.yaml: its dependency lists are stale (code imports or sweeps changed): run `make pipeline`")
    assert pipeline.main([]) == 0 and pipeline.main(["--check"]) == 0
    assert "variants.reuse5" not in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["sweep_label_budget"]["params"]
