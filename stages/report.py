"""Stage `report`: assemble the comparison of every configured variant as Markdown and HTML.

    python -m stages.report                # writes reports/comparison.md, reports/comparison.html,
                                           # reports/figures/*.png, reports/accuracy_per_epoch.csv

Reads only metrics and history files written by upstream stages (never retrains, never needs
an MLflow server), and only for the variants and pretraining entries params.yaml configures
now, so a removed entry leaves no stale row. Run links point at `MLFLOW_TRACKING_URI` when it
is an http(s) server, else at the local UI. No TensorFlow import.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab import (artifacts, families, figures, original_note, paths, recommendation, reporting, sweep_results,
                         tables, tracking, verdicts)
from transferlab.cli import run_main
from transferlab.config import Params, ShiftSpec, load_params
from transferlab.errors import DataError
from transferlab.results import VariantResult

STAGE = "report"
TITLE = "transferlab: which way of reusing a pretrained network works best?"
HISTORY_COLUMNS = ("epoch", "val_accuracy", "elapsed")
SELFFER_LEGEND = (
    "After Yosinski et al. 2014: BnB reuses the lowest k layers of a network trained from scratch on this target's own"
    " labelled training images (the k = 0 run of the same repetition), AnB the init model's. BnB below k = 0 is the loss"
    " from breaking co-adapted layers apart; AnB below BnB is the loss from features that do not fit the new task.")


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        return artifacts.read_json(path)
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found (run its stage first: dvc repro)") from None
    except ValueError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def read_result(path: Path) -> VariantResult:
    try:
        return VariantResult.from_json(read_metrics(path))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(f"{path}: not a variant result of this version ({type(error).__name__}: {error});"
                        " rerun its stage: dvc repro") from None


def read_history(path: Path, columns: tuple[str, ...] = HISTORY_COLUMNS) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: history file not found (run its stage first: dvc repro)") from None
    if missing := [column for column in columns if column not in frame]:
        raise DataError(f"{path}: needs columns {', '.join(columns)} (missing {', '.join(missing)}); rerun its stage")
    return frame


def shift_text(shift: ShiftSpec | None) -> str:
    """What the shifted test set is, from its params (`targets.<name>.shift`)."""
    if shift is None:
        return "the shifted test set"
    kinds = ", ".join(f"{c.kind} {c.amount:g}" for c in shift.corruptions)
    return (f"the shifted test set (every test image corrupted once, its corruption drawn per image from {kinds};"
            f" seed {shift.seed})")


def target_section(report: reporting.Report, target: str, ranking: verdicts.Ranking,
                   histories: dict[str, pd.DataFrame], link: tables.RunLink, shift: ShiftSpec | None = None) -> None:
    results = ranking.ranked + [result for result, _ in ranking.not_ranked]
    report.heading(f"Target `{target}`: {len(results)} variants, {results[0].labels_per_class} labels per class")
    report.paragraph("**What this run shows.** **More accurate:** " + verdicts.accuracy_verdict(ranking))
    if verdicts.has_shift(ranking):
        report.paragraph(f"**Under shift**, on {shift_text(shift)}: " + verdicts.accuracy_verdict(ranking, verdicts.SHIFT))
    report.paragraph("**Faster:** " + verdicts.speed_verdict(ranking))
    if ranking.left_out:
        report.paragraph(f"Left out of these statements: {', '.join(ranking.left_out)}.")
    report.table(tables.comparison(ranking, link))
    report.paragraph(tables.LEGEND + (" " + tables.SHIFT_LEGEND if verdicts.has_shift(ranking) else ""))
    if ranking.not_ranked:
        report.heading("Not ranked: other tuning budget", level=3)
        reference = "the scratch baseline's" if ranking.baseline else "the most common one"
        report.paragraph(f"{len(ranking.not_ranked)} variant(s) were tuned under another budget than {reference},"
                         " so they are shown but neither ranked nor compared with it.")
        report.table(tables.not_ranked(ranking, link))
    for figure in figures.target_figures(target, ranking.ranked, [r for r, _ in ranking.not_ranked], histories):
        report.figure(figure)


def sweep_section(report: reporting.Report, params: Params, rankings: dict[str, verdicts.Ranking]) -> None:
    """Both sweep figures and the one recommendation."""
    spec = params.sweeps
    loaded = {name: (sweep_results.load_summary(paths.sweep_summary(name)), sweep_results.load_rows(paths.sweep_rows(name)))
              for name in figures.SWEEP_AXES if getattr(spec, name) is not None}
    if not loaded:
        return
    target = (spec.transferability or spec.label_budget).target
    report.heading(f"Sweeps and recommendation (target `{target}`)")
    ranking = rankings.get(target)
    first, *more = recommendation.recommendation(ranking, loaded.get("transferability"), loaded.get("label_budget"))
    report.paragraph("**Recommendation.** " + first)
    for paragraph in more:
        report.paragraph(paragraph)
    reference = (ranking.baseline or ranking.ranked[0]).budget if ranking is not None else None
    for name in loaded:
        budget = read_metrics(paths.sweep_metrics(name)).get("budget", {})
        if reference is not None and (differ := verdicts.budget_differences(budget, reference)):
            report.paragraph(f"The {name} sweep ran under another tuning budget than the variants: {'; '.join(differ)}.")
        elif reference is not None:
            report.paragraph(f"The {name} sweep ran under the variants' tuning budget.")
    for figure in figures.sweep_figures({name: summary for name, (summary, _) in loaded.items()}):
        report.figure(figure)
    selffer = recommendation.selffer_verdict(*loaded["transferability"]) if "transferability" in loaded else []
    if selffer:
        report.heading("Selffer controls: broken co-adaptation or specificity?", level=3)
        report.paragraph(SELFFER_LEGEND)
        for paragraph in selffer:
            report.paragraph(paragraph)


def build(params: Params, ui: str) -> tuple[reporting.Report, dict[str, verdicts.Ranking], list[dict[str, Any]]]:
    """The report, each target's ranking, and the long-format per-epoch validation rows for `dvc plots`."""
    sources = {name: read_metrics(paths.init_metrics(name)) for name in params.sources}
    report = reporting.Report(TITLE)
    results = [read_result(paths.variant_metrics(name)) for name in params.variants]
    rankings = {target: verdicts.rank([r for r in results if r.target == target]) for target in params.targets}
    rankings = {target: ranking for target, ranking in rankings.items() if ranking.ranked}
    for protocol in verdicts.protocols(rankings):
        report.paragraph(protocol)
    for name, source in sources.items():
        spec = params.sources[name]
        report.paragraph(
            f"Source model `{name}` (DNN {'-'.join(map(str, spec.network.hidden_units))}, classes"
            f" {spec.data.classes}): test accuracy **{reporting.percent(source['test_accuracy'])} %**"
            f" with the weights of epoch {source.get('best_epoch', source['epochs'])} of {source['epochs']}"
            f" ({source.get('stop_reason', 'fixed_epochs').replace('_', ' ')})."
        )

    def link(result: VariantResult) -> str:
        return reporting.run_link(ui, result.mlflow_experiment_id, result.mlflow_run_id)

    curves = []
    for target, ranking in rankings.items():
        histories = {r.variant: read_history(paths.variant_history(r.variant)) for r in ranking.ranked}
        target_section(report, target, ranking, histories, link, params.targets[target].shift)
        for title, lines in families.paragraphs(ranking, params.variants):
            report.heading(f"{title} (target `{target}`)", level=3)
            for line in lines:
                report.paragraph(line)
        curves += [{"epoch": int(row.epoch), "series": name, "target": target, "val_accuracy": float(row.val_accuracy),
                    "elapsed": float(row.elapsed)} for name, frame in histories.items() for row in frame.itertuples()]
    sweep_section(report, params, rankings)
    if (note := params.original_note) is not None:
        by_name = {r.variant: r for r in results}
        original_note.section(report, note, params.sources[note.source], sources[note.source],
                              read_history(paths.init_history(note.source), ("epoch", "test_accuracy")),
                              {name: by_name[name] for name in note.rows().values()})
    if params.pretrain:
        report.heading("Pretraining without target labels")
        report.table(tables.pretraining({name: read_metrics(paths.init_metrics(name)) for name in params.pretrain}, ui))
    if imported := [*params.zoo, *params.model_files]:
        report.heading("Models from the zoo and other frameworks")
        report.table(tables.imported({name: read_metrics(paths.init_metrics(name)) for name in imported}))
    return report, rankings, curves


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    report, rankings, curves = build(params, reporting.ui_address(os.environ.get("MLFLOW_TRACKING_URI")))
    tags = {"stage": STAGE, "variant": "report", "strategy": "report", "init_from": "-"}
    with tracking.stage_run(params.mlflow.experiment, "report", tags, {"variants": ",".join(params.variants)}):
        written = reporting.write(report, paths.REPORTS / "comparison.md", paths.REPORTS / "comparison.html")
        artifacts.write_rows(paths.REPORTS / "accuracy_per_epoch.csv", curves)
        tracking.log_files(written, artifact_path="report")
    bests = "; ".join(f"{target}: {verdicts.best_claimable(ranking)}" for target, ranking in rankings.items())
    print(f"report: {sum(len(r.ranked) + len(r.not_ranked) for r in rankings.values())} variants (best converged on {bests})"
          f" -> {paths.REPORTS / 'comparison.md'}, {paths.REPORTS / 'comparison.html'}")


if __name__ == "__main__":
    run_main(main)
