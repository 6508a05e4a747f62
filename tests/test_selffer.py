"""Selffer controls (Yosinski et al. 2014, BnB / BnB+): where B_r's layers come from, what BnB keeps of them, the report's split.

B_r is the k = 0 (scratch) race's chosen model of repetition r. Its weights must depend on that
repetition's labelled training images only: with a fixed protocol (no early stopping, one grid
setting) every other image — validation, unlabelled pool, test — can be replaced by noise and B_r
stays bit-identical. BnB (selffer-frozen) keeps B_r's lowest k layers bit-identical.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import ROOT, run
from test_sweeps import source_model, sweep_params, target_arrays

from transferlab import artifacts, data, statistics
from transferlab.config import parse_params
from transferlab.data import datafiles, repetitions
from transferlab.errors import ConfigError, ModelError
from transferlab.models import networks
from transferlab.report import figures, sweep_verdicts
from transferlab.training import sweep_results, sweeps

MODES = ["frozen", "fine-tuned", "selffer-frozen", "selffer-fine-tuned"]
TIMINGS = ("train_seconds", "seconds_to_near_best")


def selffer_params(layers: list[int]) -> dict[str, Any]:
    """Tiny sweep params with every mode; a fixed protocol, so validation images cannot move any weight."""
    params = sweep_params(transferability={"kind": "transferability", "target": "mnist", "init_from": "source", "layers": layers,
                                                  "modes": MODES})
    params["transfer"].update(seeds=2, stopping={"max_epochs": 3, "patience": None})
    return params


@pytest.fixture(scope="module")
def setting():
    params = parse_params(selffer_params([0, 2]))
    target = params.targets["mnist"]
    plan = repetitions.plan(params.transfer.seeds, params.transfer.seed, target.seed, params.transfer.resample_labels)
    return params, target_arrays(), {"source": source_model()}, plan


@pytest.fixture(scope="module")
def source_race(setting):
    """The race of the k = 0 point every selffer point names: its chosen models are the B_r."""
    from transferlab.training import race

    params, arrays, models, plan = setting
    (point,) = {sweeps.race_key(p.selffer_from): p.selffer_from for p in sweeps.transferability_points(params, "transferability")
                if p.selffer_from}.values()
    return point, race.race(point.variant, models["source"], params.network_for("source"), point.protocol, arrays,
                                  point.labels_per_class, plan)


def test_selffer_points_reuse_the_k0_race_and_share_its_row(setting) -> None:
    params, *_ = setting
    points = sweeps.transferability_points(params, "transferability")
    assert [(p.x, p.series) for p in points] == [(k, mode) for k in (0, 2) for mode in MODES]
    baseline = sweeps.race_key(points[0])
    for point in points:
        if point.x == 0:
            assert point.selffer_from is None and sweeps.race_key(point) == baseline  # one scratch run for every line
        elif point.series.startswith("selffer"):
            assert sweeps.race_key(point.selffer_from) == baseline
            assert point.variant.strategy == ("freeze" if point.series == "selffer-frozen" else "reuse")
            assert sweeps.race_key(point) != sweeps.race_key(next(p for p in points if p.x == 2 and p.variant == point.variant
                                                                    and p.selffer_from is None))
        else:
            assert point.selffer_from is None


def test_selffer_network_is_trained_on_the_repetitions_training_images_only(setting, source_race) -> None:
    from transferlab.training import race

    params, arrays, models, plan = setting
    point, outcome = source_race
    rng = np.random.default_rng(5)
    for r, (train, validation) in enumerate(outcome.draws):
        assert len(train) and len(validation) and not set(train) & set(validation)
        assert len(train) == 5 * data.split_per_class(arrays["y_pool"], point.labels_per_class, point.protocol.validation_fraction)[0]
        # every image but repetition r's labelled training images is noise (validation, the rest of the pool, test)
        others = np.setdiff1d(np.arange(len(arrays["y_pool"])), train)
        noisy = {**arrays, "x_pool": arrays["x_pool"].copy(), "x_test": rng.uniform(size=arrays["x_test"].shape).astype(np.float32)}
        noisy["x_pool"][others] = rng.uniform(size=(len(others), *arrays["x_pool"].shape[1:]))
        again = race.race(point.variant, models["source"], params.network_for("source"), point.protocol, noisy,
                                point.labels_per_class, plan)
        assert [np.array_equal(a, b) for a, b in zip(again.models[r].get_weights(), outcome.models[r].get_weights(), strict=True)] \
            == [True] * 6
        # ... and one training image changed does change B_r: the check has teeth
        noisy["x_pool"][train[0]] = 1.0 - noisy["x_pool"][train[0]]
        moved = race.race(point.variant, models["source"], params.network_for("source"), point.protocol, noisy,
                                point.labels_per_class, plan)
        assert not np.array_equal(moved.models[r].get_weights()[0], outcome.models[r].get_weights()[0])
    assert not np.array_equal(outcome.models[0].get_weights()[0], outcome.models[1].get_weights()[0])  # one B per repetition


def test_bnb_keeps_b_layers_bit_identical_and_the_sweep_rows_are_its_race(setting, source_race) -> None:
    from transferlab.training import race

    params, arrays, models, plan = setting
    _, outcome = source_race
    points = sweeps.transferability_points(params, "transferability")
    rows = sweeps.run_sweep(points, plan, models, {"source": params.network_for("source")}, arrays)
    assert len(rows) == len(points) * 2
    selffers = [networks.as_init_model(model) for model in outcome.models]
    for point in (p for p in points if p.selffer_from is not None):
        mine = race.race(point.variant, selffers, params.network_for("source"), point.protocol, arrays,
                               point.labels_per_class, plan)
        swept = [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows if (row["x"], row["series"]) == (2, point.series)]
        assert [(row["repetition"], row["target_accuracy"], row["best_epoch"]) for row in swept] == \
            [(run_.repetition, run_.target_accuracy, run_.best_epoch) for run_ in mine.results]
        for r, (model, b) in enumerate(zip(mine.models, outcome.models, strict=True)):
            for i in (1, 2):  # BnB's hidden_i is B_r's new_hidden_i
                same = [np.array_equal(x, y) for x, y in zip(model.get_layer(networks.hidden_name(i)).get_weights(),
                                                             b.get_layer(f"new_hidden{i}").get_weights(), strict=True)]
                assert same == ([True, True] if point.series == "selffer-frozen" else [False, False]), (point.series, r, i)


def test_per_repetition_init_models_must_match_the_plan(setting) -> None:
    from transferlab.training import race

    params, arrays, models, plan = setting
    point = next(p for p in sweeps.transferability_points(params, "transferability") if p.selffer_from is not None)
    with pytest.raises(ModelError, match="^1 init models for 2 repetitions: give one, or one per repetition$"):
        race.race(point.variant, [models["source"]], params.network_for("source"), point.protocol, arrays,
                        point.labels_per_class, plan)


def test_an_unknown_mode_is_one_line_naming_the_key() -> None:
    raw = selffer_params([0, 1])
    raw["sweeps"]["transferability"]["modes"] = ["frozen", "selffer"]
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    message = str(error.value)
    assert "\n" not in message and message.startswith("params.yaml: sweeps.transferability.modes.1: 'selffer': input should be ")
    assert "'selffer-frozen'" in message and "'selffer-fine-tuned'" in message


def sweep_rows(accuracy: dict[tuple[int, str], list[float]], unconverged: tuple[int, str] | None = None) -> list[dict[str, Any]]:
    return [{"sweep": "transferability", "x": x, "series": series, "repetition": i, "target_accuracy": value,
             "converged": (x, series) != unconverged, "seconds_to_near_best": 1.0}
            for (x, series), values in accuracy.items() for i, value in enumerate(values)]


BASE = [0.90, 0.91, 0.92]


def test_report_splits_the_frozen_loss_with_paired_intervals() -> None:
    rows = sweep_rows({
        (0, "frozen"): BASE, (0, "selffer-frozen"): BASE,
        (1, "frozen"): [0.89, 0.905, 0.915], (1, "selffer-frozen"): [0.90, 0.91, 0.92],  # no loss: neither
        (3, "frozen"): [0.80, 0.807, 0.822], (3, "selffer-frozen"): [0.88, 0.889, 0.901],  # specificity the larger
        (5, "frozen"): [0.70, 0.72, 0.71], (5, "selffer-frozen"): [0.72, 0.73, 0.73],  # co-adaptation the larger
    })
    (text,), conclusions = sweep_verdicts.selffer_verdict(sweep_results.summarize_rows(rows), rows)
    co = statistics.paired_difference(BASE, [0.88, 0.889, 0.901])
    specific = statistics.paired_difference([0.88, 0.889, 0.901], [0.80, 0.807, 0.822])
    low, high = f"{100 * co['ci95_low']:+.1f}", f"{100 * co['ci95_high']:+.1f}"
    assert f"k = 3: broken co-adaptation (k = 0 − BnB) {100 * co['mean_difference']:+.1f} [{low}, {high}] points" in text
    assert f"specificity (BnB − AnB) {100 * specific['mean_difference']:+.1f} [" in text
    assert "k = 1: broken co-adaptation (k = 0 − BnB) +0.0 [+0.0, +0.0] points, Holm p 1.000" in text
    assert "9 comparisons, Holm-adjusted" in text  # three losses at each of three k, corrected together
    assert conclusions["transferability: selffer controls, the two losses"]["frozen k = 3: co-adaptation minus specificity"] == "✘"
    assert text.endswith("**Conclusion (frozen rows):** neither distinguishable from zero at k = 1; specificity dominates at"
                         " k = 3; co-adaptation dominates at k = 5.")
    assert "fine-tuned" not in text.split("**Conclusion")[0].split("(Yosinski")[0]


def test_report_makes_no_claim_without_a_converged_baseline_or_point() -> None:
    rows = sweep_rows({(0, "frozen"): BASE, (0, "selffer-frozen"): BASE, (2, "frozen"): [0.7, 0.8, 0.75],
                       (2, "selffer-frozen"): [0.8, 0.85, 0.9]}, unconverged=(2, "selffer-frozen"))
    (text,), _ = sweep_verdicts.selffer_verdict(sweep_results.summarize_rows(rows), rows)
    assert "k = 2: no claim (unconverged runs" in text and "Conclusion" not in text
    rows = sweep_rows({(2, "frozen"): [0.7, 0.8, 0.75], (2, "selffer-frozen"): [0.8, 0.85, 0.9]})
    (text,), _ = sweep_verdicts.selffer_verdict(sweep_results.summarize_rows(rows), rows)
    assert "no k = 0 (scratch) point, so the loss from broken co-adaptation cannot be measured" in text
    only_source = sweep_rows({(0, "frozen"): BASE, (2, "frozen"): [0.7, 0.8, 0.75]})
    assert sweep_verdicts.selffer_verdict(sweep_results.summarize_rows(only_source), only_source) == ([], {})
    both = sweep_rows({(0, "frozen"): BASE, (0, "selffer-frozen"): BASE, (2, "selffer-frozen"): [0.95, 0.96, 0.97]})
    layers, _ = sweep_verdicts.layers_verdict(sweep_results.summarize_rows(both), both)
    assert "selffer" not in layers  # a control, not a way to reuse a network


def test_sweep_stage_writes_selffer_rows_the_report_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(selffer_params([0, 1]), sort_keys=False))
    (tmp_path / "stages").mkdir()
    for name in ("__init__.py", "sweep.py"):
        (tmp_path / "stages" / name).write_bytes((ROOT / "stages" / name).read_bytes())
    datafiles.save_npz(tmp_path / "data/prepared/target_mnist.npz", **target_arrays())
    artifacts.save_with(tmp_path / "models/source.keras", source_model().save)
    result = run([sys.executable, "-m", "stages.sweep", "transferability"], tmp_path)
    assert "sweep_transferability: 8 points x 2 seed(s)" in result.stdout
    rows = sweep_results.load_rows(tmp_path / "metrics/sweeps/transferability.csv")
    assert [(row["x"], row["series"]) for row in rows] == [(k, mode) for k in (0, 1) for mode in MODES for _ in range(2)]
    at_zero = {mode: [row["target_accuracy"] for row in rows if (row["x"], row["series"]) == (0, mode)] for mode in MODES}
    assert len({tuple(values) for values in at_zero.values()}) == 1  # one scratch baseline for every line
    summary = sweep_results.load_summary(tmp_path / "plots/sweeps/transferability.csv")
    assert {row["series"] for row in summary} == set(MODES)
    paragraphs, _ = sweep_verdicts.selffer_verdict(summary, rows)
    assert [p.split(" rows**")[0] for p in paragraphs] == ["**Selffer controls, frozen", "**Selffer controls, fine-tuned"]
    assert "k = 1: broken co-adaptation (k = 0 − BnB)" in paragraphs[0] and "(BnB+ − AnB+)" in paragraphs[1]
    assert figures.sweep_figure(summary, "k", "t").startswith(b"\x89PNG")
    # the report's sweep section, from these files: the selffer subsection, generated from them
    from stages import report as report_stage
    from transferlab.report import render

    raw = selffer_params([0, 1])
    raw["sweeps"]["label_budget"] = None
    document = render.Report("t")
    monkeypatch.chdir(tmp_path)
    report_stage.sweep_section(document, parse_params(raw), {})
    markdown = document.markdown("figures")
    assert "### Selffer controls: broken co-adaptation or specificity?" in markdown
    assert paragraphs[0] in markdown and paragraphs[1] in markdown and "Layer transferability" in markdown
