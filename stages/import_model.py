"""Stages `zoo@<name>` and `model_file@<name>`: bring a model from elsewhere into `models/<name>.keras`.

    python -m stages.import_model registered_source   # writes models/registered_source.keras,
                                                      # metrics/registered_source.json (its accuracy),
                                                      # runs/registered_source.json (origin, layers, digest, MLflow run)

Sources (params.yaml): `zoo.<name>` — a registry entry (`models:/name/version|alias|latest`) or a
scikit-learn MLP trained here on the source task; `model_files.<name>` — a `.keras` file or an
`.npz` of weights exported from PyTorch/JAX. Everything is loaded safely (`safe_mode=True`,
`allow_pickle=False`, no unpickling) and checked before it is written.
"""
from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transferlab import artifacts, data, paths, tracking
from transferlab.config import (
    BUILTIN_INIT,
    ModelFile,
    Params,
    RegistryEntry,
    SklearnMlpEntry,
    default_source,
    load_params,
    stage_entry,
)
from transferlab.data import datafiles, images
from transferlab.errors import ConfigError, TransferlabError
from transferlab.launch.cli import run_main

# the metrics file (a network's `blocks` too: what `transfer@` stages depend on, so declaring other blocks reruns them);
# the rest goes to the run record
RESULTS = ("source_test_accuracy", "sklearn_source_test_accuracy", "blocks")


def train_sklearn_mlp(entry: SklearnMlpEntry, source: dict[str, Any]):
    """Fit scikit-learn's MLPClassifier on the source task (in-pipeline: nothing is unpickled)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(
        hidden_layer_sizes=tuple(entry.hidden_units), activation=entry.activation, max_iter=entry.max_iter,
        learning_rate_init=entry.learning_rate, batch_size=entry.batch_size, random_state=entry.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is a budget we chose, not a failure
        mlp.fit(source["x_train"], source["y_train"])
    return mlp


def import_model(entry: RegistryEntry | SklearnMlpEntry | ModelFile, source: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Write the entry's model to `dest` (a `.keras` file); returns what to record about it."""
    from transferlab.models import zoo

    if isinstance(entry, RegistryEntry):
        from transferlab.tracking import registry

        with artifacts.atomic_path(dest) as tmp:
            registry.fetch_registered(entry.uri, tmp)
            zoo.load_keras(tmp, origin=entry.uri)  # validate before it counts as done; the bytes are kept as registered
        return {"source": entry.uri}
    if isinstance(entry, SklearnMlpEntry):
        mlp = train_sklearn_mlp(entry, source)
        artifacts.save_with(dest, zoo.from_sklearn_mlp(mlp).save)
        return {"source": "sklearn MLPClassifier", "sklearn_source_test_accuracy": float(mlp.score(source["x_test"], source["y_test"]))}
    if entry.format == "keras":
        zoo.load_keras(Path(entry.path))
        with artifacts.atomic_path(dest) as tmp:
            shutil.copyfile(entry.path, tmp)
        return {"source": entry.path}
    # before np.load inflates it (validate checked it too, but the file may have changed since)
    datafiles.check_npz_cap(Path(entry.path), datafiles.Cap(entry.max_array_mb * 10**6, f"model_files.{dest.stem}.max_array_mb"))
    artifacts.save_with(dest, zoo.from_npz(Path(entry.path), entry.name_map or None, entry.activation).save)
    return {"source": entry.path}


def describe(dest: Path, source: dict[str, Any], model_files: Mapping[str, ModelFile] | None = None) -> dict[str, Any]:
    """Layers, input size, file hash, and the imported network's own accuracy on the source test set.

    A Dense stack is described by its `hidden_layers` ({name: units}); any other network by its
    `input_shape` and `blocks` ({"first..last layer": parameters}, lowest first, the head last),
    declared by `model_files.<name>.blocks` when that entry declares them."""
    from transferlab.models import networks, zoo
    from transferlab.training import single

    model = zoo.load_keras(dest)
    described: dict[str, Any] = {"input_size": networks.input_size(model)}
    if networks.is_dense_chain(model):
        described["hidden_layers"] = {layer.name: int(layer.units) for layer in networks.hidden_layers(model)}
    else:
        found = zoo.init_blocks(model, model_files or {}, dest.stem)[1]
        described["input_shape"] = list(networks.input_shape(model))
        described["blocks"] = {zoo.block_text(block).rpartition(":")[0]: block.parameters for block in found}
    described["sha256"] = hashlib.sha256(dest.read_bytes()).hexdigest()
    n_classes = int(source["y_test"].max()) + 1
    names = {layer.name for layer in model.layers}
    if "outputs" in names and model.output_shape[-1] == n_classes and described["input_size"] == source["x_test"].shape[1]:
        x_test = source["x_test"].reshape((-1, *networks.input_shape(model)))  # flat here; an image input for the project's own
        described["source_test_accuracy"] = single.evaluate(model, x_test, source["y_test"])["accuracy"]
    return described


def reusable(described: dict[str, Any]) -> tuple[int, str]:
    """(how many blocks `reuse_layers` may reuse, what they are): a Dense stack's hidden layers, else the blocks below the head."""
    if "hidden_layers" in described:
        return len(described["hidden_layers"]), "hidden layers"
    return len(described["blocks"]) - 1, "blocks below the head"


def check_reuse_depth(params: Params, name: str, depth: int, what: str, dest: Path) -> None:
    """Variants reusing this model must fit its depth: known only now for a registry entry or a network's blocks.

    Refused here, before any variant trains, naming the variant's key; the imported file is removed
    so the refused import is not mistaken for a done one."""
    for variant_name, variant in params.variants.items():
        if variant.init_from == name and variant.reuse_layers > depth:
            dest.unlink(missing_ok=True)
            raise ConfigError(f"variants.{variant_name}.reuse_layers", f"{variant.reuse_layers} > {depth} {what} of {name!r}")


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    section, name = stage_entry(argv, params, "zoo", "model_files", usage="python -m stages.import_model <zoo or model_files entry>")
    key, entry = f"{section}.{name}", getattr(params, section)[name]
    source = datafiles.load_npz(paths.source_data(BUILTIN_INIT), ("x_train", "y_train", "x_test", "y_test"))
    data.check_images(source, paths.source_data(BUILTIN_INIT), n_classes=len(default_source(params, key).data.classes))
    # flat here, as scikit-learn and weight files read them; `describe` reshapes them to a model's own input
    source = {k: images.flat(v) if k.startswith("x_") else v for k, v in source.items()}
    tags = {"stage": f"{key.split('.')[0]}@{name}", "variant": name, "strategy": "import",
            "init_from": getattr(entry, "uri", None) or getattr(entry, "path", None) or getattr(entry, "kind", "")}
    with tracking.stage_run(params.mlflow.experiment, name, tags, {key: entry.model_dump()}) as run_ids:
        dest = paths.init_model(name)
        recorded = {"kind": getattr(entry, "kind", None) or entry.format, **import_model(entry, source, dest)}
        try:  # e.g. declared blocks that do not fit: refused, and the file is not mistaken for a done import
            described = describe(dest, source, params.model_files)
        except TransferlabError:
            dest.unlink(missing_ok=True)
            raise
        check_reuse_depth(params, name, *reusable(described), dest=dest)
        found = {**recorded, **described, **run_ids}
        metrics = {key: value for key, value in found.items() if key in RESULTS}
        tracking.log_final(found)
        tracking.log_files({"model.keras": dest})  # named as in every run that logs a model file
        artifacts.write_json(paths.init_metrics(name), metrics)
        artifacts.write_json(paths.init_run(name), {key: value for key, value in found.items() if key not in RESULTS})
    accuracy = metrics.get("source_test_accuracy")
    layers = f"hidden {found['hidden_layers']}" if "hidden_layers" in found else f"{len(found['blocks'])} blocks {found['blocks']}"
    print(f"imported {name} from {found['source']}: {layers}"
          + (f", source test accuracy {accuracy:.4f}" if accuracy is not None else ""))


if __name__ == "__main__":
    run_main(main)
