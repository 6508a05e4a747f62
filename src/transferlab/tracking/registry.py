"""The model zoo is the MLflow Model Registry: register `.keras` files, fetch them back, list them.

A version is an MLflow model in the Keras flavour, logged by the run that registered it (a
signature, an input example, the native `.keras` file under `data/`; `mlflow.pyfunc.load_model`
loads it), never a pickle: fetching only downloads its one `.keras` file, and loading it goes
through `zoo.load_keras` with `safe_mode`. Each version is tagged with what a variant needs
to pick an init model: `input_shape`, for a Dense stack `hidden_layers` (`hidden1:300,hidden2:50`),
for any other network `blocks` (`conv2d_1..activation_1:104,…,conv2d_7..predictions:8071`: each
block's first and last layer and its parameters, lowest first, the head last), and the caller's
tags (`test_accuracy`, …). What the zoo holds, and its `list` command, is `catalogue.py`:

    python -m transferlab.tracking.registry list   # the catalogue, from $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from transferlab.artifacts import atomic_path
from transferlab.errors import ModelError
from transferlab.errors import first_line as _first_line
from transferlab.tracking.catalogue import main, model_versions

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # also a safe artifact folder name
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/@]+)|@(?P<alias>[^/@]+))")


# --- Keras models as MLflow models (the Keras flavour): the UI's Models tab lists them, a registry
# version is a real MLflow model (`MLmodel`, signature, input example). The flavour stores the
# native `.keras` file (`data/model.keras`), which `zoo.load_keras` (safe mode) reads as before.
# `mlflow.keras` imports TensorFlow: imported where a model is logged, so `list` stays light.
EXAMPLE_ROWS = 2  # rows of input kept as the model's input example


def signature(model: Any) -> Any:
    """Input and output tensor specs (an MLflow `ModelSignature`), float32, batch dimension free (-1),
    read from the model's shapes: no prediction (tracing `predict` costs about half a second)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(shape: tuple) -> Any:
        return Schema([TensorSpec(np.dtype(np.float32), (-1, *(int(dim) for dim in shape[1:])))])

    return ModelSignature(inputs=spec(model.input_shape), outputs=spec(model.output_shape))


def _save_keras(path: str, keras_file: Path, validate_serving_input: bool = False, **kwargs: Any) -> None:
    # MLflow's Keras flavour writes the input example before it creates the model folder
    # (FileNotFoundError on `input_example.json`): create it first.
    os.makedirs(path, exist_ok=True)
    del validate_serving_input  # an option of `Model.log`, not of the flavour
    import mlflow.keras

    mlflow.keras.save_model(path=path, **kwargs)
    # Keras' own save stamps the time into the zip: keep the stage's deterministic file, byte for byte,
    # so a model fetched from the registry is the file the stage wrote (same sha256, no needless reruns).
    shutil.copyfile(keras_file, Path(path) / "data" / "model.keras")


def log_keras(keras_file: Path, example: np.ndarray, name: str = "model", model: Any = None) -> Any:
    """Log the `.keras` file (loaded in safe mode unless `model` is that file's model) to the active run
    as an MLflow model called `name`, with a signature and the first rows of `example` as its input
    example. The MLflow model holds the file itself. Requirements are stated (keras, pinned), not inferred:
    inference would load the model again in a subprocess, seconds per stage. Nor does MLflow serve the
    example to check it (`validate_serving_input=False`): a second load of the model and a Keras
    progress bar on stdout; the test suite loads a logged model with `mlflow.pyfunc` instead.
    Returns MLflow's `ModelInfo` (`model_uri`, `model_id`)."""
    import mlflow.keras
    from mlflow.models import Model

    from transferlab.models.zoo import load_keras
    from transferlab.tracking.store import beside_the_store

    keras_file = Path(keras_file).resolve()  # the block below may change the working directory
    model = load_keras(keras_file) if model is None else model
    flavour = types.SimpleNamespace(__name__=mlflow.keras.__name__, save_model=_save_keras)
    example = np.asarray(example[:EXAMPLE_ROWS], dtype=np.float32)
    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # MLflow's notes on the environment it records, once per model
    try:
        with beside_the_store():
            return Model.log(artifact_path=None, name=name, flavor=flavour, model=model, signature=signature(model),
                             input_example=example, pip_requirements=mlflow.keras.get_default_pip_requirements(),
                             validate_serving_input=False, keras_file=keras_file)
    finally:
        quiet.setLevel(level)


def _missing(error: MlflowException) -> bool:
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"


def publish_model(model_path: Path, name: str, register: bool, tags: Mapping[str, Any], example: Any) -> dict[str, str]:
    """The epilogue of a stage that makes a model (`pretrain_source@…`, `pretrain@…`): register the file
    as a new version of `name` in the zoo (which also logs it as the run's MLflow model), or, with
    `mlflow.register_models: false`, only log it; `example`: input rows (the input example and
    the signature's source); returns what the stage's metrics record of it."""
    if not register:
        log_keras(model_path, example)
        return {}
    version = register_keras(model_path, name, {key: str(value) for key, value in tags.items()}, example)
    return {"registered_model": name, "registered_version": version}


def register_keras(model_path: Path, name: str, tags: Mapping[str, str], example: Any) -> str:
    """Log a `.keras` file to the active run as an MLflow model (Keras flavour, signature and input
    example from `example`) and register it as a new version of `name`; returns the version.

    The file is loaded first (safe mode), so nothing unusable enters the zoo; `tags` (e.g.
    `test_accuracy`) are added to the computed `input_shape` and `hidden_layers` (a Dense stack) or
    `blocks` (any other network) tags.
    """
    from transferlab.models import (  # Keras only where a model is read: `list` stays light
        blocks,
        networks,
    )
    from transferlab.models.zoo import block_text, load_keras

    model = load_keras(Path(model_path))  # first: a model the engine cannot run is refused whatever else is wrong
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_keras needs an active MLflow run (the stage's main starts it)")
    if not _NAME.fullmatch(name):
        raise ModelError(f"zoo name {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit)")
    version_tags = {
        "input_shape": ",".join(str(int(dim)) for dim in model.input_shape[1:]),
        **({"hidden_layers": ",".join(f"{layer.name}:{int(layer.units)}" for layer in networks.hidden_layers(model))}
           if networks.is_dense_chain(model) else {"blocks": ",".join(block_text(block) for block in blocks.blocks(model))}),
        **{key: str(value) for key, value in tags.items()},
    }
    client = MlflowClient()  # the fluent API's tracking URI: the same store as the active run
    run_id = run.info.run_id
    if client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        raise ModelError(f"zoo name {name!r}: this run already registered a model under that name")
    logged = log_keras(model_path, example, name=name, model=model)
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not _missing(error):
            raise
        client.create_registered_model(name)
    version = client.create_model_version(name, source=logged.model_uri, run_id=run_id, tags=version_tags, model_id=logged.model_id)
    return str(version.version)



def _registry_error(uri: str, error: MlflowException, missing: str) -> ModelError:
    """`missing` when the registry says the entry does not exist, else its own first line."""
    if _missing(error):
        return ModelError(f"{uri}: {missing}")
    return ModelError(f"{uri}: registry error ({_first_line(error)})")


def _resolve(client: MlflowClient, uri: str) -> ModelVersion:
    """The model version a `models:/` URI names, or a one-line ModelError saying what is missing."""
    match = _URI.fullmatch(uri)
    if match is None:
        raise ModelError(f"{uri}: not a models:/<name>/<version|alias|latest> URI")
    name, ref = match["name"], match["ref"] or match["alias"]
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        raise _registry_error(uri, error, f"no registered model named {name!r}") from None
    if match["alias"] is None and ref.isdigit():
        try:
            return client.get_model_version(name, ref)
        except MlflowException as error:
            have = ", ".join(str(v.version) for v in model_versions(client, name)) if _missing(error) else ""
            raise _registry_error(uri, error, f"registered model {name!r} has no version {ref} (has: {have or 'none'})") from None
    if match["alias"] is None and ref == "latest":
        versions = model_versions(client, name)
        if not versions:
            raise ModelError(f"{uri}: registered model {name!r} has no versions")
        return versions[-1]
    if ref not in model.aliases:  # stores differ in the error code they give, so look first
        have = ", ".join(sorted(model.aliases)) or "none"
        raise ModelError(f"{uri}: registered model {name!r} has no alias {ref!r} (has: {have})")
    return client.get_model_version(name, str(model.aliases[ref]))


def fetch_registered(uri: str, dest: Path, tracking_uri: str | None = None) -> Path:
    """Download the `.keras` file of `models:/<name>/<version|alias|latest>` (or `models:/<name>@<alias>`) to `dest`.

    `dest` is the file to write (it must end in `.keras`); it is replaced atomically. Load it
    with `zoo.load_keras`. `tracking_uri=None` uses MLflow's current one.
    """
    dest = Path(dest)
    if dest.suffix != ".keras":
        raise ModelError(f"{dest}: destination must be a .keras file path")
    client = MlflowClient(tracking_uri=tracking_uri)
    version = _resolve(client, uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=tmp, tracking_uri=tracking_uri or mlflow.get_tracking_uri()
            )
        except (MlflowException, OSError) as error:
            raise ModelError(f"{uri}: cannot download {version.source} ({_first_line(error)})") from None
        files = sorted(Path(local).rglob("*.keras")) if Path(local).is_dir() else [Path(local)]
        if len(files) != 1 or files[0].suffix != ".keras":
            raise ModelError(f"{uri}: expected one .keras file at {version.source}, found {len(files)}")
        with atomic_path(dest) as target:
            shutil.copyfile(files[0], target)
    return dest


if __name__ == "__main__":  # the catalogue's command, where the zoo's docs name it
    main()
