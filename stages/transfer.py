"""Stage `transfer@<variant>`: race one transfer variant, `transfer.seeds` repetitions x the tuning grid, in one process.

    python -m stages.transfer freeze2      # writes models/transfer/freeze2.keras, metrics/transfer/freeze2.json
                                           # (results), runs/transfer/freeze2.json (recipe, choices, MLflow run),
                                           # plots/transfer/freeze2.csv

Reads `variants.<variant>`, `transfer` (the protocol: validation share, early stopping, grid), its
target and its init model. Each repetition's labelled images are split into training and
validation; every grid setting is trained with early stopping on validation, the best setting is
chosen on validation, and only its weights are scored on the test set.
MLflow: one parent run for the stage (the variant's headline metrics, its mean curves, `history.csv`,
`model.keras` and the first repetition's model as an MLflow model), one nested run per repetition
(chosen setting, best epoch, stop reason, per-epoch curves of the chosen run).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transferlab import artifacts, data, paths, tracking
from transferlab.config import load_params, stage_entry, strategies
from transferlab.data import repetitions
from transferlab.launch.cli import run_main
from transferlab.training.results import VariantResult

STAGE = "transfer"
LISTS = ("settings", "val_accuracy_per_epoch")  # per-repetition lists, in the metrics file, not MLflow metrics


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The parent run's summary metrics: the metrics file's numbers, each interval as its two ends."""
    scalars = {key: value for key, value in metrics.items() if key != "repetitions"}
    for key in [key for key in scalars if key.endswith("_ci95")]:  # the test set's, then each further test set's
        low, high = scalars.pop(key) or (None, None)
        scalars |= {f"{key}_low": low, f"{key}_high": high} if low is not None else {}
    return scalars


def describe(name: str, metrics: dict[str, Any], record: dict[str, Any], further: Sequence[str]) -> str:
    """The parent run's note: what the variant does, and what it scored (`further`: its further test sets)."""
    found = f"test accuracy {100 * metrics['target_accuracy']:.1f} %"
    if metrics.get("target_accuracy_ci95", [None])[0] is not None:
        found += " [{:.1f}, {:.1f}]".format(*(100 * value for value in metrics["target_accuracy_ci95"]))
    for test_set in further:
        found += f", {test_set} test {100 * metrics[f'{test_set}_accuracy']:.1f} %"
    return (f"Variant `{name}`: strategy `{record['strategy']}`, {record['reuse_layers']} layer(s) reused from "
            f"`{record['init_from']}` ({record['frozen_layers']} kept fixed), target `{record['target']}` with "
            f"{record['labels_per_class']} labels per class; {record['seeds']} repetition(s), one nested run each, "
            f"each the best setting on validation. Found: {found}.")


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "variants", usage="python -m stages.transfer <variant name>")
    variant, target = params.variants[name], params.targets[params.variants[name].target]
    protocol = params.protocol(variant)
    arrays = data.load_target(variant.target)
    from transferlab.models import (
        zoo,  # TensorFlow starts only once the inputs are known to be good
    )
    from transferlab.tracking import registry
    from transferlab.training import race

    init_model = zoo.load_keras(paths.init_model(variant.init_from))
    data.check_input_size(arrays, init_model.input_shape, variant.init_from, variant.target)
    patterns, _ = zoo.init_blocks(init_model, params.model_files, variant.init_from)  # declared blocks, checked before training
    tags = {"stage": f"{STAGE}@{name}", "variant": name, "strategy": variant.strategy, "init_from": variant.init_from,
            "target": variant.target, "data_fingerprint": data.fingerprint(*arrays.values())}
    logged = {"variant": variant.model_dump(), "protocol": protocol.model_dump(), "transfer": params.transfer.model_dump(),
              "target": target.model_dump()}
    plan = repetitions.plan(params.transfer.seeds, params.transfer.seed, target.seed, params.transfer.resample_labels)
    train_per_class, validation_per_class = data.split_per_class(arrays["y_pool"], target.labels(), protocol.validation_fraction)
    with tracking.stage_run(params.mlflow.experiment, name, tags, logged,
                            f"Variant `{name}` ({variant.strategy} from `{variant.init_from}` on `{variant.target}`): racing.") as run_ids:
        sizes = {"labelled_per_class": target.labels_per_class, "train_per_class": train_per_class,
                 "validation_per_class": validation_per_class}
        tracking.log_target(variant.target, paths.target_data(variant.target), arrays, sizes)
        outcome = race.race(variant, init_model, params.network_for(variant.init_from), protocol, arrays,
                            target.labels(), plan, patterns)
        for result, rows in zip(outcome.results, outcome.histories, strict=True):
            seeds = {"seed": result.seed, "labels_seed": result.labels_seed, "chosen_setting": result.setting,
                     "stop_reason": result.stop_reason}
            with tracking.child_run(f"{name}/seed{result.repetition}", {**tags, "repetition": str(result.repetition)}, seeds):
                tracking.log_target(variant.target, paths.target_data(variant.target), arrays, sizes)
                tracking.log_history(rows)
                tracking.log_final({**{key: value for key, value in result.to_dict().items() if key not in LISTS},
                                    "converged": float(result.converged)})
        result = VariantResult(
            variant=name, strategy=variant.strategy, init_from=variant.init_from, target=variant.target,
            reuse_layers=variant.reuse_layers, frozen_layers=len(strategies.kept_fixed(variant)), new_layers=len(variant.new_hidden) + 1,
            trainable_params=outcome.trainable_params, frozen_params=outcome.frozen_params,
            labels_per_class=target.labels_per_class, train_per_class=train_per_class,
            validation_per_class=validation_per_class, budget=protocol.budget(), repetitions=outcome.results, **run_ids,
        )
        metrics, record = result.to_json(), result.record()
        history = repetitions.mean_rows(outcome.histories)
        artifacts.save_with(paths.variant_model(name), outcome.models[0].save)
        artifacts.write_rows(paths.variant_history(name), history)
        tracking.log_history(history)
        tracking.log_final(headline(metrics))
        tracking.log_files({"model.keras": paths.variant_model(name), "history.csv": paths.variant_history(name)})
        registry.log_keras(paths.variant_model(name), arrays["x_test"], model=outcome.models[0])  # once per variant
        tracking.describe(describe(name, metrics, record, result.evaluations))
        artifacts.write_json(paths.variant_metrics(name), metrics)
        artifacts.write_json(paths.variant_run(name), record)
    low, high = metrics["target_accuracy_ci95"]
    interval = f" [{low:.4f}, {high:.4f}]" if low is not None else ""
    flag = "" if result.converged else f" ({metrics['unconverged_repetitions']} unconverged)"
    further = "".join(f", {test_set} test {metrics[f'{test_set}_accuracy']:.4f}" for test_set in result.evaluations)
    print(f"{name}: target accuracy {metrics['target_accuracy']:.4f}{interval}{further} over {result.seeds} seed(s),"
          f" chosen {record['chosen_settings']}, best epoch {metrics['best_epoch']:.0f}{flag}")


if __name__ == "__main__":
    run_main(main)
