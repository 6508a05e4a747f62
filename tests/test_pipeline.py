"""The pipeline on real DVC in a temp git repo: caching reruns exactly what changed, reports build, bad input stops cleanly."""
from __future__ import annotations

import base64
import csv
import json
import re
import sys
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

import pytest
import yaml
from conftest import address, addresses, make_project, run, tiny_params
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]


def repro(project: Path, *args: str) -> list[str]:
    """Run `dvc repro` and return the stages it actually ran."""
    out = run([*DVC, "repro", *args], project).stdout
    return sorted(re.findall(r"Running stage '([^']+)'", out))


def edit_params(project: Path, change) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def full_params() -> dict:
    """Tiny params with one pretraining entry and one registry entry, and a variant from each."""
    params = tiny_params()
    params["pretrain"] = {"rbm": {"method": "rbm", "target": "mnist", "hidden_units": [16], "epochs": 1, "batch_size": 50}}
    params["zoo"] = {"registered_source": {"kind": "registry", "uri": "models:/transferlab-source/latest"}}
    params["variants"]["registry_freeze2"] = {**params["variants"]["freeze2"], "init_from": "registered_source"}
    params["variants"]["rbm_reuse"] = {"strategy": "reuse", "init_from": "rbm", "target": "mnist", "reuse_layers": 1, "new_hidden": [8]}
    return params


def test_repro_caching_reports_and_tracking(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", full_params())
    everything = repro(project)
    assert everything == addresses(
        "validate", "prepare_source@source", "prepare_target@mnist", "pretrain_source@source", "pretrain@rbm", "zoo@registered_source",
        "transfer@scratch", "transfer@freeze2", "transfer@registry_freeze2", "transfer@rbm_reuse",
        "sweep_transferability", "sweep_label_budget", "report",
    )
    assert repro(project) == [], "a second repro must run nothing"

    # the registry's copy of the source model gives exactly the same result as the source itself
    accuracy = {
        name: json.loads((project / f"metrics/transfer/{name}.json").read_text())["target_accuracy"]
        for name in ("freeze2", "registry_freeze2")
    }
    assert accuracy["freeze2"] == accuracy["registry_freeze2"]

    # the label-budget points at the target's own 10 labels are transfer@scratch's and transfer@freeze2's races: read, not raced
    rows = list(csv.DictReader((project / "metrics/sweeps/label_budget.csv").open()))
    for variant in ("scratch", "freeze2"):
        raced = json.loads((project / f"metrics/transfer/{variant}.json").read_text())["repetitions"]
        assert [float(row["target_accuracy"]) for row in rows if (row["series"], row["x"]) == (variant, "10")] == \
            [r["target_accuracy"] for r in raced]

    # dvc metrics show lists every variant's target accuracy
    shown = json.loads(run([*DVC, "metrics", "show", "--json"], project).stdout)
    data = next(iter(shown.values()))["data"]
    for variant in ("scratch", "freeze2"):
        assert 0 <= data[f"metrics/transfer/{variant}.json"]["data"]["target_accuracy"] <= 1

    # editing one variant reruns exactly that variant and the report
    edit_params(project, lambda p: p["variants"]["freeze2"].update(new_hidden=[12]))
    # (and the label-budget sweep, which runs freeze2)
    assert repro(project) == addresses("report", "sweep_label_budget", "transfer@freeze2", "validate")

    # editing a source param reruns the source and every variant built on it (and the report)
    edit_params(project, lambda p: p["sources"]["source"]["train"].update(epochs=3))
    assert repro(project) == addresses(
        "pretrain_source@source", "report", "sweep_label_budget", "sweep_transferability",
        "transfer@freeze2", "transfer@registry_freeze2", "transfer@scratch", "validate", "zoo@registered_source",
    )

    # the report holds every variant, its plots decode, and its run ids are real MLflow runs
    markdown = (project / "reports/comparison.md").read_text()
    html = (project / "reports/comparison.html").read_text()
    for variant in ("scratch", "freeze2"):
        assert f"| {variant} " in markdown and f"<td>{variant}</td>" in html
    parser = Images()
    parser.feed(html)
    # per target: tuning, per epoch, accuracy, time per epoch, and the gain over scratch where scratch converged
    # (the tiny race's cap of 4 epochs may leave it unconverged: then no verdicts, no forest plot); both sweeps
    conclusions = json.loads((project / "reports/conclusions.json").read_text())
    judged = bool(conclusions["targets"]["mnist"]["families"])
    assert len(parser.sources) == 4 + judged + 2
    from PIL import Image

    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(BytesIO(base64.b64decode(source.split(",", 1)[1])))
        image.load()
        assert image.size[0] > 300
    assert "**The question.**" in markdown and "**How sure.**" in markdown and "**More accurate:**" in markdown
    assert ("**Use:**" in markdown) == judged
    assert conclusions["platform"]["environment"]["TF_ENABLE_ONEDNN_OPTS"] == "0" and "mnist" in conclusions["targets"]
    plots = json.loads(run([*DVC, "plots", "show", "--json"], project).stdout)
    assert not plots.get("errors")
    assert {"reports/accuracy_per_epoch.csv", "plots/sweeps/transferability.csv"} <= set(plots["data"])

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tests")
    assert experiment.artifact_location == str(project / "mlartifacts")  # beside the store, wherever a stage ran
    finished = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    parents = [r for r in finished if "mlflow.parentRunId" not in r.data.tags]
    assert {r.data.tags["raced_in"] for r in finished if "raced_in" in r.data.tags} == {"transfer@scratch", "transfer@freeze2"}
    # first repro: source, rbm, zoo, 4 variants, 2 sweeps, report; then freeze2, a sweep, report;
    # then source, zoo, 3 variants, 2 sweeps, report
    assert len(parents) == 10 + 3 + 8
    for parent in parents:  # every stage run carries the comparison tags; every training stage its model
        tags = parent.data.tags
        assert {"stage", "variant", "strategy", "init_from", "git_commit"} <= set(tags), tags
        if tags["stage"].startswith(("pretrain", "transfer")):  # its model: an MLflow model (Keras flavour)
            assert tags["data_fingerprint"]
            logged = client.search_logged_models([experiment.experiment_id], filter_string=f"source_run_id = '{parent.info.run_id}'")
            assert len(logged) == 1, (tags["stage"], logged)
    metrics = json.loads((project / "metrics/transfer/freeze2.json").read_text())
    run_ = client.get_run(json.loads((project / "runs/transfer/freeze2.json").read_text())["mlflow_run_id"])
    assert run_.data.tags["strategy"] == "freeze" and run_.data.tags["variant"] == "freeze2"
    assert run_.data.tags["data_fingerprint"] and run_.data.tags["git_commit"] != "unknown"
    assert run_.data.params["variant.new_hidden"] == "[12]"
    epochs_run = max(r["epochs_run"] for r in metrics["repetitions"])
    curve = [m.step for m in client.get_metric_history(run_.info.run_id, "val_accuracy")]  # no step-0 summary (best_val_accuracy)
    assert sorted(curve) == list(range(1, epochs_run + 1))  # per epoch, mean over the repetitions
    assert not client.get_metric_history(run_.info.run_id, "test_accuracy")  # the test set is scored once, not per epoch
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{run_.info.run_id}'")
    assert {c.data.params["chosen_setting"] for c in children} <= {"sgd 0.05"} and children[0].data.params["stop_reason"]
    assert {a.path for a in client.list_artifacts(run_.info.run_id)} == {"model.keras", "history.csv"}  # alike in every variant's run
    versions = client.search_model_versions("name = 'transferlab-source'")
    assert sorted(int(v.version) for v in versions) == [1, 2], "each source run registers a new version"

    # removing a pretraining entry (and its variant) leaves no stale row in the report
    def drop_rbm(p: dict) -> None:
        del p["pretrain"]["rbm"]
        del p["variants"]["rbm_reuse"]

    edit_params(project, drop_rbm)
    assert repro(project) == ["report", "validate"]  # no sweep runs rbm_reuse
    markdown = (project / "reports/comparison.md").read_text()
    assert "rbm_reuse" not in markdown and "| rbm " not in markdown

    # a rerun of the source stage with the same params writes the same model, metrics and history
    # bytes: nothing below reruns but the report, whose run links and records come from runs/ (the new run id)
    found = [(project / f).read_bytes() for f in ("models/source.keras", "metrics/source.json", "plots/source.csv")]
    record = json.loads((project / "runs/source.json").read_text())
    run([*DVC, "repro", "-f", "-s", address("pretrain_source@source")], project)
    assert [(project / f).read_bytes() for f in ("models/source.keras", "metrics/source.json", "plots/source.csv")] == found
    assert json.loads((project / "runs/source.json").read_text())["mlflow_run_id"] != record["mlflow_run_id"]
    assert repro(project) == ["report"]


def test_bad_params_fail_repro_and_record_nothing(project: Path) -> None:
    repro(project)
    lock_before = (project / "dvc.lock").read_text()
    metrics_before = (project / "metrics/transfer/freeze2.json").read_bytes()
    edit_params(project, lambda p: p["variants"]["freeze2"].update(frozen_layers=5))
    result = run([*DVC, "repro"], project, check=False)
    assert result.returncode != 0
    assert "params.yaml: variants.freeze2.frozen_layers: 5 > reuse_layers 3" in result.stderr + result.stdout
    assert (project / "dvc.lock").read_text() == lock_before
    # stopped by the validate stage, before DVC deleted the variant's outputs to rerun it
    assert (project / "metrics/transfer/freeze2.json").read_bytes() == metrics_before
    assert (project / "models/transfer/freeze2.keras").is_file()
    status = run([*DVC, "status", "--json"], project).stdout
    assert address("transfer@freeze2") in json.loads(status)
