"""Stages `sweep_<name>`: run one sweep's whole grid, `transfer.seeds` paired repetitions per point, in one process.

    python -m stages.sweep <name>            # writes metrics/sweeps/<name>.csv (one row per run),
                                             # plots/sweeps/<name>.csv (mean and 95% CI per point),
                                             # metrics/sweeps/<name>.json (counts), runs/sweeps/<name>.json
                                             # (target, budget, skipped points, MLflow run)

Reads `sweeps.<name>`, `transfer` (the protocol every point is raced under: validation split,
early stopping, tuning grid), the sweep's target and (label_budget) the named variants, whose params
and init models dvc.yaml lists for it (generated: `make pipeline`, src/transferlab/tools/pipeline.py).
MLflow: one parent run for the stage, one nested run per grid point with its mean accuracy.
Progress: a tqdm bar on stderr, one step per grid point.
Selffer modes (`selffer-frozen`, `selffer-fine-tuned`) reuse the k = 0 race's chosen network of each
repetition instead of the init model (`sweeps.run_sweep`). A point whose race is a `transfer@<variant>`
stage's (`sweeps.twins`), and whose metrics file and run record this stage depends on in dvc.yaml, takes that stage's
repetitions instead of racing them again; its MLflow run names the run it came from (`raced_in`). With `RAY_ADDRESS` naming a Ray cluster, the points' races run there as tasks (`transferlab.training.fanout`);
the rows, MLflow runs and outputs are the same as in-process.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from transferlab import artifacts, data, paths, tracking
from transferlab.config import check_sweeps, load_params, split_sizes
from transferlab.data import repetitions
from transferlab.errors import ConfigError
from transferlab.launch.cli import run_main
from transferlab.training import sweep_results, sweeps

STAGE = "sweep"


def twin_tags(twin: sweeps.Twin | None) -> dict[str, str]:
    """A point raced by a transfer stage names that stage and its MLflow run."""
    return {} if twin is None else {"raced_in": f"transfer@{twin.variant}", "raced_in_run_id": twin.run_id}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise ConfigError("sweeps", "usage: python -m stages.sweep <name of an entry of sweeps:>")
    name = argv[0]
    params = load_params(paths.PARAMS)
    spec = sweeps.spec_of(params, name)
    check_sweeps(params, only=name)  # also when params.yaml leaves `sweeps:` at its defaults
    target = params.targets[spec.target]
    arrays = data.load_target(spec.target)
    points, skipped = sweeps.grid(name, params, sweeps.pool_per_class(arrays["y_pool"]))
    if not points:
        raise ConfigError(f"sweeps.{name}", f"every grid value was skipped: {skipped[0]['reason']}")
    from transferlab.models import (
        zoo,  # TensorFlow starts only once the inputs are known to be good
    )

    init_models, patterns = {}, {}
    for init_from in dict.fromkeys(point.variant.init_from for point in points):
        init_models[init_from] = zoo.load_keras(paths.init_model(init_from))
        data.check_input_size(arrays, init_models[init_from].input_shape, init_from, spec.target)
        patterns[init_from] = zoo.init_blocks(init_models[init_from], params.model_files, init_from)[0]  # declared blocks
    tags = {"stage": f"{STAGE}_{name}", "sweep": name, "variant": f"{STAGE}_{name}", "strategy": STAGE,
            "init_from": ",".join(init_models), "target": spec.target, "data_fingerprint": data.fingerprint(*arrays.values())}
    logged: dict[str, Any] = {"sweep": spec.model_dump(), "transfer": params.transfer.model_dump(), "target": target.model_dump()}
    plan = repetitions.plan(params.transfer.seeds, params.transfer.seed, target.seed, params.transfer.resample_labels)
    twins, notes = sweeps.twin_races(points, params, plan, set(sweeps.twin_metrics(name, params)))  # its deps (tools/pipeline.py)
    for note in notes:
        print(f"sweep_{name}: {note}", file=sys.stderr)
    description = (f"Sweep `{name}` on target `{spec.target}`: {len(points)} points, one nested run each "
                   f"({params.transfer.seeds} repetitions per point); its tables are the artifacts `rows.csv` and `summary.csv`.")
    with tracking.stage_run(params.mlflow.experiment, f"{STAGE}_{name}", tags, logged, description) as run_ids, \
            tqdm(total=len(points), desc=f"sweep_{name}", unit="point", file=sys.stderr) as bar:
        budgets = sorted({point.labels_per_class for point in points})
        tracking.log_target(spec.target, paths.target_data(spec.target), arrays,
                            {"labelled_per_class": ",".join(map(str, budgets)), "validation_fraction": params.transfer.validation_fraction})

        def on_point(point: sweeps.Point, rows: list[dict[str, Any]]) -> None:
            (summary,) = sweep_results.summarize_rows(rows)
            point_tags = {"stage": f"{STAGE}_{name}", "sweep": name, "x": str(point.x), "series": point.series,
                          "strategy": point.variant.strategy,  # layers from: the init model, or B_r (a selffer control)
                          "layers_from": "selffer" if point.selffer_from is not None else point.variant.init_from,
                          **twin_tags(twins.get(sweeps.race_key(point)))}
            with tracking.child_run(f"{point.series}/x={point.x}", point_tags):
                train, validation = split_sizes(point.labels_per_class, point.protocol.validation_fraction)
                tracking.log_target(spec.target, paths.target_data(spec.target), arrays,
                                    {"labelled_per_class": point.labels_per_class, "train_per_class": train, "validation_per_class": validation})
                tracking.log_final({key: summary[key] for key in ("target_accuracy", "ci95_low", "ci95_high", "n", "unconverged")})
            bar.set_postfix_str(f"{point.series} x={point.x}: {100 * summary['target_accuracy']:.1f} %")
            bar.update()

        grafts = {init_from: params.network_for(init_from) for init_from in init_models}
        rows = sweeps.run_sweep(points, plan, init_models, grafts, arrays, on_point,
                                init_files={name: paths.init_model(name) for name in init_models},
                                known={key: twin.repetitions for key, twin in twins.items()}, patterns=patterns)
        summary = sweep_results.summarize_rows(rows)
        artifacts.write_rows(paths.sweep_rows(name), rows)
        artifacts.write_rows(paths.sweep_summary(name), summary)
        metrics = {"points": len(points), "runs": len(rows), "unconverged_runs": sum(row["unconverged"] for row in summary)}
        record = {"sweep": name, "target": spec.target, "seeds": params.transfer.seeds, "budget": params.protocol().budget(),
                  "skipped": skipped, **run_ids}
        tracking.log_files({"rows.csv": paths.sweep_rows(name), "summary.csv": paths.sweep_summary(name)})
        artifacts.write_json(paths.sweep_metrics(name), metrics)
        artifacts.write_json(paths.sweep_run(name), record)
    best = max(summary, key=lambda row: row["target_accuracy"])
    reused = f", {len(twins)} raced by their transfer stages ({', '.join(t.variant for t in twins.values())})" if twins else ""
    print(f"sweep_{name}: {len(points)} points x {params.transfer.seeds} seed(s), {len(skipped)} skipped{reused}; best"
          f" {best['series']} at x={best['x']} ({100 * best['target_accuracy']:.1f} %) -> {paths.sweep_rows(name)}")


if __name__ == "__main__":
    run_main(main)
