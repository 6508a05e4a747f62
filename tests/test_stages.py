"""Stages as users run them (`python -m stages.<name>`): outputs, reproducibility, one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, run, tiny_params
from mlflow.tracking import MlflowClient


def stage(workdir: Path, name: str, *args: str, check: bool = True):
    return run([sys.executable, "-m", f"stages.{name}", *args], workdir, check=check)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with the tiny params, prepared data and a trained source model."""
    workdir = tmp_path_factory.mktemp("stages")
    shutil.copytree(ROOT / "stages", workdir / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    stage(workdir, "prepare_source", "source")
    stage(workdir, "prepare_target", "mnist")
    stage(workdir, "pretrain_source", "source")
    return workdir


def clone(prepared: Path, tmp_path: Path, params: dict | None = None) -> Path:
    workdir = tmp_path / "work"
    shutil.copytree(prepared, workdir)
    if params is not None:
        (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return workdir


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last


def test_source_stage_outputs(prepared: Path) -> None:
    metrics = json.loads((prepared / "metrics/source.json").read_text())
    record = json.loads((prepared / "runs/source.json").read_text())  # how it ran, apart from what it found
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    assert metrics["epochs"] == 2 and record["train_seconds"] > 0 and record["mlflow_run_id"]
    assert not {"train_seconds", "mlflow_run_id", "registered_version"} & set(metrics)
    assert "seconds" not in (prepared / "plots/source.csv").read_text().splitlines()[0].split(",")
    assert (prepared / "models/source.keras").is_file()
    run_ = MlflowClient(f"sqlite:///{prepared / 'mlflow.db'}").get_run(record["mlflow_run_id"])
    sizes = {t.value: int(t2.value) for i in run_.inputs.dataset_inputs for t in i.tags for t2 in i.tags
             if t.key == "mlflow.data.context" and t2.key == "rows"}
    with np.load(prepared / "data/prepared/sources/source.npz", allow_pickle=False) as source:
        assert sum(sizes.values()) == len(source["y_train"]) + len(source["y_test"]) and sizes["test"] == len(source["y_test"])
    assert (prepared / "plots/source.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy")
    with np.load(prepared / "data/prepared/target_mnist.npz", allow_pickle=False) as target:
        assert np.bincount(target["y_test"]).tolist() == [40] * 5


def test_transfer_stage_twice_gives_identical_metrics(prepared: Path, tmp_path: Path) -> None:
    workdir = clone(prepared, tmp_path)
    varying = {"mlflow_run_id", "train_seconds", "seconds_per_epoch", "seconds_to_best", "seconds_to_near_best"}

    def metrics() -> dict:
        stage(workdir, "transfer", "freeze2")
        found = {**json.loads((workdir / "runs/transfer/freeze2.json").read_text()),
                 **json.loads((workdir / "metrics/transfer/freeze2.json").read_text())}
        for run_ in found["repetitions"]:
            for key in varying:
                run_.pop(key, None)
        return {key: value for key, value in found.items() if key not in varying}

    first, second = metrics(), metrics()
    assert first == second
    assert first["strategy"] == "freeze" and first["frozen_layers"] == 2 and first["new_layers"] == 2
    assert first["trainable_params"] > 0 and first["frozen_params"] == 784 * 32 + 32 + 32 * 16 + 16
    # the metrics file holds results only (what `dvc metrics show` prints); the recipe and run ids are the run record's
    results = json.loads((workdir / "metrics/transfer/freeze2.json").read_text())
    assert {"target_accuracy", "target_accuracy_ci95", "repetitions"} <= set(results)
    assert not {"strategy", "init_from", "reuse_layers", "budget", "chosen_settings", "seeds", "mlflow_run_id"} & set(results)
    history = (workdir / "plots/transfer/freeze2.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds,elapsed,n"
    assert len(history) == 1 + max(run_["epochs_run"] for run_ in first["repetitions"])
    assert first["budget"]["grid"] == ["sgd 0.05 clip 1"] and first["train_per_class"] + first["validation_per_class"] == 10
    # every run of the stage records its data (the MLflow runs table's Dataset column): pool and test set
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parent = json.loads((workdir / "runs/transfer/freeze2.json").read_text())["mlflow_run_id"]
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    with np.load(workdir / "data/prepared/target_mnist.npz", allow_pickle=False) as target:
        rows = {"train": str(len(target["y_pool"])), "test": str(len(target["y_test"]))}
    for run_id in (parent, *(c.info.run_id for c in children)):
        inputs = [{t.key: t.value for t in i.tags} | {"name": i.dataset.name} for i in client.get_run(run_id).inputs.dataset_inputs]
        assert {i["mlflow.data.context"]: i["rows"] for i in inputs} == rows
        assert all(i["name"] == "mnist" and i["train_per_class"] == str(first["train_per_class"]) for i in inputs)


def test_bad_params_exit_2_with_one_line_and_write_nothing(prepared: Path, tmp_path: Path) -> None:
    params = tiny_params()
    params["variants"]["freeze2"]["frozen_layers"] = 4
    workdir = clone(prepared, tmp_path, params)
    result = stage(workdir, "transfer", "freeze2", check=False)
    assert_one_line_error(result, "params.yaml: variants.freeze2.frozen_layers: 4 > reuse_layers 3")
    assert not (workdir / "metrics/transfer/freeze2.json").exists()


def test_unknown_variant(prepared: Path, tmp_path: Path) -> None:
    result = stage(clone(prepared, tmp_path), "transfer", "nosuch", check=False)
    assert_one_line_error(result, "variants.nosuch: not configured")


def test_labels_per_class_larger_than_available(prepared: Path, tmp_path: Path) -> None:
    params = tiny_params()
    params["targets"]["mnist"]["labels_per_class"] = 461
    workdir = clone(prepared, tmp_path, params)
    before = (workdir / "data/prepared/target_mnist.npz").read_bytes()
    result = stage(workdir, "prepare_target", "mnist", check=False)
    assert_one_line_error(result, "targets.mnist.labels_per_class", "fewer than test_per_class 40 + labels_per_class 461")
    assert (workdir / "data/prepared/target_mnist.npz").read_bytes() == before


def test_missing_data_file(prepared: Path, tmp_path: Path) -> None:
    workdir = clone(prepared, tmp_path)
    (workdir / "data/prepared/target_mnist.npz").unlink()
    assert_one_line_error(stage(workdir, "transfer", "scratch", check=False), "target_mnist.npz: file not found")


def test_malformed_data_file(prepared: Path, tmp_path: Path) -> None:
    workdir = clone(prepared, tmp_path)
    (workdir / "data/prepared/target_mnist.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    assert_one_line_error(stage(workdir, "transfer", "scratch", check=False), "target_mnist.npz: not a readable .npz")
    np.savez(workdir / "data/prepared/target_mnist.npz", x_pool=np.zeros((2, 784)), y_pool=np.zeros(2))
    assert_one_line_error(stage(workdir, "transfer", "scratch", check=False), "missing array(s) x_test, y_test")


def test_corrupt_model_file(prepared: Path, tmp_path: Path) -> None:
    workdir = clone(prepared, tmp_path)
    model = workdir / "models/source.keras"
    model.write_bytes(model.read_bytes()[:500])
    assert_one_line_error(stage(workdir, "transfer", "scratch", check=False), "models/source.keras")
    assert not (workdir / "metrics/transfer/scratch.json").exists()


def test_input_size_mismatch(prepared: Path, tmp_path: Path) -> None:
    params = tiny_params()
    params["targets"]["mnist"]["image_size"] = 20
    workdir = clone(prepared, tmp_path, params)
    stage(workdir, "prepare_target", "mnist")
    result = stage(workdir, "transfer", "scratch", check=False)
    assert_one_line_error(result, "target_mnist.npz: images are 20x20x1 but models/source.keras expects 28x28x1")


def with_model_file(prepared: Path, tmp_path: Path, entry: dict) -> Path:
    params = tiny_params(model_files={"theirs": entry})
    params["variants"]["from_theirs"] = {"strategy": "reuse", "init_from": "theirs", "target": "mnist", "reuse_layers": 2}
    return clone(prepared, tmp_path, params)


def test_npz_from_another_framework_becomes_a_reusable_model(prepared: Path, tmp_path: Path) -> None:
    from transferlab.models import zoo

    workdir = clone(prepared, tmp_path)
    source = zoo.load_keras(workdir / "models/source.keras")
    zoo.save_weights_npz(source, workdir / "exported.npz")
    with np.load(workdir / "exported.npz") as arrays:  # rename as another framework would have named them
        renamed = {key.replace("hidden", "fc"): value for key, value in arrays.items()}
    np.savez(workdir / "theirs.npz", **renamed)
    workdir = with_model_file(workdir, tmp_path / "b", {
        "format": "npz", "path": "theirs.npz", "name_map": {"fc1": "hidden1", "fc2": "hidden2", "fc3": "hidden3"},
    })
    stage(workdir, "import_model", "theirs")
    metrics = json.loads((workdir / "metrics/theirs.json").read_text())
    record = json.loads((workdir / "runs/theirs.json").read_text())
    source_metrics = json.loads((workdir / "metrics/source.json").read_text())
    assert record["hidden_layers"] == {"hidden1": 32, "hidden2": 16, "hidden3": 16}
    assert list(metrics) == ["source_test_accuracy"]  # results only; where it came from is the run record's
    assert metrics["source_test_accuracy"] == pytest.approx(source_metrics["test_accuracy"], abs=1e-9)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")  # its artifact named as in every run with a model file
    assert [a.path for a in client.list_artifacts(record["mlflow_run_id"])] == ["model.keras"]
    stage(workdir, "transfer", "from_theirs")
    assert json.loads((workdir / "runs/transfer/from_theirs.json").read_text())["init_from"] == "theirs"


def test_unsafe_model_files_are_refused(prepared: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{"hidden1/kernel": np.array([object()], dtype=object), "hidden1/bias": np.zeros(1)})
    workdir = with_model_file(prepared, tmp_path / "a", {"format": "npz", "path": str(pickled)})
    assert_one_line_error(stage(workdir, "import_model", "theirs", check=False), "pickled.npz")
    assert not (workdir / "models/theirs.keras").exists()

    import keras

    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(3, name="hidden1")(inputs)
    lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(hidden))
    lambda_model.save(tmp_path / "lambda.keras")
    workdir = with_model_file(prepared, tmp_path / "b", {"format": "keras", "path": str(tmp_path / "lambda.keras")})
    assert_one_line_error(stage(workdir, "import_model", "theirs", check=False), "lambda.keras", "Lambda")
    assert not (workdir / "models/theirs.keras").exists()


def test_missing_registry_entry(prepared: Path, tmp_path: Path) -> None:
    params = tiny_params(zoo={"gone": {"kind": "registry", "uri": "models:/no-such-model/3"}})
    result = stage(clone(prepared, tmp_path, params), "import_model", "gone", check=False)
    assert_one_line_error(result, "no-such-model")


def test_tensorflow_starts_quietly_without_make(tmp_path: Path) -> None:
    """`.venv/bin/dvc repro` run by hand sets no TF_CPP_MIN_LOG_LEVEL: TensorFlow's C++ start-up lines
    (absl's "before InitializeLog", cpu_feature_guard) must still stay out of every stage's output."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import transferlab.training.race, tensorflow as tf; tf.zeros(1) + 1"  # strategies imports keras first
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.skipif(not Path("/usr/bin/python3").is_file(), reason="needs a system Python without the project's packages")
def test_dvc_outside_the_venv_hands_over_to_it_or_says_what_to_do(tmp_path: Path) -> None:
    """`.venv/bin/dvc repro` from a shell without the venv: DVC's stage commands find the system `python`."""
    from conftest import make_project

    project = make_project(tmp_path / "project", tiny_params())
    system_bin = tmp_path / "bin"
    system_bin.mkdir()
    (system_bin / "python").symlink_to("/usr/bin/python3")  # the `python` a plain shell finds
    env = {"PATH": f"{system_bin}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path),
           "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}

    def repro() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dvc", "repro", "validate"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)

    stopped = repro()
    assert stopped.returncode != 0 and "Traceback" not in stopped.stderr
    (line,) = [line for line in stopped.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {system_bin / 'python'} cannot import transferlab") and "`make run`" in line
    (project / ".venv").symlink_to(Path(sys.prefix))  # what `make` creates: the stage hands over to it
    done = repro()
    assert done.returncode == 0, done.stderr
    assert "params.yaml: valid" in done.stdout


def test_mlflow_runs_read_right_in_the_ui(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: no metric key holds both a step-0 summary and per-epoch values; the parent carries the
    headline; artifacts are named alike; the models are MLflow models with a signature; runs are described."""
    import mlflow

    workdir = clone(prepared, tmp_path)
    stage(workdir, "transfer", "freeze2")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tests")
    assert experiment.tags["mlflow.note.content"]
    runs = client.search_runs([experiment.experiment_id])
    for run_ in runs:
        for key in run_.data.metrics:
            steps = {m.step for m in client.get_metric_history(run_.info.run_id, key)}
            assert steps == {0} or 0 not in steps, (run_.info.run_name, key, sorted(steps))
    by_stage = {r.data.tags["stage"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    parent, source = by_stage["transfer@freeze2"], by_stage["pretrain_source@source"]
    metrics = json.loads((workdir / "metrics/transfer/freeze2.json").read_text())
    assert parent.data.metrics["target_accuracy"] == pytest.approx(metrics["target_accuracy"])
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert "freeze2" in parent.data.tags["mlflow.note.content"] and "Found: test accuracy" in parent.data.tags["mlflow.note.content"]
    assert source.data.tags["mlflow.note.content"] and source.data.metrics["test_accuracy"] > 0.5
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"model.keras", "history.csv"}
    assert {a.path for a in client.list_artifacts(source.info.run_id)} == {"history.csv"}
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {"best_val_accuracy", "best_val_loss", "val_accuracy", "target_accuracy"} <= set(child.data.metrics)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # both restored after the test
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", uri)
    (logged,) = client.search_logged_models([experiment.experiment_id], filter_string=f"source_run_id = '{parent.info.run_id}'")
    version = json.loads((workdir / "runs/source.json").read_text())["registered_version"]
    with np.load(workdir / "data/prepared/target_mnist.npz", allow_pickle=False) as target:
        x = target["x_test"][:3].astype(np.float32)
    for model_uri, classes in [(f"models:/{logged.model_id}", 5), (f"models:/transferlab-source/{version}", 5)]:
        info = mlflow.models.get_model_info(model_uri)
        assert "keras" in info.flavors and info.signature is not None and info.saved_input_example_info, model_uri
        assert np.asarray(mlflow.pyfunc.load_model(model_uri).predict(x)).shape == (3, classes)
