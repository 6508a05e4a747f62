"""Stage `report`: assemble the comparison of every configured variant as Markdown and HTML.

    python -m stages.report                # writes reports/comparison.md, reports/comparison.html,
                                           # reports/figures/*.png, reports/accuracy_per_epoch.csv,
                                           # reports/conclusions.json (what `make verify` compares elsewhere)

Reads only the metrics, run records (`runs/`) and history files written by upstream stages (never retrains, never needs
an MLflow server), and only for the variants and pretraining entries params.yaml configures
now, so a removed entry leaves no stale row. Run links point at `MLFLOW_TRACKING_URI` when it
is an http(s) server, else at the local UI. No TensorFlow import.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab import artifacts, paths, statistics, tracking
from transferlab.config import EvaluationSpec, Params, load_params
from transferlab.errors import DataError
from transferlab.launch.cli import run_main
from transferlab.report import (
    changes,
    domains,
    families,
    figures,
    inference,
    original_note,
    protocol,
    recommendation,
    render,
    speed,
    sweep_verdicts,
    tables,
    verdicts,
)
from transferlab.tools import machine
from transferlab.training import sweep_results
from transferlab.training.results import VariantResult

STAGE = "report"
ANSWER = "The answer"  # the first section: what the README quotes (`transferlab.tools.readme`)
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


def read_result(path: Path, record: Path) -> VariantResult:
    """A variant from its metrics file (results) and its run record (recipe, budget, MLflow run)."""
    try:
        return VariantResult.from_json(read_metrics(path), read_metrics(record))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(f"{path}, {record}: not a variant result of this version ({type(error).__name__}: {error});"
                        " rerun its stage: dvc repro") from None


def read_entry(name: str) -> dict[str, Any]:
    """A pretraining or imported model's run record (method, origin, MLflow run) with its results."""
    return {**read_metrics(paths.init_run(name)), **read_metrics(paths.init_metrics(name))}


def read_history(path: Path, columns: tuple[str, ...] = HISTORY_COLUMNS) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: history file not found (run its stage first: dvc repro)") from None
    if missing := [column for column in columns if column not in frame]:
        raise DataError(f"{path}: needs columns {', '.join(columns)} (missing {', '.join(missing)}); rerun its stage")
    return frame


def set_text(wording: verdicts.Wording, spec: EvaluationSpec | None) -> str:
    """`**Under shift**, on the shifted test set (how it is made)`: a further test set's heading, from its params."""
    made = "" if spec is None else (
        " (every test image corrupted once, its corruption drawn per image from"
        f" {', '.join(f'{c.kind} {c.amount:g}' for c in spec.corruptions)}; seed {spec.seed})")
    heading = f"**{wording.phrase[:1].upper()}{wording.phrase[1:]}**"
    return f"{heading}{made}" if wording.phrase == f"on the {wording.title}" else f"{heading}, on the {wording.title}{made}"


def target_section(report: render.Report, target: str, ranking: verdicts.Ranking, histories: dict[str, pd.DataFrame],
                   link: tables.RunLink, evaluations: dict[str, EvaluationSpec] | None = None) -> None:
    results = ranking.ranked + [result for result, _ in ranking.not_ranked]
    report.heading(f"Target `{target}`: {len(results)} variants, {results[0].labels_per_class} labels per class")
    report.paragraph("**More accurate:** " + verdicts.accuracy_verdict(ranking))
    for key, wording in verdicts.further_sets(ranking).items():  # each further test set, in the target's order
        spec = (evaluations or {}).get(key.removesuffix("_accuracy"))
        report.paragraph(f"{set_text(wording, spec)}: " + verdicts.accuracy_verdict(ranking, key))
    report.paragraph("**Faster:** " + speed.speed_verdict(ranking))
    if ranking.left_out:
        report.paragraph(f"Left out of these statements: {', '.join(ranking.left_out)}.")
    report.table(tables.comparison(ranking, link))
    further = list(verdicts.further_sets(ranking).values())
    report.paragraph(tables.LEGEND + (" " + tables.further_legend(further) if further else ""))
    frame, constant = tables.details(ranking)
    report.heading(f"Details (target `{target}`)", level=3)
    report.table(frame)
    report.paragraph(" ".join(filter(None, [constant, tables.DETAILS_LEGEND])))
    if ranking.not_ranked:
        report.heading("Not ranked: other tuning budget", level=3)
        reference = "the scratch baseline's" if ranking.baseline else "the most common one"
        report.paragraph(f"{len(ranking.not_ranked)} variant(s) were tuned under another budget than {reference},"
                         " so they are shown but neither ranked nor compared with it.")
        report.table(tables.not_ranked(ranking, link))
    for figure in figures.target_figures(target, ranking.ranked, [r for r, _ in ranking.not_ranked], histories):
        report.figure(figure)


def sweep_section(report: render.Report, params: Params, rankings: dict[str, verdicts.Ranking]) -> dict[str, Any]:
    """Each sweep's figure and what it supports, in params order, one heading each; returns their conclusions."""
    conclusions: dict[str, Any] = {}
    for name, spec in params.sweeps.items():
        if spec is None:
            continue
        summary, rows = sweep_results.load_summary(paths.sweep_summary(name)), sweep_results.load_rows(paths.sweep_rows(name))
        report.heading(f"Sweep `{name}` ({spec.kind.replace('_', ' ')}, target `{spec.target}`)")
        loaded = (summary, rows)
        paragraphs, found = recommendation.recommendation(None, *((None, loaded) if spec.kind == "label_budget" else (loaded, None)))
        conclusions |= found
        for paragraph in paragraphs:
            report.paragraph(paragraph)
        ranking = rankings.get(spec.target)
        budget = read_metrics(paths.sweep_run(name)).get("budget", {})
        if ranking is not None and (differ := verdicts.budget_differences(budget, (ranking.baseline or ranking.ranked[0]).budget)):
            report.paragraph(f"This sweep ran under another tuning budget than the variants: {'; '.join(differ)}.")
        elif ranking is not None:
            report.paragraph("This sweep ran under the variants' tuning budget.")
        report.figure(figures.sweep_figures({name: (spec.kind, summary)})[0])
        if spec.kind == "transferability":
            selffer, found = sweep_verdicts.selffer_verdict(summary, rows)
            conclusions |= found
            if selffer:
                report.heading("Selffer controls: broken co-adaptation or specificity?", level=3)
                report.paragraph(SELFFER_LEGEND)
                for paragraph in selffer:
                    report.paragraph(paragraph)
    return conclusions


def task_sentence(params: Params, target: str, ranking: verdicts.Ranking) -> str:
    """`Target mnist: digits 5–9 …, 100 labelled images per class; 16 variants × 5 paired repetitions, from source …`."""
    spec = params.targets[target]
    first = ranking.baseline or ranking.ranked[0]
    where = (f"classes {spec.classes} of {'the source dataset' if spec.dataset == 'source' else spec.path or spec.dataset}"
             if spec.split != "source" else "the source's own task")
    sources = [name for name in dict.fromkeys([spec.source, *(r.init_from for r in ranking.ranked)]) if name in params.sources]
    origin = "".join(f"; {'the source ' if name == spec.source else ''}`{name}` {'is ' if name == spec.source else ''}a "
                     f"{render.network_text(params.sources[name].network)} trained on classes {params.sources[name].data.classes}"
                     for name in sources)
    prepared = read_metrics(paths.target_run(target))["preparation"]  # prepare_target@<target>'s record, always written
    steps = f" Prepared: {'; '.join(prepared.values())}." if prepared else ""
    return (f"Target `{target}`: {where}, {first.labels_per_class} labelled images per class, {len(ranking.ranked)} variants"
            f" × {first.seeds} paired repetitions{origin}.{steps}")


def how_sure(ranking: verdicts.Ranking) -> str:
    """Repetitions, the families and what they could detect, and what the non-parametric check can reach."""
    n = (ranking.baseline or ranking.ranked[0]).seeds
    if ranking.baseline is None:
        return (f"**How sure.** {n} paired repetitions per variant, but no scratch variant on this target: nothing is judged"
                " against scratch here.")
    sizes = [f"{family.size} {family.name.split(': ', 1)[1]}"
             + (f" (±{100 * mde:.1f} points detectable)" if (mde := family.mde()) is not None else "")
             for family in ranking.families.values() if family.size]
    if not sizes:
        return f"**How sure.** {n} paired repetitions per variant, but the scratch baseline did not converge: no verdicts."
    floor = 2 / 2 ** n
    return (f"**How sure.** {n} paired repetitions per variant. Comparisons, each family Holm-corrected at α ="
            f" {statistics.ALPHA:g}: {'; '.join(sizes)} — the detectable difference is the median, at power"
            f" {statistics.POWER:g} and the family's strictest threshold. The exact permutation check printed beside each p"
            f" cannot go below 2/2^{n} = {floor:.3g}"
            f"{', so at this n it confirms nothing' if floor >= statistics.ALPHA else ''}. *Fragile*: a verdict that holds in"
            f" under {100 * inference.STABLE:.0f} % of bootstrap resamples of the repetitions; no recommendation rests on one.")


def answer(report: render.Report, params: Params, target: str, ranking: verdicts.Ranking) -> dict[str, Any]:
    """The first screen for one target: the task, the answers with intervals and stability, the forest plot."""
    report.paragraph(f"**The question.** {task_sentence(params, target, ranking)}")
    advice = recommendation.advise(ranking)
    if advice is not None:
        for line in recommendation.advice_text(ranking, advice):
            report.paragraph(line)
    sets = {key: wording.title for key, wording in ranking.sets.items() if key in ranking.families}
    rows = [(r.variant, r.strategy, {key: ranking.vs_scratch(r, key) for key in sets if verdicts.scored(r, key)})
            for r in ranking.claimable if r is not ranking.baseline]
    if rows and sets:
        png = figures.rendered([(figures.forest, (rows, sets, f"Target {target}: gain over scratch, every converged variant"))])[0]
        report.figure(render.Figure(f"gain_over_scratch_{target}", "Each variant's gain over scratch with its paired 95 %"
                                       " interval; a filled dot is significant after Holm's correction, colours are strategies.",
                                       png))
    report.paragraph(how_sure(ranking))
    return {"families": ranking.conclusions(), "advice": advice.conclusions() if advice is not None else None}


def build(params: Params, ui: str) -> tuple[render.Report, dict[str, verdicts.Ranking], list[dict[str, Any]], dict[str, Any]]:
    """The report, each target's ranking, the long-format per-epoch validation rows for `dvc plots`, and the conclusions
    (with the platform that computed them)."""
    sources = {name: read_metrics(paths.init_metrics(name)) for name in params.sources}
    report = render.Report(TITLE)
    results = [read_result(paths.variant_metrics(name), paths.variant_run(name)) for name in params.variants]
    rankings = {target: verdicts.rank([r for r in results if r.target == target], spec.evaluations)
                for target, spec in params.targets.items()}
    rankings = {target: ranking for target, ranking in rankings.items() if ranking.ranked}
    platform = machine.record()
    conclusions: dict[str, Any] = {"platform": platform, "targets": {}}
    experiment = next((r.mlflow_experiment_id for r in results if r.mlflow_experiment_id), "")
    report.paragraph(f"Computed on {platform['cpu']} ({platform['machine']}, {', '.join(platform['simd']) or 'no SIMD flags read'});"
                     f" MLflow experiment `{params.mlflow.experiment}`"
                     + (f" ([open]({ui}/#/experiments/{experiment}{render.UI_VIEW}))." if experiment else "."))
    report.heading(ANSWER)
    for target, ranking in rankings.items():
        conclusions["targets"][target] = answer(report, params, target, ranking)
    comparisons = domains.compare(params, rankings)
    for comparison in comparisons:
        report.paragraph(domains.summary(comparison))
    conclusions["domains"] = {f"{c.reference} -> {c.other}": c.conclusions() for c in comparisons}
    report.heading("Protocol")
    for text in protocol.protocols(rankings):
        report.paragraph(text)
    for name, source in sources.items():
        spec = params.sources[name]
        report.paragraph(f"Source model `{name}` ({render.network_text(spec.network)}, classes {spec.data.classes}): test accuracy"
                         f" **{render.percent(source['test_accuracy'])} %** with the weights of epoch"
                         f" {source.get('best_epoch', source['epochs'])} of {source['epochs']}"
                         f" ({source.get('stop_reason', 'fixed_epochs').replace('_', ' ')}).")

    def link(result: VariantResult) -> str:
        return render.run_link(ui, result.mlflow_experiment_id, result.mlflow_run_id)

    curves = []
    for target, ranking in rankings.items():
        histories = {r.variant: read_history(paths.variant_history(r.variant)) for r in ranking.ranked}
        target_section(report, target, ranking, histories, link, params.targets[target].evaluations)
        for title, lines in families.paragraphs(ranking, params.variants):
            report.heading(f"{title} (target `{target}`)", level=3)
            for line in lines:
                report.paragraph(line)
        if (claim := families.lp_ft_verdict(ranking)) is not None:
            report.paragraph(f"**LP-FT under shift.** {claim}")
        curves += [{"epoch": int(row.epoch), "series": name, "target": target, "val_accuracy": float(row.val_accuracy),
                    "elapsed": float(row.elapsed)} for name, frame in histories.items() for row in frame.itertuples()]
    for comparison in comparisons:
        report.heading(f"From `{comparison.reference}` to `{comparison.other}`: what another domain changes")
        report.paragraph(f"The same recipes (params entries equal but for the target) on two targets of one source; each"
                         f" gain is over its own target's scratch, and the change is Holm-corrected over the recipes"
                         f", one family per test set ({'; '.join(f'{comparison.titles[k]}: {f.describe()}' for k, f in comparison.families.items())}).")
        for key in comparison.families:
            report.paragraph(f"*{comparison.titles[key].capitalize()}:*")
            report.table(domains.table(comparison, key))
    conclusions["sweeps"] = sweep_section(report, params, rankings)
    if (note := params.original_note) is not None:
        by_name = {r.variant: r for r in results}
        conclusions["original_note"] = original_note.section(report, note, params.sources[note.source], sources[note.source],
                              read_history(paths.init_history(note.source), ("epoch", "test_accuracy")),
                              {name: by_name[name] for name in note.rows().values()})
    if params.pretrain:
        report.heading("Pretraining without target labels")
        report.table(tables.pretraining({name: read_entry(name) for name in params.pretrain}, ui))
    if imported := [*params.zoo, *params.model_files]:
        report.heading("Models from the zoo and other frameworks")
        report.table(tables.imported({name: read_entry(name) for name in imported}))
    words = {key: wording.label for ranking in rankings.values() for key, wording in ranking.sets.items()}
    changes.section(report, results, sets=words)  # against the git history, so in the report only, never in the conclusions
    return report, rankings, curves, conclusions


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    report, rankings, curves, conclusions = build(params, render.ui_address(os.environ.get("MLFLOW_TRACKING_URI")))
    tags = {"stage": STAGE, "variant": "report", "strategy": "report", "init_from": "-"}
    with tracking.stage_run(params.mlflow.experiment, "report", tags, {"variants": ",".join(params.variants)}):
        written = render.write(report, paths.REPORTS / "comparison.md", paths.REPORTS / "comparison.html")
        artifacts.write_json(paths.CONCLUSIONS, conclusions)
        artifacts.write_rows(paths.REPORTS / "accuracy_per_epoch.csv", curves)
        pages = [path for path in written if path.suffix != ".png"]
        tracking.log_files([*pages, paths.CONCLUSIONS], artifact_path="report")
        tracking.log_files([path for path in written if path not in pages], artifact_path="report/figures")  # as the pages link them
    bests = "; ".join(f"{target}: {verdicts.best_claimable(ranking)}" for target, ranking in rankings.items())
    print(f"report: {sum(len(r.ranked) + len(r.not_ranked) for r in rankings.values())} variants (highest mean, converged: {bests};"
          " what is significant is in the report)"
          f" -> {paths.REPORTS / 'comparison.md'}, {paths.REPORTS / 'comparison.html'}")


if __name__ == "__main__":
    run_main(main)
