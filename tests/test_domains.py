"""What another domain changes: the same recipe on two targets of one source, matched by params, judged as a family."""
from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import tiny_params
from test_reporting import result

from transferlab import statistics
from transferlab.config import parse_params
from transferlab.report import domains, verdicts


def params_with_fashion(**variants):
    params = tiny_params()
    params["targets"]["fashion"] = {**params["targets"]["mnist"]}
    params["variants"].update({"fashion_scratch": {**params["variants"]["scratch"], "target": "fashion"},
                               "clothes_frozen": {**params["variants"]["freeze2"], "target": "fashion"}, **variants})
    return parse_params(params)


def on(target: str, base):
    return replace(base, target=target)


MNIST = [on("mnist", result("scratch", "scratch", [0.80, 0.82, 0.81, 0.80, 0.83])),
         on("mnist", result("freeze2", "freeze", [0.90, 0.93, 0.91, 0.92, 0.94], frozen_layers=2))]
FASHION = [on("fashion", result("fashion_scratch", "scratch", [0.80, 0.81, 0.82, 0.80, 0.82])),
           on("fashion", result("clothes_frozen", "freeze", [0.78, 0.80, 0.79, 0.78, 0.81], frozen_layers=2))]


def test_the_same_recipe_is_matched_by_params_not_by_name_and_its_gain_change_judged() -> None:
    params = params_with_fashion()
    rankings = {"mnist": verdicts.rank(MNIST), "fashion": verdicts.rank(FASHION)}
    [comparison] = domains.compare(params, rankings)
    assert (comparison.reference, comparison.other) == ("mnist", "fashion")
    assert list(comparison.recipes) == ["freeze2 → clothes_frozen"]  # scratch is the baseline, not a recipe
    verdict = comparison.families[verdicts.TEST].get("freeze2 → clothes_frozen")
    near = [a - b for a, b in zip([0.90, 0.93, 0.91, 0.92, 0.94], [0.80, 0.82, 0.81, 0.80, 0.83])]
    far = [a - b for a, b in zip([0.78, 0.80, 0.79, 0.78, 0.81], [0.80, 0.81, 0.82, 0.80, 0.82])]
    expected = statistics.paired_difference(far, near)
    assert verdict["mean_difference"] == pytest.approx(expected["mean_difference"]) and verdict["mean_difference"] < 0
    assert verdict["significant"] and verdict["family_size"] == 1
    assert "freeze2 → clothes_frozen: +10.8 → -1.8 points over scratch, a change of -12.6 [" in domains.summary(comparison)
    frame = domains.table(comparison, verdicts.TEST)
    assert list(frame.columns) == ["recipe", "gain on mnist", "gain on fashion", "change", "p (Holm)", "stability"]


def test_a_different_recipe_or_another_source_is_not_compared() -> None:
    params = params_with_fashion(clothes_frozen={"strategy": "freeze", "init_from": "source", "target": "fashion",
                                                 "reuse_layers": 3, "frozen_layers": 1, "new_hidden": [8]})
    rankings = {"mnist": verdicts.rank(MNIST), "fashion": verdicts.rank(FASHION)}
    assert domains.compare(params, rankings) == []  # frozen_layers differ: not the same recipe
    other_source = {"fashion": verdicts.rank([replace(r, init_from="digits10") for r in FASHION]), "mnist": verdicts.rank(MNIST)}
    assert domains.compare(params_with_fashion(), other_source) == []
