"""Stage `pretrain@<name>`: pretrain lower layers without target labels, for variants to start from.

    python -m stages.pretrain autoencoder   # writes models/autoencoder.keras, metrics/autoencoder.json
                                            # (its final losses), runs/autoencoder.json (method, pool, MLflow
                                            # run, registry version), plots/autoencoder.csv

Reads `pretrain.<name>` from params.yaml. The unlabelled pool is every image of the default source
(`sources.source`) plus the
target's labelled pool *without its labels* — never a target test image. The saved network's
hidden layers are named `hidden1 …` like the source model's, so variants reuse them unchanged.
"""
from __future__ import annotations

import numpy as np

from transferlab import artifacts, data, paths, tracking
from transferlab.config import BUILTIN_INIT, load_params, stage_entry
from transferlab.data import datafiles, images
from transferlab.errors import DataError
from transferlab.launch.cli import run_main
from transferlab.tracking import registry

STAGE = "pretrain"


def unlabelled_pool(source: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> np.ndarray:
    """Source train and test images and the target pool, labels dropped, flattened (the pretraining methods read
    vectors); checked disjoint from the target test set."""
    if source["x_train"].shape[1:] != target["x_pool"].shape[1:]:
        raise DataError(f"unlabelled pool: source images are {source['x_train'].shape[1:]} but the target's"
                        f" {target['x_pool'].shape[1:]}; set the target's image_size and channels to the source's")
    pool = images.flat(np.concatenate([source["x_train"], source["x_test"], target["x_pool"]]))
    test_rows = {row.tobytes() for row in images.flat(target["x_test"])}
    if any(row.tobytes() in test_rows for row in pool):
        raise DataError("unlabelled pool: contains a target test image (is the target split overlapping its pool?)")
    return pool


def step_rows(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Number rows 1..N across layers, so greedy layer-by-layer curves plot on one axis."""
    return [{"step": i + 1, **row} for i, row in enumerate(rows)]


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "pretrain", usage="python -m stages.pretrain <pretrain entry>")
    spec = params.pretrain[name]
    source = datafiles.load_npz(paths.source_data(BUILTIN_INIT), ("x_train", "x_test"))
    target = datafiles.load_npz(paths.target_data(spec.target), ("x_pool", "x_test"))
    data.check_images(source, paths.source_data(BUILTIN_INIT))
    data.check_images(target, paths.target_data(spec.target))
    pool = unlabelled_pool(source, target)
    from transferlab.training import (
        single,  # TensorFlow starts only once the inputs are known to be good
    )
    from transferlab.training.pretraining import METHODS

    single.make_deterministic(spec.seed)
    tags = {"stage": f"{STAGE}@{name}", "variant": name, "strategy": spec.method, "init_from": "random",
            "data_fingerprint": data.fingerprint(pool)}
    description = (f"Pretraining `{name}` ({spec.method}) on {len(pool)} unlabelled images (source + `{spec.target}`); "
                   "variants with `init_from: " + name + "` start from its layers. Its model is in the Models tab.")
    with tracking.stage_run(params.mlflow.experiment, name, tags, {"pretrain": spec.model_dump(), "pool_images": len(pool)},
                            description) as run_ids:
        tracking.log_dataset(f"unlabelled pool (source + {spec.target})", paths.target_data(spec.target), {"train": (pool, None)})
        result = METHODS[spec.method](pool, spec, f"pretrain.{name}")
        rows = step_rows(result.rows)
        record = {"method": spec.method, "depth": len(spec.hidden_units), "pool_images": int(len(pool)), **run_ids}
        artifacts.save_with(paths.init_model(name), result.model.save)
        artifacts.write_rows(paths.init_history(name), rows)
        tracking.log_history(rows, step_key="step")
        tracking.log_final({**result.metrics, **record})
        tracking.log_files({"history.csv": paths.init_history(name)})
        record.update(registry.publish_model(paths.init_model(name), params.mlflow.model_prefix + name,
                                                 params.mlflow.register_models, {"stage": f"{STAGE}@{name}", **result.metrics},
                                                 example=pool))
        artifacts.write_json(paths.init_metrics(name), result.metrics)
        artifacts.write_json(paths.init_run(name), record)
    print(f"pretrain {name} ({spec.method}): " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))


if __name__ == "__main__":
    run_main(main)
