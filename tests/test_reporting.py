"""The report: who may be ranked, what the generated text claims, the HTML, the stage on hand-made results (no TF)."""
from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import ROOT, tiny_params, write_result

from transferlab import artifacts, statistics
from transferlab.errors import DataError
from transferlab.report import (
    figures,
    protocol,
    recommendation,
    render,
    speed,
    sweep_verdicts,
    tables,
    verdicts,
)
from transferlab.training import sweep_results
from transferlab.training.results import RepetitionResult, SettingResult, VariantResult

BUDGET = {"grid": ["sgd 0.01 clip 1", "sgd 0.1 clip 1", "adam 0.001 clip 1"], "max_epochs": 300, "patience": 20,
          "min_delta": 0.0, "monitor": "val_loss", "validation_fraction": 0.2, "batch_size": 32}
SETTINGS = ("sgd 0.01", "sgd 0.1", "adam 0.001")


def result(name: str, strategy: str, accuracies: list[float], *, unconverged: int = 0, budget: dict[str, Any] | None = None,
           near: float = 0.5, per_epoch: float = 0.01, frozen_layers: int = 0, chosen: str = "sgd 0.1") -> VariantResult:
    """A variant's result as the transfer stage writes it; the first `unconverged` repetitions hit the epoch cap."""
    repetitions = [
        RepetitionResult(
            repetition=i, seed=7 + i, labels_seed=42 + i, setting=chosen, target_accuracy=accuracy, target_loss=0.5,
            val_accuracy=0.9, val_loss=0.3, best_epoch=40 if i >= unconverged else 299, epochs_run=60 if i >= unconverged else 300,
            stop_reason="patience" if i >= unconverged else "max_epochs", converged=i >= unconverged, train_seconds=60 * per_epoch,
            seconds_to_best=0.6, seconds_to_near_best=near, seconds_per_epoch=per_epoch,
            settings=[SettingResult(s, 0.3, 0.9 - 0.01 * j, 40, 60, "patience", True) for j, s in enumerate(SETTINGS)],
            # first at 99 % of its best at epoch 100 × near + i (a little spread over repetitions)
            val_accuracy_per_epoch=[0.5] * (round(100 * near) + i - 1) + [0.9] * (101 - round(100 * near) - i),
        )
        for i, accuracy in enumerate(accuracies)
    ]
    return VariantResult(
        variant=name, strategy=strategy, init_from="source", target="mnist", reuse_layers=3, frozen_layers=frozen_layers,
        new_layers=2, trainable_params=4235, frozen_params=250550 if frozen_layers else 0, labels_per_class=100,
        train_per_class=80, validation_per_class=20, budget=dict(budget or BUDGET), repetitions=repetitions,
        mlflow_run_id=f"{name}0123456789abcdef", mlflow_experiment_id="1",
    )


SCRATCH = result("scratch", "scratch", [0.80, 0.82, 0.81], near=0.40)
REUSE = result("reuse5", "reuse", [0.85, 0.88, 0.86], near=0.20)
FREEZE = result("freeze2", "freeze", [0.70, 0.72, 0.71], frozen_layers=2, near=0.75, per_epoch=0.0084)
CACHE = replace(FREEZE, variant="cache2", strategy="cache",
                repetitions=[replace(r, seconds_per_epoch=0.0025, seconds_to_near_best=0.39) for r in FREEZE.repetitions])


def test_paired_difference_against_scratch_cell_by_cell_and_in_the_text() -> None:
    diff = verdicts.paired_vs(REUSE, SCRATCH)
    assert diff == statistics.paired_difference([0.85, 0.88, 0.86], [0.80, 0.82, 0.81])
    ranking = verdicts.rank([SCRATCH, REUSE, FREEZE])
    corrected = ranking.vs_scratch(REUSE)
    # two comparisons against scratch: freeze2's constant difference has p = 0, the first of Holm's steps (times 2);
    # reuse5's is the second step (times 1)
    assert ranking.vs_scratch(FREEZE)["p_adjusted"] == 0.0 and corrected["p_adjusted"] == pytest.approx(diff["p_value"])
    assert render.difference_cell(corrected) == "+5.3 [+3.9, +6.8] ✔"
    assert render.difference_cell(ranking.vs_scratch(FREEZE)).endswith(" ✘")
    assert verdicts.paired_vs(SCRATCH, SCRATCH) is None and ranking.vs_scratch(SCRATCH) is None
    row = tables.variant_row(ranking, REUSE, lambda r: "link")
    assert row["test accuracy %"] == "86.3 ± 3.8" and row["test Holm p"] == f"{corrected['p_adjusted']:.3f}"
    assert row["test stability"] == "stable 100 %" and row["MLflow run"] == "link"
    detail = tables.detail_row(REUSE)
    assert detail["chosen setting"] == "sgd 0.1 ×3" and detail["stop"] == "patience ×3" and detail["epochs to 99 %"] == "21.0"
    text = verdicts.accuracy_verdict(ranking)
    assert text.startswith("Against scratch (scratch, 81.0 % (95 % CI [78.5, 83.5])); 2 comparisons, Holm-adjusted;")
    assert "Significantly more accurate: reuse5 (+5.3 [+3.9, +6.8] points, Holm p 0.004 (permutation 0.500), stable 100 %)." in text
    assert "Significantly less accurate: 1 of 2 (freeze2 (" in text
    noisy = verdicts.accuracy_verdict(verdicts.rank([SCRATCH, result("freeze3", "freeze", [0.70, 0.95, 0.85])]))
    assert "No variant is significantly more accurate. Not distinguishable from scratch: 1 (freeze3);" in noisy
    assert "a true difference of ±37.8 points (median) would have been detected with power 0.8" in noisy
    single = verdicts.accuracy_verdict(verdicts.rank([result("scratch", "scratch", [0.8]), result("reuse5", "reuse", [0.9])]))
    assert "set transfer.seeds > 1" in single


def test_holm_takes_back_a_verdict_that_one_comparison_alone_would_make() -> None:
    """p ≈ 0.02 alone is a ✔; beside four more comparisons the family-wise correction takes it back."""
    modest = result("reuse3", "reuse", [0.83, 0.84, 0.845])
    alone = verdicts.rank([SCRATCH, modest])
    assert alone.vs_scratch(modest)["p_value"] < 0.05 and alone.vs_scratch(modest)["significant"]
    crowd = [result(f"other{i}", "reuse", [0.80 + 0.02 * i, 0.81, 0.83 - 0.02 * i]) for i in range(4)]
    family = verdicts.rank([SCRATCH, modest, *crowd])
    assert family.vs_scratch(modest)["p_value"] == alone.vs_scratch(modest)["p_value"]
    assert family.vs_scratch(modest)["p_adjusted"] > 0.05 and not family.vs_scratch(modest)["significant"]
    assert "5 comparisons, Holm-adjusted" in verdicts.accuracy_verdict(family)
    assert family.conclusions()["mnist: against scratch, test set"]["reuse3"] == "–"


def test_unequal_tuning_budgets_are_refused_a_rank_and_say_which_keys_differ() -> None:
    short = result("reuse3", "reuse", [0.95, 0.96, 0.97], budget={**BUDGET, "max_epochs": 30, "grid": ["sgd 0.01 clip 1"]})
    ranking = verdicts.rank([short, FREEZE, SCRATCH, REUSE])
    assert ranking.baseline is SCRATCH and [r.variant for r in ranking.ranked] == ["reuse5", "scratch", "freeze2"]
    ((refused, reason),) = ranking.not_ranked
    assert refused is short
    assert reason == "grid sgd 0.01 clip 1 (reference sgd 0.01 clip 1, sgd 0.1 clip 1, adam 0.001 clip 1); max_epochs 30 (reference 300)"
    table = tables.not_ranked(ranking, lambda r: "link")
    assert table["why not ranked"].tolist() == [reason] and "vs scratch (pp)" not in table
    assert "reuse3" not in verdicts.accuracy_verdict(ranking) + speed.speed_verdict(ranking)  # the best mean, but not ranked
    assert ranking.left_out == ["reuse3 (other tuning budget)"]
    # without a scratch baseline the most common budget is the reference; another label split is another budget too
    other_split = replace(REUSE, variant="reuse5_50", labels_per_class=50, train_per_class=40, validation_per_class=10)
    assert [r.variant for r, _ in verdicts.rank([REUSE, FREEZE, other_split]).not_ranked] == ["reuse5_50"]


def test_an_unconverged_variant_is_marked_and_never_named() -> None:
    best_but_unconverged = result("freeze5", "freeze", [0.95, 0.96, 0.97], unconverged=2, near=0.01, per_epoch=0.001)
    ranking = verdicts.rank([SCRATCH, REUSE, best_but_unconverged])
    assert [r.variant for r in ranking.ranked] == ["reuse5", "scratch", "freeze5"]  # unconverged rows come last
    assert tables.stop_cell(best_but_unconverged) == "max_epochs ×2, patience ×1 ⚠ unconverged 2/3"
    assert ranking.left_out == ["freeze5 (unconverged 2/3)"]
    said = verdicts.accuracy_verdict(ranking) + speed.speed_verdict(ranking)
    said += " ".join(recommendation.recommendation(ranking, None, None)[0]) + verdicts.best_claimable(ranking)
    assert "freeze5" not in said and "reuse5" in said
    stalled = verdicts.rank([result("scratch", "scratch", [0.8, 0.8, 0.8], unconverged=1), REUSE])
    assert verdicts.accuracy_verdict(stalled).startswith("No accuracy claim: the scratch baseline scratch did not converge (1/3")


def test_the_summary_keeps_more_accurate_and_faster_in_separate_sentences() -> None:
    ranking = verdicts.rank([SCRATCH, REUSE, FREEZE])
    accurate, faster = verdicts.accuracy_verdict(ranking), speed.speed_verdict(ranking)
    assert not re.search(r"\d s\b|sooner|faster|per epoch", accurate)  # accuracy only, every number with its interval
    assert "points" not in faster and "CI" not in faster
    assert faster.startswith("Time to 99 % of a run's own best validation accuracy, judged in epochs (the same in two runs"
                             " of the same params on one machine; seconds are not); scratch: 41.0 epochs.")
    assert "sooner: reuse5 0.51× [0.48, 0.54] (21.0 epochs)." in faster
    assert "Later: freeze2 1.85× [1.80, 1.91]." in faster  # 76 epochs: later, though its epochs cost 8.40 ms, not 10.00
    assert "not judged (one core's median ms per epoch, which moves between runs): reuse5 21.0 epochs × 10.00 ms" in faster
    slow_reuse = verdicts.rank([SCRATCH, result("reuse5", "reuse", [0.85, 0.88, 0.86], near=0.9)])
    assert "no variant gets there significantly sooner than scratch" in speed.speed_verdict(slow_reuse)


def test_a_speed_verdict_rests_on_epochs_not_on_a_timer_that_moves() -> None:
    """Two runs whose timers differ by 2x in one repetition (what the issue measured) say the same about speed."""
    ranking = verdicts.rank([SCRATCH, REUSE, FREEZE])
    noisy = replace(REUSE, repetitions=[replace(r, seconds_to_near_best=r.seconds_to_near_best * (2 if i == 1 else 1),
                                                train_seconds=r.train_seconds * (2 if i == 1 else 1),
                                                seconds_per_epoch=r.seconds_per_epoch * (2 if i == 1 else 1))
                                        for i, r in enumerate(REUSE.repetitions)])
    again = verdicts.rank([SCRATCH, noisy, FREEZE])
    assert speed.speed_verdict(again) == speed.speed_verdict(ranking)  # the median epoch cost did not move
    # a cost that moves for every repetition (the whole run slower) changes the measured figures, never the claims
    slow = verdicts.rank([SCRATCH, replace(REUSE, repetitions=[replace(r, seconds_per_epoch=3 * r.seconds_per_epoch)
                                                               for r in REUSE.repetitions]), FREEZE])
    assert speed.speed_claims(slow) == speed.speed_claims(ranking) and speed.speed_verdict(slow) != speed.speed_verdict(ranking)


def test_cache_speed_up_sentence_compares_the_freeze_twin() -> None:
    ranking = verdicts.rank([SCRATCH, FREEZE, CACHE])
    assert speed.cache_twins(ranking.claimable) == [(CACHE, FREEZE)]
    assert ("Caching the frozen layers (cache2) trains an epoch in 2.50 ms against 8.40 ms for its twin freeze2"
            " (3.4× as fast per epoch, mean wall time of one core), with the same test accuracy in every repetition.") in speed.speed_verdict(ranking)
    drifted = replace(CACHE, repetitions=[replace(r, target_accuracy=r.target_accuracy + 0.01 * i) for i, r in enumerate(CACHE.repetitions)])
    assert "with test accuracy +1.0 points (paired 95 % CI [-1.5, +3.5]) against it." in speed.cache_sentence(drifted, FREEZE)
    other_budget = replace(CACHE, budget={**BUDGET, "patience": 5})
    assert speed.cache_twins([FREEZE, other_budget]) == []
    # identical by construction and identical in fact: one comparison against scratch, listed under both names
    assert ranking.aliases == {"cache2": "freeze2"} and ranking.families[verdicts.TEST].size == 1
    assert ranking.conclusions()["mnist: against scratch, test set"] == {"freeze2": "✘", "cache2": "✘"}
    renamed = replace(CACHE, variant="cached_two")  # a name carries no meaning: the table's twin does
    assert verdicts.rank([SCRATCH, FREEZE, renamed]).aliases == {"cached_two": "freeze2"}


def test_protocol_is_stated_from_the_recorded_budget() -> None:
    text = protocol.protocol(SCRATCH)
    for part in ("Each of 3 repetitions draws 100 labelled images per class", "80 for training and 20 for validation",
                 "validation share 0.2", "3 optimizer settings (sgd 0.01 clip 1; sgd 0.1 clip 1; adam 0.001 clip 1)",
                 "early stopping on val_loss (patience 20 epochs", "at most 300 epochs", "batch size 32", "scored once"):
        assert part in text, part
    fixed = replace(SCRATCH, budget={**BUDGET, "patience": None, "max_epochs": 20, "grid": ["sgd 0.01 clip 1"]})
    assert "a fixed 20 epochs (no early stopping, last epoch kept)" in protocol.protocol(fixed)
    assert "1 optimizer setting (sgd 0.01 clip 1)" in protocol.protocol(fixed)
    same, other = verdicts.rank([SCRATCH, REUSE]), verdicts.rank([fixed])
    assert protocol.protocols({"mnist": same, "digits": verdicts.rank([REUSE])}) == [text]
    assert [p[:32] for p in protocol.protocols({"mnist": same, "digits": other})] == [
        "**Protocol, target `mnist`.** Ea", "**Protocol, target `digits`.** E"]


def sweep_rows(name: str, accuracy: dict[tuple[int, str], list[float]], *, unconverged: tuple[int, str] | None = None,
               near: dict[str, float] | None = None) -> list[dict[str, Any]]:
    return [{"sweep": name, "x": x, "series": series, "repetition": i, "target_accuracy": value,
             "converged": (x, series) != unconverged or i > 0, "seconds_to_near_best": (near or {}).get(series, 1.0)}
            for (x, series), values in accuracy.items() for i, value in enumerate(values)]


def test_recommendation_claims_only_what_paired_intervals_and_converged_points_support() -> None:
    budget = sweep_rows("label_budget", {
        (5, "scratch"): [0.35, 0.40, 0.37], (5, "reuse5"): [0.36, 0.39, 0.39], (5, "freeze2"): [0.99, 0.99, 0.99],
        (100, "scratch"): [0.90, 0.91, 0.92], (100, "reuse5"): [0.85, 0.86, 0.86],
    }, unconverged=(5, "freeze2"), near={"scratch": 0.6, "reuse5": 0.2})
    transfer = sweep_rows("transferability", {
        (0, "frozen"): [0.80, 0.81, 0.82], (2, "frozen"): [0.86, 0.87, 0.86], (5, "frozen"): [0.70, 0.70, 0.71],
        (0, "fine-tuned"): [0.80, 0.81, 0.82], (3, "fine-tuned"): [0.80, 0.83, 0.81],
    })
    paragraphs, conclusions = recommendation.recommendation(
        verdicts.rank([SCRATCH, REUSE]), (sweep_results.summarize_rows(transfer), transfer), (sweep_results.summarize_rows(budget), budget))
    best, safe, use, strategy, accurate, sooner, layers = paragraphs
    # n = 3: the exact permutation check cannot go below 2/2^3 = 0.25, and says so by its value
    assert best == ("**Best on the test set:** reuse5 86.3 % [82.5, 90.1], +5.3 [+3.9, +6.8] points, Holm p 0.004 (permutation"
                    " 0.250), stable 100 %.")
    assert safe.endswith("reuse5.") and use.startswith("**Use:** reuse5: robustly more accurate than scratch")
    assert strategy.startswith("Strategy (100 labels per class): Against scratch (scratch, 81.0 %")
    assert ("with 5, reuse5 38.0 % [33.7, 42.3] and scratch 37.3 % [31.1, 43.6] are not distinguishable (+0.7 [-3.1, +4.5]"
            " points, Holm p 0.529 (permutation 0.750), ±7.1 detectable, fragile 78 %)") in accurate
    assert ("with 100, scratch ends most accurate, 91.0 % [88.5, 93.5], +5.3 [+3.9, +6.8] points, Holm p 0.008 (permutation"
            " 0.500), stable 100 % over reuse5") in accurate
    assert "freeze2" not in accurate and sooner.endswith("Left out (unconverged runs): freeze2 at 5.")
    assert "with 5, reuse5 in 0.200 s against 0.600 s for scratch (3.0×, mean wall time, not a tested claim)" in sooner
    assert "every k tested against k = 0, 3 comparisons, Holm-adjusted" in layers
    assert ("frozen, k = 2: 86.3 % [84.9, 87.8], +5.3 [+2.5, +8.2] points, Holm p 0.031 (permutation 0.750), stable 100 % over"
            " k = 0 (scratch)") in layers
    assert ("fine-tuned, k = 3: 81.3 % [77.5, 85.1], +0.3 [-3.5, +4.1] points, Holm p 0.742 (permutation 1.000), ±8.7 detectable,"
            " stable 93 % against k = 0 (scratch), not a significant gain") in layers
    assert layers.endswith("Significantly below k = 0: frozen, k = 5.")
    assert conclusions == {"label_budget: best series against the runner-up": {"5": "–", "100": "scratch ✔"},
                           "transferability: every k against k = 0 (scratch)": {"frozen, k = 2": "✔", "frozen, k = 5": "✘",
                                                                                 "fine-tuned, k = 3": "–"}}
    assert recommendation.recommendation(None, None, None) == (["No variant or sweep to recommend from."], {})
    stalled = sweep_rows("label_budget", {(5, "scratch"): [0.3]}, unconverged=(5, "scratch"))
    assert sweep_verdicts.budget_verdict(sweep_results.summarize_rows(stalled), stalled)[0][0].endswith(
        "(scratch at 5), so the sweep supports no claim.")
    no_baseline = sweep_rows("transferability", {(0, "frozen"): [0.3, 0.3], (1, "frozen"): [0.5, 0.6]}, unconverged=(0, "frozen"))
    assert "frozen, k = 1: 55.0 % [-8.5, 118.5], with no converged k = 0 (scratch) point" in sweep_verdicts.layers_verdict(
        sweep_results.summarize_rows(no_baseline), no_baseline)[0]
    stalled = sweep_rows("transferability", {(0, "frozen"): [0.3]}, unconverged=(0, "frozen"))
    assert "(frozen k = 0), so the sweep" in sweep_verdicts.layers_verdict(sweep_results.summarize_rows(stalled), stalled)[0]


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"] or "")
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")


def test_html_renders_markdown_links_and_bold_and_keeps_tables_in_a_scroll_box() -> None:
    ui = render.ui_address("http://mlflow.example:5000/")
    report = render.Report("t <1>")
    report.paragraph("**What this run shows.** `k = 2` beats *scratch*; see [the docs](https://example.org/a?b=1&c=2) <script>")
    report.table(pd.DataFrame([{"variant": "scratch", "MLflow run": render.run_link(ui, "3", "abcdef0123456789")}]))
    report.figure(render.Figure("f", "a figure", b"\x89PNG fake"))
    page = report.html()
    assert "](" not in page and "**" not in page and "<script>" not in page and "&lt;script&gt;" in page
    assert "<strong>What this run shows.</strong> <code>k = 2</code> beats <em>scratch</em>" in page
    parser = Links()
    parser.feed(page)
    assert parser.hrefs == ["https://example.org/a?b=1&c=2", "http://mlflow.example:5000/#/experiments/3/runs/abcdef0123456789?workflowType=machine_learning",
                            "figures/f.png", "figures/f.png"]  # a figure enlarges on click: the image and its caption link its PNG
    assert parser.images == ["data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()]
    assert '<a href="figures/f.png" title="open at full size"><img alt="a figure"' in page
    assert '<div class="table-wrap"><table class="results">' in page and ".table-wrap{max-width:100%;overflow-x:auto" in page
    assert "[abcdef01](http://mlflow.example:5000/#/experiments/3/runs/abcdef0123456789?workflowType=machine_learning) |" in report.markdown("figures")
    assert render.ui_address("sqlite:////tmp/mlflow.db") == render.ui_address(None) == "http://127.0.0.1:5000"


def test_per_epoch_panels_stay_readable_with_22_variants() -> None:
    """Small multiples: every variant drawn exactly once, no panel with more than MAX_CURVES of them,
    a crowded strategy split by init source first."""
    strategies = ["scratch"] + ["reuse"] * 11 + ["freeze"] * 6 + ["cache"] * 2 + ["unfreeze"] * 2
    results = [replace(REUSE, variant=f"v{i}", strategy=strategy, init_from="source" if i % 3 else f"pre{i}")
               for i, strategy in enumerate(strategies)]
    found = figures.panels(results)
    drawn = [r.variant for _, members in found for r in members]
    assert sorted(drawn) == sorted(r.variant for r in results)
    assert max(len(members) for _, members in found) <= figures.MAX_CURVES
    assert [name for name, _ in found] == [
        "scratch", "reuse · from source (1/2)", "reuse · from source (2/2)", "reuse · other init",
        "freeze · from source", "freeze · other init", "cache", "unfreeze"]
    assert all(r.init_from == "source" for name, members in found if "from source" in name for r in members)
    histories = {r.variant: pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.5, 0.6], "elapsed": [0.1, 0.2]}) for r in results}
    assert figures.curve_panels(results, histories, "epoch", "epoch", "t").startswith(b"\x89PNG")


def test_the_curves_run_forward_in_epochs_and_each_legend_names_the_median_cost_of_an_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """No curve against seconds: each legend entry carries the median ms per epoch (one slow repetition does not move it)."""
    drawn: list[Any] = []
    monkeypatch.setattr(figures, "png", lambda fig: drawn.append(fig) or b"")
    slow_once = replace(REUSE, repetitions=[replace(r, seconds_per_epoch=0.5 if i == 0 else 0.012)
                                            for i, r in enumerate(REUSE.repetitions)])
    histories = {r.variant: pd.DataFrame({"epoch": [1, 2, 3], "val_accuracy": [0.5, 0.6, 0.55], "elapsed": [0.1, 0.3, 0.2]})
                 for r in (SCRATCH, slow_once)}
    figures.curve_panels([SCRATCH, slow_once], histories, "epoch", "epoch", "t")
    (fig,) = drawn
    labels = [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    assert "reuse5 · 12.0 ms" in labels and "scratch (baseline) · 10.0 ms" in labels
    assert all(list(line.get_xdata()) == [1, 2, 3] for ax in fig.axes for line in ax.get_lines())
    names = [figure.name for figure in figures.target_figures("mnist", [SCRATCH, slow_once], [], histories)]
    assert not any("per_second" in name for name in names) and "time_per_epoch_mnist" in names


def test_figures_drawn_in_forked_processes_are_the_bytes_drawn_here(monkeypatch: pytest.MonkeyPatch) -> None:
    results = [replace(REUSE, variant=f"v{i}") for i in range(3)]
    histories = {r.variant: pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.5, 0.6], "elapsed": [0.1, 0.2]}) for r in results}
    jobs = [(figures.curve_panels, (results, histories, "epoch", "epoch", "t")), (figures.accuracy_bars, (results, "a")),
            (figures.time_bars, (results, "b"))]
    here = [function(*args) for function, args in jobs]
    monkeypatch.setattr(figures, "lanes", lambda: 2)  # two cores
    monkeypatch.setattr(figures.threading, "active_count", lambda: 1)  # the test runner's threads hold no drawing lock
    *forked, pid = figures.rendered([*jobs, (os.getpid, ())])
    assert pid != os.getpid(), "drawn here, not in a fork"
    assert forked == here and all(image.startswith(b"\x89PNG") for image in forked)


@pytest.fixture()
def stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The report stage module, importable in-process, working in an empty project folder."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository around it, wherever TMPDIR is
    sys.modules.pop("stages.report", None)
    from stages import report

    return report


def test_stage_reads_only_this_versions_files_and_names_the_bad_one(stage, tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"variant": "reuse3", "target_accuracy": 0.9, "target_accuracy_ci95_low": 0.8}))
    record = tmp_path / "record.json"
    record.write_text(json.dumps(REUSE.record()))
    with pytest.raises(DataError, match=r"old.json, .*record.json: not a variant result of this version \(KeyError: 'repetitions'\)"):
        stage.read_result(path, record)
    path.write_text("{not json")
    with pytest.raises(DataError, match="old.json: not valid JSON"):
        stage.read_result(path, record)
    with pytest.raises(DataError, match="missing.json: metrics file not found"):  # a variant run before the record split
        stage.read_result(tmp_path / "record.json", tmp_path / "missing.json")
    (tmp_path / "h.csv").write_text("epoch,loss,test_accuracy\n1,0.5,0.8\n")
    with pytest.raises(DataError, match="h.csv: needs columns epoch, val_accuracy, elapsed"):
        stage.read_history(tmp_path / "h.csv")
    (tmp_path / "rows.csv").write_text("sweep,x,series,repetition,target_accuracy\nlabel_budget,5,scratch,0,0.3\n")
    with pytest.raises(DataError, match="rows.csv: not a sweep's per-run file of this version"):
        sweep_results.load_rows(tmp_path / "rows.csv")


@pytest.fixture()
def hand_made(stage, tmp_path: Path):
    """A project folder holding what the report reads, written by hand: four variants, a source, a label-budget sweep."""
    raw = tiny_params()
    raw["variants"] = {name: {"strategy": strategy, "init_from": "source", "target": "mnist", "reuse_layers": 3,
                              "frozen_layers": 2 if strategy in ("freeze", "cache") else 0}
                       for name, strategy in (("scratch", "scratch"), ("reuse5", "reuse"), ("freeze2", "freeze"), ("cache2", "cache"))}
    raw["sweeps"] = {"transferability": None, "label_budget": {"kind": "label_budget", "target": "mnist", "labels_per_class": [3], "variants": ["scratch"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    artifacts.write_json(tmp_path / "metrics/source.json", {"test_accuracy": 0.96, "epochs": 31, "train_seconds": 7.0})
    for variant in (SCRATCH, REUSE, FREEZE, CACHE):
        write_result(tmp_path, variant)
        artifacts.write_rows(tmp_path / f"plots/transfer/{variant.variant}.csv", [
            {"epoch": e, "val_accuracy": 0.5 + 0.01 * e, "elapsed": 0.01 * e, "n": 3} for e in range(1, 6)])
    rows = sweep_rows("label_budget", {(3, "scratch"): [0.3, 0.35, 0.32]}, unconverged=(3, "scratch"))
    artifacts.write_rows(tmp_path / "metrics/sweeps/label_budget.csv", [
        {**row, "best_epoch": 4, "epochs_run": 4, "stop_reason": "max_epochs", "setting": "sgd 0.05"} for row in rows])
    artifacts.write_rows(tmp_path / "plots/sweeps/label_budget.csv", sweep_results.summarize_rows(rows))
    artifacts.write_json(tmp_path / "runs/sweeps/label_budget.json", {"budget": {**BUDGET, "max_epochs": 4}})
    return stage


def test_stage_builds_the_report_from_hand_made_results(hand_made) -> None:
    stage = hand_made
    params = stage.load_params(Path("params.yaml"))
    report, rankings, curves, conclusions = stage.build(params, "http://127.0.0.1:5000")
    markdown, page = report.markdown("figures"), report.html()
    assert markdown.startswith("# transferlab") and "**Protocol.**" in markdown and "| cache2 " in markdown
    assert "**More accurate:** Against scratch" in markdown and "**Faster:** Time to 99 %" in markdown
    # the answer comes first: the question, the three answers and the forest plot before the first table
    first_table = markdown.index("\n| ")
    for part in ("**The question.** Target `mnist`", "**Best on the test set:** reuse5", "**Use:** reuse5", "**How sure.** 3 paired",
                 "gain_over_scratch_mnist.png"):
        assert -1 < markdown.index(part) < first_table, part
    tables_shown = [value for kind, value in report.blocks if kind == "table"]
    for frame in tables_shown[1:2]:  # the details table says its constant columns in a sentence instead
        assert all(frame[column].nunique() > 1 for column in frame.columns if column != "variant"), frame.columns
    assert "The same in every row — init from: source;" in markdown
    assert all(strategy in figures.STRATEGY_COLORS for strategy in tables_shown[0]["strategy"])
    assert conclusions["targets"]["mnist"]["families"]["mnist: against scratch, test set"] == {
        "reuse5": "✔", "freeze2": "✘", "cache2": "✘"}
    assert conclusions["targets"]["mnist"]["advice"]["use"] == ["reuse5"]
    assert "This sweep ran under another tuning budget than the variants: max_epochs 4 (reference 300)." in markdown
    assert "**Label budget:** every sweep point has unconverged runs (scratch at 3), so the sweep supports no claim." in markdown
    assert "](" not in page and 'href="http://127.0.0.1:5000/#/experiments/1/runs/scratch0123456789abcdef?workflowType=machine_learning"' in page
    assert [figure.name for figure in report.figures] == [
        "gain_over_scratch_mnist", "tuning_mnist", "val_accuracy_per_epoch_mnist", "accuracy_mnist",
        "time_per_epoch_mnist", "sweep_label_budget"]
    assert all(figure.png.startswith(b"\x89PNG") for figure in report.figures)
    assert curves[0] == {"epoch": 1, "series": "reuse5", "target": "mnist", "val_accuracy": 0.51, "elapsed": 0.01}
    assert "test_accuracy" not in curves[0] and verdicts.best_claimable(rankings["mnist"]) == "reuse5 86.3 %"
    # what changed since the last commit closes the report (here: no repository) and stays out of the conclusions
    assert markdown.rstrip().endswith("## What changed since the previous committed run\n\n"
                                      "No previous run to compare with: git or its commit `HEAD` is not available here.")
    assert "changed" not in json.dumps(conclusions) and "HEAD" not in json.dumps(conclusions)


CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it when missing)
# Walks the laid-out report once it has loaded and posts what it found to the page framing it: the right edge of
# every element outside the tables' own scroll boxes, and where the answer, the forest plot and the first table begin.
PROBE = """<script>addEventListener("load", () => {
  let right = 0, widest = "";
  for (const element of document.body.querySelectorAll("*")) {
    if (element.parentElement.closest(".table-wrap")) continue;  // inside a table's own scroll box
    const box = element.getBoundingClientRect();
    if (box.right > right) { right = box.right; widest = element.tagName + "." + element.className; }
  }
  const top = (element) => element ? element.getBoundingClientRect().top + scrollY : null;
  const answer = [...document.querySelectorAll("h2")].find((h) => h.textContent === "The answer");
  parent.postMessage(JSON.stringify({right, widest, page: document.documentElement.scrollWidth,
    screen: document.documentElement.clientWidth, answer: top(answer), table: top(document.querySelector("table")),
    forest: top(document.querySelector("img[alt^='Each variant']"))}), "*");
});</script>"""
# A desktop Chromium window is never narrower than 500 px, so the phone's 400 px screen is a frame of that width;
# --dump-dom prints the framing page, whose title the probe's message becomes.
FRAME = ('<!DOCTYPE html><html><head><title>no message</title><style>body{{margin:0}}iframe{{border:0}}</style></head><body>'
         '<iframe src="{src}" width="{width}" height="{height}"></iframe>'
         '<script>addEventListener("message", (event) => {{ document.title = event.data; }});</script></body></html>')


def in_chromium(page: Path, width: int, height: int = 800) -> dict[str, Any]:
    """What PROBE measured on `page` in headless Chromium, in a `width` × `height` CSS-pixel viewport."""
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)"
    probed = page.with_name(f"probed_{width}.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    frame = page.with_name(f"frame_{width}.html")
    frame.write_text(FRAME.format(src=probed.name, width=width, height=height))
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={page.parent / 'profile'}",
                           f"--window-size={max(width, 500) + 40},{height + 40}", "--virtual-time-budget=5000", "--dump-dom",
                           frame.as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", done.stdout, re.S)
    assert done.returncode == 0 and title and title.group(1) != "no message", done.stderr[-2000:]
    return json.loads(html.unescape(title.group(1)))


def test_in_a_browser_nothing_but_a_table_scrolls_sideways_on_a_phone_and_the_answer_comes_first(hand_made, tmp_path: Path) -> None:
    report, *_ = hand_made.build(hand_made.load_params(Path("params.yaml")), "http://127.0.0.1:5000")
    render.write(report, tmp_path / "reports/comparison.md", tmp_path / "reports/comparison.html")
    phone = in_chromium(tmp_path / "reports/comparison.html", 400)
    assert 370 <= phone["screen"] <= 400 and phone["page"] == phone["screen"], phone  # the page never scrolls sideways
    assert phone["right"] <= phone["screen"], phone
    desk = in_chromium(tmp_path / "reports/comparison.html", 1280)
    assert desk["answer"] < desk["forest"] < desk["table"], desk  # the answer and its forest plot before any table
    assert desk["answer"] < 800, desk  # on the first screen
