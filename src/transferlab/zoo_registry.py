"""The model zoo is the MLflow Model Registry: register `.keras` files, fetch them back, list them.

A version's artifact is the `.keras` file itself (logged under `zoo/<name>/` of the run that
registered it), never a pickled MLflow flavour: fetching only downloads a file, and loading it
goes through `zoo.load_keras` with `safe_mode`. Each version is tagged with what a variant needs
to pick an init model: `input_shape`, `hidden_layers` (`hidden1:300,hidden2:50`) and the
caller's tags (`test_accuracy`, …).

    python -m transferlab.zoo_registry list   # the catalogue, from $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
"""
from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from transferlab.artifacts import atomic_path
from transferlab.errors import ModelError
from transferlab.errors import first_line as _first_line

ARTIFACT_DIR = "zoo"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # also a safe artifact folder name
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/@]+)|@(?P<alias>[^/@]+))")


def _tracking_uri() -> str:
    from transferlab.tracking import tracking_uri  # the one default store, stated once

    return tracking_uri()


def _missing(error: MlflowException) -> bool:
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"


def publish_model(model_path: Path, name: str, register: bool, tags: Mapping[str, Any]) -> dict[str, str]:
    """The epilogue of a stage that makes a model (`pretrain_source@…`, `pretrain@…`): register the file
    as a new version of `name` in the zoo (which also logs it as the run's artifact), or, with
    `mlflow.register_models: false`, only log it; returns what the stage's metrics record of it."""
    if not register:
        from transferlab import tracking

        tracking.log_files([model_path])
        return {}
    version = register_keras(model_path, name, {key: str(value) for key, value in tags.items()})
    return {"registered_model": name, "registered_version": version}


def register_keras(model_path: Path, name: str, tags: Mapping[str, str]) -> str:
    """Log a `.keras` file to the active run and register it as a new version of `name`; returns the version.

    The file is loaded first (safe mode), so nothing unusable enters the zoo; `tags` (e.g.
    `test_accuracy`) are added to the computed `input_shape` and `hidden_layers` tags.
    """
    from transferlab import networks  # Keras only where a model is read: `list` stays light
    from transferlab.zoo import load_keras

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_keras needs an active MLflow run (the stage's main starts it)")
    if not _NAME.fullmatch(name):
        raise ModelError(f"zoo name {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit)")
    model = load_keras(Path(model_path))
    version_tags = {
        "input_shape": ",".join(str(int(dim)) for dim in model.input_shape[1:]),
        "hidden_layers": ",".join(f"{layer.name}:{int(layer.units)}" for layer in networks.hidden_layers(model)),
        **{key: str(value) for key, value in tags.items()},
    }
    client = MlflowClient()  # the fluent API's tracking URI: the same store as the active run
    run_id = run.info.run_id
    folder = f"{ARTIFACT_DIR}/{name}"
    if client.list_artifacts(run_id, folder):  # fetching expects exactly one .keras file per version
        raise ModelError(f"zoo name {name!r}: this run already registered a model under that name")
    mlflow.log_artifact(str(model_path), artifact_path=folder)
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not _missing(error):
            raise
        client.create_registered_model(name)
    version = client.create_model_version(name, source=f"runs:/{run_id}/{folder}", run_id=run_id, tags=version_tags)
    return str(version.version)


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of a registered model, oldest first (following MLflow's pages)."""
    quoted = f'"{name}"' if "'" in name else f"'{name}'"
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name={quoted}", page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda version: int(version.version))


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
            have = ", ".join(str(v.version) for v in _versions(client, name)) if _missing(error) else ""
            raise _registry_error(uri, error, f"registered model {name!r} has no version {ref} (has: {have or 'none'})") from None
    if match["alias"] is None and ref == "latest":
        versions = _versions(client, name)
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


def _hidden(tag: str | None) -> dict[str, int]:
    """`hidden1:300,hidden2:50` -> {"hidden1": 300, "hidden2": 50}; malformed parts are skipped."""
    pairs = (part.partition(":") for part in (tag or "").split(",") if part)
    return {name: int(units) for name, _, units in pairs if units.isdigit()}


def _float(tag: str | None) -> float | None:
    try:
        return float(tag) if tag is not None else None
    except ValueError:
        return None


def catalogue(tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """One row per registered version: name, version, aliases, input_shape, hidden_layers, test_accuracy, run_id."""
    client = MlflowClient(tracking_uri=tracking_uri)
    rows, token = [], None
    while True:
        page = client.search_registered_models(page_token=token)
        for model in page:
            # search results leave aliases out in some stores; the model's own record has them
            aliases = client.get_registered_model(model.name).aliases
            for version in _versions(client, model.name):
                shape = version.tags.get("input_shape", "")
                rows.append({
                    "name": model.name,
                    "version": str(version.version),
                    "aliases": sorted(alias for alias, number in aliases.items() if str(number) == str(version.version)),
                    "input_shape": tuple(int(d) for d in shape.split(",") if d.isdigit()) or None,
                    "hidden_layers": _hidden(version.tags.get("hidden_layers")),
                    "test_accuracy": _float(version.tags.get("test_accuracy")),
                    "run_id": version.run_id,
                })
        token = page.token
        if not token:
            return sorted(rows, key=lambda row: (row["name"], int(row["version"])))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The catalogue as a fixed-width text table."""
    header = ("name", "version", "aliases", "input", "hidden units", "test_accuracy")
    lines = [header] + [
        (
            row["name"],
            row["version"],
            ",".join(row["aliases"]) or "-",
            "x".join(str(d) for d in row["input_shape"] or ()) or "?",
            "-".join(str(units) for units in row["hidden_layers"].values()) or "?",
            "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _list(uri: str) -> None:
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).exists():  # don't create an empty store just to list it
        print(f"no registry yet ({path} does not exist)")
        return
    try:
        rows = catalogue(uri)
    except MlflowException as error:
        raise ModelError(f"{uri}: registry error ({_first_line(error)})") from None
    print(format_table(rows) if rows else f"no registered models in {uri}")


def main(argv: list[str] | None = None) -> None:
    """`python -m transferlab.zoo_registry list` (also installed as `transferlab-zoo list`)."""
    from transferlab.cli import run_main

    def command(args: list[str]) -> None:
        parser = argparse.ArgumentParser(prog="python -m transferlab.zoo", description=__doc__.splitlines()[0])
        parser.add_argument("command", choices=["list"], help="list: every registered model version")
        parser.parse_args(args)
        _list(_tracking_uri())

    run_main(command, argv)


if __name__ == "__main__":
    main()
