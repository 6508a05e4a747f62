"""Sweeps: the grids, pairing and determinism of their runs, the summary, the recommendation, the stage."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import ROOT, run, tiny_params
from mlflow.tracking import MlflowClient

from transferlab import artifacts, data, statistics
from transferlab.config import _check_variant, parse_params
from transferlab.data import datafiles, repetitions
from transferlab.errors import ConfigError, DataError
from transferlab.models import networks
from transferlab.report import figures
from transferlab.training import sweep_results, sweeps

HIDDEN = [16, 8]
PIXELS = 36
POOL, TEST = 12, 8  # images per class


def sweep_params(**sweep_overrides: Any) -> dict[str, Any]:
    """Tiny params: a [16, 8] source net, 1 epoch, 2 paired seeds, both sweeps on small grids."""
    params = tiny_params()
    params["sources"]["source"]["network"]["hidden_units"] = HIDDEN
    params["transfer"].update(seeds=2, stopping={"max_epochs": 2, "patience": 1})
    params["variants"] = {
        "scratch": {"strategy": "scratch", "init_from": "source", "target": "mnist", "reuse_layers": 2},
        "reuse2": {"strategy": "reuse", "init_from": "source", "target": "mnist", "reuse_layers": 2},
        "freeze1": {"strategy": "freeze", "init_from": "source", "target": "mnist", "reuse_layers": 2, "frozen_layers": 1},
    }
    params["sweeps"] = {
        "transferability": {"kind": "transferability", "target": "mnist", "init_from": "source"},
        "label_budget": {"kind": "label_budget", "target": "mnist", "labels_per_class": [2, 5, 1000], "variants": ["scratch", "reuse2", "freeze1"]},
    }
    for key, value in sweep_overrides.items():
        params["sweeps"][key] = value
    return params


def target_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Five separable classes of 6 x 6 (PIXELS-pixel) grey images in [0, 1]: a pool and a test set."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, size=(5, PIXELS))

    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(5), per_class)
        x = np.clip(centers[y] + rng.normal(0, 0.1, size=(len(y), PIXELS)), 0, 1)
        return x.reshape(len(x), 6, 6, 1).astype(np.float32), y.astype(np.int64)  # 6 x 6 grey images

    (x_pool, y_pool), (x_test, y_test) = images(POOL), images(TEST)
    return {"x_pool": x_pool, "y_pool": y_pool, "x_test": x_test, "y_test": y_test}


def source_model():
    return networks.build(PIXELS, networks.dnn_layers(HIDDEN, "relu", 5), "he_normal", seed=0)


@pytest.fixture(scope="module")
def setting():
    params = parse_params(sweep_params())
    target = params.targets["mnist"]
    plan = repetitions.plan(params.transfer.seeds, params.transfer.seed, target.seed, params.transfer.resample_labels)
    return params, target_arrays(), {"source": source_model()}, plan


@pytest.fixture(scope="module")
def transferability_rows(setting) -> list[dict[str, Any]]:
    params, arrays, models, plan = setting
    return sweeps.run_sweep(sweeps.transferability_points(params, "transferability"), plan, models, {"source": params.network_for("source")}, arrays)


def test_transferability_grid_keeps_the_source_architecture(setting) -> None:
    from transferlab.training import race

    params, _, models, _ = setting
    points = sweeps.transferability_points(params, "transferability")
    assert [(p.x, p.series) for p in points] == [(k, m) for k in range(3) for m in ("frozen", "fine-tuned")]
    for point in points:
        _check_variant(params, f"sweep k={point.x}", point.variant)  # the rules params.yaml variants obey
        model, _ = race.build_variant_network(point.variant, models["source"], params.network_for("source"), 5, 1)
        assert [layer.units for layer in model.layers[1:-1]] == HIDDEN
        frozen = point.x if point.series == "frozen" else 0
        assert point.variant.frozen_layers == frozen and point.variant.reuse_layers == point.x
        assert point.variant.strategy == ("scratch" if point.x == 0 else "freeze" if frozen else "reuse")
        layers = [16 * (PIXELS + 1), 8 * (16 + 1)]
        assert networks.parameter_counts(model)[1] == sum(layers[:frozen])


def test_label_budget_grid_skips_budgets_the_pool_cannot_give(setting) -> None:
    params, arrays, _, _ = setting
    points, skipped = sweeps.grid("label_budget", params, sweeps.pool_per_class(arrays["y_pool"]))
    assert [(p.series, p.x, p.labels_per_class) for p in points] == [
        (name, n, n) for name in ("scratch", "reuse2", "freeze1") for n in (2, 5)
    ]
    assert [s["x"] for s in skipped] == [1000] and "12 pool images" in skipped[0]["reason"]
    assert points[0].variant == params.variants["scratch"] and points[-1].protocol == params.protocol(params.variants["freeze1"])


def test_runs_are_paired_across_series_and_distinct_across_repetitions(transferability_rows) -> None:
    rows = transferability_rows
    assert len(rows) == 6 * 2
    for repetition in (0, 1):
        mine = {(row["seed"], row["labels_seed"]) for row in rows if row["repetition"] == repetition}
        assert len(mine) == 1  # every point's repetition i: the same labelled images, the same seed
    first = [(row["seed"], row["labels_seed"]) for row in rows if row["repetition"] == 0][0]
    second = [(row["seed"], row["labels_seed"]) for row in rows if row["repetition"] == 1][0]
    assert first[0] != second[0] and first[1] != second[1]
    baseline = [[row["target_accuracy"] for row in rows if row["x"] == 0 and row["series"] == s] for s in ("frozen", "fine-tuned")]
    assert baseline[0] == baseline[1]  # k = 0 is the same scratch run in both lines


def test_rerun_gives_identical_accuracies(setting, transferability_rows) -> None:
    params, arrays, models, plan = setting
    points = [p for p in sweeps.transferability_points(params, "transferability") if p.x == 1]
    again = sweeps.run_sweep(points, plan, models, {"source": params.network_for("source")}, arrays)
    before = [row for row in transferability_rows if row["x"] == 1]
    drop = ("train_seconds", "seconds_to_near_best")
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == [{k: v for k, v in r.items() if k not in drop} for r in before]


def test_a_point_that_is_a_variant_stage_race_is_read_from_it_not_raced_again(setting, transferability_rows,
                                                                             tmp_path: Path, monkeypatch) -> None:
    """k = 2 fine-tuned is exactly variant reuse2's race: same bits whether the sweep races it or reads the stage's."""
    from dataclasses import asdict

    from transferlab.training import race
    from transferlab.training.results import VariantResult

    params, arrays, models, plan = setting
    points = sweeps.transferability_points(params, "transferability")
    twins = sweeps.twins(points, params)
    assert list(twins.values()) == ["reuse2"]
    (point,) = [p for p in points if sweeps.race_key(p) in twins]
    assert (point.x, point.series) == (2, "fine-tuned")
    variant = params.variants["reuse2"]  # raced as stage transfer@reuse2 races it
    outcome = race.race(variant, models["source"], params.network_for("source"), params.protocol(variant), arrays,
                              params.targets["mnist"].labels(), plan)
    raced = [row for row in transferability_rows if (row["x"], row["series"]) == (2, "fine-tuned")]
    assert [row["target_accuracy"] for row in raced] == [r.target_accuracy for r in outcome.results]
    assert [row["best_epoch"] for row in raced] == [r.best_epoch for r in outcome.results]

    # the stage's metrics file and run record, declared as deps, stand in for the race; undeclared or of another race, they do not
    monkeypatch.chdir(tmp_path)
    result = VariantResult("reuse2", "reuse", "source", "mnist", 2, 0, 1, 0, 0, 10, 8, 2,
                           params.protocol(variant).budget(), outcome.results, "run-id")
    artifacts.write_json(Path("metrics/transfer/reuse2.json"), result.to_json())
    artifacts.write_json(Path("runs/transfer/reuse2.json"), result.record())
    both = {"metrics/transfer/reuse2.json", "runs/transfer/reuse2.json"}
    found, notes = sweeps.twin_races(points, params, plan, both)
    assert notes == [] and [asdict(r) for r in found[sweeps.race_key(point)].repetitions] == [asdict(r) for r in outcome.results]
    assert found[sweeps.race_key(point)].run_id == "run-id"  # read from the run record, beside the results
    rows = sweeps.run_sweep(points, plan, models, {"source": params.network_for("source")}, arrays,
                            known={key: twin.repetitions for key, twin in found.items()})
    drop = ("train_seconds", "seconds_to_near_best")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in transferability_rows]
    _, notes = sweeps.twin_races(points, params, plan, set())
    assert notes == ["fine-tuned x=2 is reuse2's race, raced again here: metrics/transfer/reuse2.json is not among this stage's deps (`make pipeline` adds it)"]
    _, notes = sweeps.twin_races(points, params, plan, {"metrics/transfer/reuse2.json"})
    assert notes == ["fine-tuned x=2 is reuse2's race, raced again here: runs/transfer/reuse2.json is not among this stage's deps (`make pipeline` adds it)"]
    other = VariantResult.from_json(result.to_json(), {**result.record(), "labels_per_class": 5})
    artifacts.write_json(Path("runs/transfer/reuse2.json"), other.record())
    found, notes = sweeps.twin_races(points, params, plan, both)
    assert found == {} and notes == ["fine-tuned x=2 is reuse2's race, raced again here: metrics/transfer/reuse2.json holds another race"]


def test_summary_is_statistics_summarize_of_the_tidy_rows(transferability_rows, tmp_path: Path) -> None:
    summary = sweep_results.summarize_rows(transferability_rows)
    assert [(row["x"], row["series"]) for row in summary] == [(k, m) for k in range(3) for m in ("frozen", "fine-tuned")]
    for row in summary:
        values = [r["target_accuracy"] for r in transferability_rows if (r["x"], r["series"]) == (row["x"], row["series"])]
        expected = statistics.summarize(values)
        assert row["target_accuracy"] == expected["mean"] and row["n"] == 2
        assert (row["std"], row["ci95_low"], row["ci95_high"]) == (expected["std"], expected["ci95_low"], expected["ci95_high"])
    artifacts.write_rows(tmp_path / "s.csv", summary + sweep_results.summarize_rows(transferability_rows[:1]))
    back = sweep_results.load_summary(tmp_path / "s.csv")
    assert back[:-1] == summary and back[-1]["ci95_low"] is None
    assert figures.sweep_figure(back, "k", "t").startswith(b"\x89PNG")  # the report's figure reads it back
    with pytest.raises(DataError, match="s.csv: not a sweep summary"):
        (tmp_path / "s.csv").write_text("x,series\n1,a\n")
        sweep_results.load_summary(tmp_path / "s.csv")
    with pytest.raises(DataError, match="nosuch.csv: sweep summary not found"):
        sweep_results.load_summary(tmp_path / "nosuch.csv")


@pytest.mark.parametrize(("sweep", "change", "message"), [
    ("label_budget", {"variants": ["scratch", "nosuch"]}, "sweeps.label_budget.variants: 'nosuch' is not in variants"),
    ("label_budget", {"target": "digits"}, "sweeps.label_budget.target: 'digits' is not in targets"),
    ("label_budget", {"labels_per_class": [5, 5]}, "sweeps.label_budget.labels_per_class: a value is listed twice"),
    ("label_budget", {"labels_per_class": [0]}, "sweeps.label_budget.labels_per_class.0"),
    ("transferability", {"layers": [0, 3]}, "sweeps.transferability.layers: 3 > 2 hidden layers of 'source'"),
    ("transferability", {"init_from": "rbm"}, "sweeps.transferability.init_from: 'rbm': choose a source or a pretrain entry"),
    ("transferability", {"init_from": "zoo_model"}, "sweeps.transferability.init_from: 'zoo_model': choose a source or a pretrain"),
    ("transferability", {"target": "digits"}, "sweeps.transferability.target: 'digits' is not in targets"),
    ("transferability", {"modes": []}, "sweeps.transferability.modes: empty"),
    ("transferability", {"modes": ["thawed"]}, "sweeps.transferability.modes.0"),
])
def test_bad_sweep_params_name_the_key(sweep: str, change: dict[str, Any], message: str) -> None:
    params = sweep_params()
    params["zoo"] = {"zoo_model": {"kind": "registry", "uri": "models:/elsewhere/1"}}  # its depth is unknown until imported
    params["sweeps"][sweep].update(change)
    with pytest.raises(ConfigError) as error:
        parse_params(params)
    assert message in str(error.value)


def test_sweep_sections_default_and_switch_off() -> None:
    raw = tiny_params()
    del raw["sweeps"]
    without = parse_params(raw)  # no `sweeps:` section: defaults, not checked against these variants
    assert without.sweeps["label_budget"].variants == ["scratch", "reuse5", "freeze2"]
    off = parse_params(sweep_params(transferability=None, label_budget=None))
    assert off.sweeps == {"transferability": None, "label_budget": None}
    with pytest.raises(ConfigError, match="sweeps.transferability: is null"):
        sweeps.grid("transferability", off, 10)
    with pytest.raises(ConfigError, match="'nosuch' is not a sweep"):
        sweeps.grid("nosuch", off, 10)
    custom = parse_params(sweep_params(transferability={"kind": "transferability", "target": "mnist", "layers": [2, 0],
                                                        "modes": ["frozen"]}))
    assert [(p.x, p.series) for p in sweeps.transferability_points(custom, "transferability")] == [(2, "frozen"), (0, "frozen")]


def test_a_second_sweep_of_a_kind_is_one_params_entry() -> None:
    """A sweep is a named entry with its kind: another target's transferability rows need no code."""
    params = parse_params(sweep_params(fashion_layers={"kind": "transferability", "target": "mnist", "layers": [0, 1],
                                                       "modes": ["frozen"]}))
    points, _ = sweeps.grid("fashion_layers", params, 10)
    assert [(p.sweep, p.x, p.series) for p in points] == [("fashion_layers", 0, "frozen"), ("fashion_layers", 1, "frozen")]
    with pytest.raises(ConfigError, match="sweeps.other.kind: missing; one of transferability, label_budget"):
        parse_params(sweep_params(other={"target": "mnist"}))


def test_stage_end_to_end(tmp_path: Path) -> None:
    """`python -m stages.sweep label_budget` in a workdir: the three files and a finished parent run with children."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(sweep_params(), sort_keys=False))
    (tmp_path / "stages").mkdir()
    for name in ("__init__.py", "sweep.py"):
        (tmp_path / "stages" / name).write_bytes((ROOT / "stages" / name).read_bytes())
    datafiles.save_npz(tmp_path / "data/prepared/target_mnist.npz", **target_arrays())
    artifacts.save_with(tmp_path / "models/source.keras", source_model().save)
    result = run([sys.executable, "-m", "stages.sweep", "label_budget"], tmp_path)
    assert "sweep_label_budget: 6 points x 2 seed(s), 1 skipped" in result.stdout
    assert "sweep_label_budget: 100%" in result.stderr  # the progress bar
    tidy = (tmp_path / "metrics/sweeps/label_budget.csv").read_text().splitlines()
    assert tidy[0] == ("sweep,x,series,repetition,seed,labels_seed,labels_per_class,setting,target_accuracy,target_loss,"
                       "val_accuracy,best_epoch,epochs_run,stop_reason,converged,train_seconds,seconds_to_near_best")
    assert len(tidy) == 1 + 6 * 2
    summary = sweep_results.load_summary(tmp_path / "plots/sweeps/label_budget.csv")
    assert [(row["series"], row["x"], row["n"]) for row in summary] == [(s, n, 2) for s in ("scratch", "reuse2", "freeze1") for n in (2, 5)]
    metrics = json.loads((tmp_path / "metrics/sweeps/label_budget.json").read_text())
    record = json.loads((tmp_path / "runs/sweeps/label_budget.json").read_text())
    assert metrics == {"points": 6, "runs": 12, "unconverged_runs": metrics["unconverged_runs"]}  # results only
    assert record["sweep"] == "label_budget" and [s["x"] for s in record["skipped"]] == [1000]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([record["mlflow_experiment_id"]])
    parent = next(r for r in runs if r.info.run_id == record["mlflow_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "sweep_label_budget"
    assert len(children) == 6 and all(r.info.status == "FINISHED" for r in children)
    by_point = {(r.data.tags["series"], int(r.data.tags["x"])): r.data.metrics["target_accuracy"] for r in children}
    assert by_point == {(row["series"], row["x"]): pytest.approx(row["target_accuracy"]) for row in summary}
    # the runs table's Dataset column: the target's pool and test set, digests of the prepared arrays
    arrays = target_arrays()
    digests = {"train": data.fingerprint(arrays["x_pool"], arrays["y_pool"]), "test": data.fingerprint(arrays["x_test"], arrays["y_test"])}
    for run_ in (parent, *children):
        logged = {tag.value: i.dataset.digest for i in run_.inputs.dataset_inputs for tag in i.tags if tag.key == "mlflow.data.context"}
        assert logged == digests, run_.info.run_name
    point = next(r for r in children if r.data.tags["x"] == "5")
    assert {t.key: t.value for t in point.inputs.dataset_inputs[0].tags}["train_per_class"] == "4"


def test_stage_rejects_bad_input_in_one_line_before_training(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    for name in ("__init__.py", "sweep.py"):
        (tmp_path / "stages" / name).write_bytes((ROOT / "stages" / name).read_bytes())
    raw = tiny_params()
    del raw["sweeps"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))  # defaults name reuse5
    for argv, message in ((["nosuch"], "sweeps: 'nosuch' is not a sweep (choose from: transferability, label_budget)"),
                          (["label_budget"], "sweeps.label_budget.variants: 'reuse5' is not in variants"),
                          (["transferability"], "target_mnist.npz")):
        result = run([sys.executable, "-m", "stages.sweep", *argv], tmp_path, check=False)
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "metrics").exists()
