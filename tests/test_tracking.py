"""MLflow on a real SQLite store: one honest run per stage execution — FINISHED, FAILED or KILLED."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from transferlab import tracking


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def runs(uri: str, experiment: str = "t") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_default_store_is_the_repo_sqlite_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_finished_run_has_params_tags_history_and_files(store: str, tmp_path: Path) -> None:
    artifact = tmp_path / "model.keras"
    artifact.write_bytes(b"weights")
    with tracking.stage_run("t", "freeze2", {"stage": "transfer@freeze2", "variant": "freeze2"}, {"variant": {"frozen_layers": 2}}) as ids:
        tracking.log_history([{"epoch": 1, "loss": 0.9, "test_accuracy": 0.5}, {"epoch": 2, "loss": 0.5, "test_accuracy": 0.7}])
        tracking.log_final({"target_accuracy": 0.7, "strategy": "freeze"})
        tracking.log_files([artifact])
    (run,) = runs(store)
    assert run.info.run_id == ids["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.params["variant.frozen_layers"] == "2"
    assert run.data.tags["stage"] == "transfer@freeze2" and "git_commit" in run.data.tags
    assert run.data.metrics["target_accuracy"] == 0.7
    curve = MlflowClient(store).get_metric_history(run.info.run_id, "monitor_test_accuracy")  # monitoring, labelled so
    assert [(m.step, m.value) for m in curve] == [(1, 0.5), (2, 0.7)]
    assert [a.path for a in MlflowClient(store).list_artifacts(run.info.run_id)] == ["model.keras"]


def test_exception_marks_run_failed(store: str) -> None:
    with pytest.raises(ZeroDivisionError), tracking.stage_run("t", "boom", {}, {}):
        1 / 0
    assert [r.info.status for r in runs(store)] == ["FAILED"]


def test_nested_runs_per_seed(store: str) -> None:
    with tracking.stage_run("t", "parent", {}, {}) as ids:
        for seed in range(2):
            with tracking.child_run(f"seed{seed}", {"repetition": str(seed)}, {"seed": seed}):
                tracking.log_final({"target_accuracy": 0.5 + seed / 10})
    found = runs(store)
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == ids["mlflow_run_id"]]
    assert len(found) == 3 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in found)


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from transferlab import tracking
    with tracking.stage_run("t", "long", {}, {}):
        with tracking.child_run("seed0", {}):
            print("started", flush=True)
            time.sleep(60)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_marks_run_killed(store: str, tmp_path: Path, sig: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=os.environ.copy(), cwd=tmp_path)
    assert process.stdout.readline().strip() == "started"
    process.send_signal(sig)
    assert process.wait(timeout=60) != 0
    statuses = sorted(r.info.status for r in runs(store))
    assert statuses == ["KILLED", "KILLED"]
    assert not any(r.info.status == "RUNNING" for r in runs(store))


def test_experiment_opens_on_the_runs_table(store: str) -> None:
    """MLflow 3's UI picks an experiment's first page by its kind tag; untagged, it guesses the GenAI overview."""
    experiment_id = tracking.set_experiment("t")
    client = MlflowClient(store)
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    client.delete_experiment_tag(experiment_id, "mlflow.experimentKind")  # a store made before the tag existed
    assert tracking.set_experiment("t") == experiment_id
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "forecasting")  # the user's choice stays
    tracking.set_experiment("t")
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "forecasting"


def test_datasets_logged_per_split(store: str) -> None:
    import numpy as np

    from transferlab.data import fingerprint

    rng = np.random.default_rng(0)
    arrays = {"x_pool": rng.random((12, 4)), "y_pool": np.arange(12) % 3, "x_test": rng.random((5, 4)), "y_test": np.arange(5) % 3}
    with tracking.stage_run("t", "freeze2", {}, {}) as ids:
        tracking.log_target("mnist", Path("data/prepared/target_mnist.npz"), arrays, {"train_per_class": 3, "validation_per_class": 1})
    inputs = MlflowClient(store).get_run(ids["mlflow_run_id"]).inputs.dataset_inputs
    found = {tags["mlflow.data.context"]: (i.dataset, tags) for i in inputs for tags in [{t.key: t.value for t in i.tags}]}
    assert set(found) == {"train", "test"}
    for context, split in (("train", "pool"), ("test", "test")):
        dataset, tags = found[context]
        assert dataset.name == "mnist" and dataset.source == '{"uri": "data/prepared/target_mnist.npz"}'
        assert dataset.digest == fingerprint(arrays[f"x_{split}"], arrays[f"y_{split}"])
        assert tags["rows"] == str(len(arrays[f"x_{split}"])) and tags["train_per_class"] == "3"


def test_summaries_never_share_a_key_with_a_per_epoch_series(store: str) -> None:
    """A summary under a series' key would be a fake point at step 0 and the series' "latest" value in the UI."""
    with tracking.stage_run("t", "freeze2", {}, {}, description="what it does") as ids:
        tracking.log_history([{"epoch": 1, "val_accuracy": 0.5, "loss": 0.9, "test_accuracy": 0.4},
                              {"epoch": 2, "val_accuracy": 0.7, "loss": 0.5, "test_accuracy": 0.6}])
        tracking.log_final({"val_accuracy": 0.7, "loss": 0.5, "test_accuracy": 0.6, "best_epoch": 2})
        tracking.describe("what it does, and what it found")
    client = MlflowClient(store)
    run = client.get_run(ids["mlflow_run_id"])
    steps = {key: [m.step for m in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics}
    assert steps == {"val_accuracy": [1, 2], "loss": [1, 2], "monitor_test_accuracy": [1, 2], "best_val_accuracy": [0],
                     "final_loss": [0], "test_accuracy": [0], "best_epoch": [0]}
    assert run.data.tags[tracking.NOTE] == "what it does, and what it found"
    assert client.get_experiment(run.info.experiment_id).tags[tracking.NOTE] == tracking.EXPERIMENT_NOTE


def test_artifacts_named_alike_in_every_run(store: str, tmp_path: Path) -> None:
    (tmp_path / "freeze2.csv").write_text("epoch\n1\n")
    with tracking.stage_run("t", "freeze2", {}, {}) as ids:
        tracking.log_files({"history.csv": tmp_path / "freeze2.csv"})
    assert [a.path for a in MlflowClient(store).list_artifacts(ids["mlflow_run_id"])] == ["history.csv"]
    assert (tmp_path / "freeze2.csv").is_file()
