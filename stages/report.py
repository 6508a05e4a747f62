"""Stage `report`: assemble the comparison of every configured variant as Markdown and HTML.

    python -m stages.report                # writes reports/comparison.md, reports/comparison.html,
                                           # reports/figures/*.png, reports/accuracy_per_epoch.csv

Reads only metrics and history files written by upstream stages (never retrains, never needs
an MLflow server), and only for the variants and pretraining entries params.yaml configures
now, so a removed entry leaves no stale row. No TensorFlow import.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from transferlab import artifacts, paths, reporting, sweeps, tracking
from transferlab.cli import run_main
from transferlab.config import Params, load_params
from transferlab.errors import DataError

STAGE = "report"
UI = "http://127.0.0.1:5000"
TITLE = "transferlab: which way of reusing a pretrained network works best?"


def read_metrics(path) -> dict[str, Any]:
    try:
        return artifacts.read_json(path)
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found (run its stage first: dvc repro)") from None
    except ValueError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def read_history(path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: history file not found (run its stage first: dvc repro)") from None
    if "epoch" not in frame or "test_accuracy" not in frame:
        raise DataError(f"{path}: needs columns epoch and test_accuracy")
    return frame


def run_link(metrics: dict[str, Any]) -> str:
    return f"[{{short}}]({UI}/#/experiments/{metrics.get('mlflow_experiment_id', '0')}/runs/{{run}})"


def target_section(report: reporting.Report, target: str, rows: list[dict[str, Any]], histories: dict[str, pd.DataFrame]) -> None:
    scratch = next((row for row in rows if row["strategy"] == "scratch"), None)
    report.heading(f"Target `{target}`: {len(rows)} variants, {rows[0]['labels_per_class']} labels per class")
    report.paragraph("**What this run shows.** " + reporting.summary(rows, scratch, reporting.cache_speedups(rows)))
    report.table(reporting.comparison_table(rows, scratch, run_link(rows[0])))
    report.paragraph(
        "Accuracy: mean over seeds ± half-width of its 95% t-interval. `vs scratch`: paired difference in"
        " percentage points, repetition by repetition (same labelled images and batch order), with its 95%"
        " interval; ✔ / ✘ mark variants significantly better / worse than scratch, `p` the paired t-test."
    )
    report.figure(reporting.Figure(f"accuracy_per_epoch_{target}", f"Target test accuracy per epoch ({target}, mean over seeds)",
                                   reporting.accuracy_curves(histories, f"target {target}: accuracy per epoch")))
    report.figure(reporting.Figure(f"accuracy_{target}", f"Final target accuracy with 95% CI ({target})",
                                   reporting.accuracy_bars(rows, f"target {target}: accuracy")))
    report.figure(reporting.Figure(f"time_per_epoch_{target}", f"Training time per epoch ({target})",
                                   reporting.time_bars(rows, f"target {target}: time per epoch")))


def sweep_section(report: reporting.Report, params: Params, variants: list[dict[str, Any]]) -> None:
    """The two sweep plots and the generated recommendation."""
    spec = params.sweeps
    transfer_summary = sweeps.load_summary(paths.sweep_summary("transferability")) if spec.transferability else []
    budget_summary = sweeps.load_summary(paths.sweep_summary("label_budget")) if spec.label_budget else []
    if not (transfer_summary or budget_summary):
        return
    target = (spec.transferability or spec.label_budget).target
    report.heading(f"Sweeps and recommendation (target `{target}`)")
    report.paragraph("**Recommendation.** " + sweeps.recommendation(
        transfer_summary, budget_summary, [row for row in variants if row["target"] == target],
        params.targets[target].labels_per_class))
    if transfer_summary:
        report.figure(reporting.Figure(
            "sweep_transferability", "Target accuracy vs hidden layers reused, frozen or fine-tuned (95% CI band)",
            sweeps.sweep_figure(transfer_summary, sweeps.XLABELS["transferability"], "Layer transferability")))
    if budget_summary:
        report.figure(reporting.Figure(
            "sweep_label_budget", "Target accuracy vs labelled images per class (95% CI band)",
            sweeps.sweep_figure(budget_summary, sweeps.XLABELS["label_budget"], "Label budget", log_x=True)))


def build(params: Params) -> tuple[reporting.Report, list[dict[str, Any]], list[dict[str, Any]]]:
    """The report, the variant metrics it shows, and the long-format per-epoch rows for `dvc plots`."""
    source = read_metrics(paths.init_metrics("source"))
    report = reporting.Report(TITLE)
    report.paragraph(
        f"Source model (DNN {'-'.join(map(str, params.source_model.network.hidden_units))}, classes"
        f" {params.source_data.classes}): test accuracy **{reporting.percent(source['test_accuracy'])} %**"
        f" after {source['epochs']} epochs ({source['train_seconds']:.1f} s)."
    )
    variants = [read_metrics(paths.variant_metrics(name)) for name in params.variants]
    curves = []
    for target in params.targets:
        rows = [row for row in variants if row["target"] == target]
        if not rows:
            continue
        histories = {row["variant"]: read_history(paths.variant_history(row["variant"])) for row in rows}
        target_section(report, target, rows, histories)
        curves += [
            {"epoch": int(epoch), "series": name, "target": target, "test_accuracy": float(accuracy)}
            for name, frame in histories.items()
            for epoch, accuracy in zip(frame["epoch"], frame["test_accuracy"], strict=True)
        ]
    sweep_section(report, params, variants)
    if params.pretrain:
        report.heading("Pretraining without target labels")
        pretrain_rows = []
        for name in params.pretrain:
            metrics = read_metrics(paths.init_metrics(name))
            measured = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                 if isinstance(v, float) and k not in ("depth", "pool_images"))
            pretrain_rows.append({"entry": name, "method": metrics["method"], "layers": metrics["depth"],
                                  "unlabelled images": metrics["pool_images"], "final metrics": measured,
                                  "MLflow run": run_link(metrics).format(run=metrics["mlflow_run_id"], short=metrics["mlflow_run_id"][:8])})
        report.table(pd.DataFrame(pretrain_rows))
    imported = [*params.zoo, *params.model_files]
    if imported:
        report.heading("Models from the zoo and other frameworks")
        rows = []
        for name in imported:
            metrics = read_metrics(paths.init_metrics(name))
            rows.append({"entry": name, "kind": metrics["kind"], "from": metrics["source"],
                         "hidden layers": "-".join(str(units) for units in metrics["hidden_layers"].values()),
                         "source test accuracy %": reporting.percent(metrics.get("source_test_accuracy")),
                         "sha256": metrics["sha256"][:12]})
        report.table(pd.DataFrame(rows))
    return report, variants, curves


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    report, variants, curves = build(params)
    tags = {"stage": STAGE, "variant": "report", "strategy": "report", "init_from": "-"}
    with tracking.stage_run(params.mlflow.experiment, "report", tags, {"variants": ",".join(params.variants)}):
        written = reporting.write(report, paths.REPORTS / "comparison.md", paths.REPORTS / "comparison.html")
        artifacts.write_rows(paths.REPORTS / "accuracy_per_epoch.csv", curves)
        tracking.log_files(written, artifact_path="report")
    bests = []
    for target in params.targets:
        rows = [row for row in variants if row["target"] == target]
        if rows:
            best = max(rows, key=lambda row: row["target_accuracy"])
            bests.append(f"{target}: {best['variant']} {reporting.percent(best['target_accuracy'])} %")
    print(f"report: {len(variants)} variants (best on {'; '.join(bests)}) -> {paths.REPORTS / 'comparison.md'}, {paths.REPORTS / 'comparison.html'}")


if __name__ == "__main__":
    run_main(main)
