"""Stage `pretrain_source@<name>`: train one source network (the note's DNN5) on its source task.

    python -m stages.pretrain_source source   # writes models/source.keras, metrics/source.json, plots/source.csv,
                                              # runs/source.json

Reads `sources.<name>` (classes, network and training params) and `mlflow` from params.yaml.
What the run found (metrics/, plots/: accuracies, epochs, stop reason) is apart from how it ran
(runs/: MLflow run ids, seconds, registry version): a rerun that trains the same weights changes
only runs/, which no stage depends on, so nothing downstream reruns, not even the report.
"""
from __future__ import annotations

from transferlab import artifacts, data, paths, tracking
from transferlab.config import load_params, stage_entry
from transferlab.data import datafiles
from transferlab.launch.cli import run_main
from transferlab.tracking import registry

STAGE = "pretrain_source"


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "sources", usage="python -m stages.pretrain_source <source name>")
    spec = params.sources[name]
    arrays = datafiles.load_npz(paths.source_data(name), ("x_train", "y_train", "x_test", "y_test"))
    data.check_images(arrays, paths.source_data(name), n_classes=len(spec.data.classes))
    from transferlab.models import (
        architectures,  # TensorFlow starts only once the inputs are known to be good
    )
    from transferlab.training import single

    single.make_deterministic(spec.train.seed)
    n_classes = len(spec.data.classes)
    tags = {"stage": f"{STAGE}@{name}", "variant": name, "strategy": "source", "init_from": "random",
            "data_fingerprint": data.fingerprint(*arrays.values())}
    conv = f"conv {'-'.join(map(str, spec.network.conv))} + " if spec.network.conv else ""
    description = (f"Source network `{name}`: {conv}{'-'.join(map(str, spec.network.hidden_units))} {spec.network.activation} "
                   f"units on classes {spec.data.classes}; variants copy its layers. Its model is in the Models tab.")
    with tracking.stage_run(params.mlflow.experiment, name, tags, {"source": spec.model_dump()}, description) as run_ids:
        model = architectures.source_network(spec.network, arrays["x_train"].shape[1:], n_classes, spec.train.seed)
        x, y, validation = arrays["x_train"], arrays["y_train"], None
        if spec.train.patience is not None:  # early stopping on a held-out share of the source training images
            kept, held = data.holdout_rows(len(y), spec.train.validation_fraction, spec.train.seed, labels=y)
            x, y, validation = x[kept], y[kept], (x[held], y[held])
        tracking.log_dataset(name, paths.source_data(name), {"train": (x, y), **({"validation": validation} if validation else {}),
                                                             "test": (arrays["x_test"], arrays["y_test"])})
        history = single.fit(model, x, y, spec.train, validation=validation, eval_data=(arrays["x_test"], arrays["y_test"]))
        scores = single.evaluate(model, arrays["x_test"], arrays["y_test"])
        metrics = {
            "test_accuracy": scores["accuracy"],
            "test_loss": scores["loss"],
            "epochs": history.epochs,
            "best_epoch": history.best_epoch,
            "stop_reason": history.stop_reason,
            "train_images": int(len(arrays["y_train"])),
            "test_images": int(len(arrays["y_test"])),
        }
        record = {"train_seconds": history.train_seconds, "seconds_per_epoch": history.seconds_per_epoch, **run_ids}
        artifacts.save_with(paths.init_model(name), model.save)
        artifacts.write_rows(paths.init_history(name), [{k: v for k, v in row.items() if k != "seconds"} for row in history.rows])
        tracking.log_history(history.rows)
        tracking.log_final({**metrics, **record})
        tracking.log_files({"history.csv": paths.init_history(name)})
        record.update(registry.publish_model(paths.init_model(name), params.mlflow.model_prefix + name,
                                                 params.mlflow.register_models, {"stage": f"{STAGE}@{name}", "test_accuracy": scores["accuracy"]},
                                                 example=arrays["x_test"]))
        artifacts.write_json(paths.init_metrics(name), metrics)
        artifacts.write_json(paths.init_run(name), record)
    print(f"source model {name}: test accuracy {scores['accuracy']:.4f} at epoch {history.best_epoch} of {history.epochs}"
          f" ({history.stop_reason}, {history.train_seconds:.1f} s)")


if __name__ == "__main__":
    run_main(main)
