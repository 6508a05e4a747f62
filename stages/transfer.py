"""Stage `transfer@<variant>`: train one transfer variant, `transfer.seeds` times, in one process.

    python -m stages.transfer freeze2      # writes models/transfer/freeze2.keras,
                                           # metrics/transfer/freeze2.json, plots/transfer/freeze2.csv

Reads `variants.<variant>`, `transfer`, its target and its init model's section of params.yaml.
MLflow: one parent run for the stage, one nested run per repetition (seed).
"""
from __future__ import annotations

from typing import Any

from transferlab import artifacts, data, paths, repetitions, statistics, tracking
from transferlab.cli import run_main
from transferlab.config import Params, load_params, stage_entry
from transferlab.errors import DataError

STAGE = "transfer"


def variant_summary(params: Params, name: str) -> dict[str, Any]:
    """The descriptive columns of a variant's metrics (what was reused, frozen, added)."""
    variant = params.variants[name]
    return {
        "variant": name,
        "strategy": variant.strategy,
        "init_from": variant.init_from,
        "target": variant.target,
        "reuse_layers": variant.reuse_layers,
        "frozen_layers": variant.frozen_layers,
        "new_layers": len(variant.new_hidden) + 1,
    }


def pooled(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Mean of each key over repetitions, with std and 95% CI for the accuracy."""
    summaries = {key: statistics.summarize([run[key] for run in runs]) for key in keys}
    out: dict[str, Any] = {key: summary["mean"] for key, summary in summaries.items()}
    accuracy = summaries["target_accuracy"]
    out.update(
        target_accuracy_std=accuracy["std"],
        target_accuracy_ci95_low=accuracy["ci95_low"],
        target_accuracy_ci95_high=accuracy["ci95_high"],
    )
    return out


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "variants", usage="python -m stages.transfer <variant name>")
    variant, target = params.variants[name], params.targets[params.variants[name].target]
    train = params.variant_train(name)
    target_file = paths.target_data(variant.target)
    arrays = data.load_npz(target_file, ("x_pool", "y_pool", "x_test", "y_test"))
    data.check_images(arrays, target_file)
    from transferlab import zoo  # TensorFlow starts only once the inputs are known to be good

    init_model = zoo.load_keras(paths.init_model(variant.init_from))
    expected = int(init_model.input_shape[-1])
    if arrays["x_test"].shape[1] != expected:
        raise DataError(
            f"{target_file}: images have {arrays['x_test'].shape[1]} pixels but {paths.init_model(variant.init_from)}"
            f" expects {expected} (set targets.{variant.target}.image_size)"
        )
    summary = variant_summary(params, name)
    tags = {"stage": f"{STAGE}@{name}", **{key: str(summary[key]) for key in ("variant", "strategy", "init_from", "target")},
            "data_fingerprint": data.fingerprint(*arrays.values())}
    logged = {"variant": variant.model_dump(), "transfer": params.transfer.model_dump(), "target": target.model_dump()}
    runs, histories, first_model = [], [], None
    plan = repetitions.plan(params.transfer.seeds, train.seed, target.seed, params.transfer.resample_labels)
    with tracking.stage_run(params.mlflow.experiment, name, tags, logged) as run_ids:
        for repetition in plan:
            seeds = {"seed": repetition.seed, "labels_seed": repetition.labels_seed}
            with tracking.child_run(f"{name}/seed{repetition.index}", {**tags, "repetition": str(repetition.index)}, seeds):
                run, outcome = repetition.run(variant, init_model, params.source_model.network, train, arrays, target.labels_per_class)
                tracking.log_history(outcome.history.rows)
                tracking.log_final(run)
            runs.append(run)
            histories.append(outcome.history.rows)
            if first_model is None:
                first_model = outcome.model
        history = repetitions.mean_rows(histories)
        metrics = {
            **summary,
            **pooled(runs, ("target_accuracy", "target_loss", "train_seconds", "seconds_per_epoch")),
            "trainable_params": outcome.trainable_params,
            "frozen_params": outcome.frozen_params,
            "epochs": outcome.history.epochs,
            "seeds": params.transfer.seeds,
            "labels_per_class": target.labels_per_class,
            **run_ids,
            "repetitions": runs,
        }
        artifacts.save_with(paths.variant_model(name), first_model.save)
        artifacts.write_rows(paths.variant_history(name), history)
        tracking.log_history(history)
        tracking.log_final({key: value for key, value in metrics.items() if key != "repetitions"})
        tracking.log_files([paths.variant_model(name), paths.variant_history(name)])
        artifacts.write_json(paths.variant_metrics(name), metrics)
    ci = f"[{metrics['target_accuracy_ci95_low']:.4f}, {metrics['target_accuracy_ci95_high']:.4f}]" if params.transfer.seeds > 1 else ""
    print(f"{name}: target accuracy {metrics['target_accuracy']:.4f} {ci} over {params.transfer.seeds} seed(s)")


if __name__ == "__main__":
    run_main(main)
