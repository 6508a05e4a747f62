"""Stage `validate`: check the whole params.yaml, and the files it names, before any other stage runs.

    python -m stages.validate              # writes data/prepared/params_ok.json

Every other stage depends (through the prepare stages) on this stage's output, so `dvc repro`
stops here with one line — before DVC deletes any stage's previous model, metrics or plots for a
change that would be refused anyway. The output never changes while params are valid, so it
reruns nothing below it. No TensorFlow import: model files are inspected as zip/npz archives.
It also proves that no target test image is a training image of a model it is tested against
(`leakage`): the tasks are computed here as the prepare stages will compute them.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from transferlab import artifacts, paths
from transferlab.config import ModelFile, Params, load_params
from transferlab.config.datasets import KINDS
from transferlab.data import datafiles, leakage
from transferlab.data.loaders import IDX_FILES
from transferlab.errors import ConfigError, DataError, ModelError
from transferlab.launch.cli import run_main

# The prepare stages depend on this folder (dvc.yaml): a data file DVC does not see could change
# without `dvc status` noticing, and the prepared data would silently differ from dvc.lock.
OK = {"params": "valid"}  # constant: a rerun with valid params changes nothing downstream
_HIDDEN = re.compile(r"hidden([1-9][0-9]*)")


def check_data_path(key: str, path: str | None, dataset: str) -> None:
    """A dataset's file or folder must exist and lie under data/raw/, the folder the prepare stages depend on
    (so a changed file or image reruns them): its real path (symlinks resolved), a regular file (a FIFO
    blocks a reader, a device never ends) or, for the kinds that read a folder, a folder (whose files
    `check_raw_folder` checks)."""
    kind = KINDS.get(dataset)
    if path is None or kind is None or kind.path == "none":
        return  # the other datasets ship with their packages (or download): there is no file to watch
    relative = PurePosixPath(Path(path).as_posix())
    if relative.is_absolute() or ".." in relative.parts or paths.RAW_DATA not in (relative, *relative.parents):
        raise ConfigError(key, f"{path} is outside {paths.RAW_DATA}/ (of this repository), so DVC would not see it change:"
                               f" put the {dataset} data there")
    if not Path(path).exists():
        raise ConfigError(key, f"{path}: no such file or folder")
    files = [Path(path), *(Path(path) / name for name in IDX_FILES.values())] if dataset == "mnist_idx" else [Path(path)]
    for file in files:
        if file.exists():
            leaving = _leaves_raw(file)
            if leaving:
                raise ConfigError(key, f"{file.as_posix()} {leaving}: put the {dataset} data there")
            found = paths.file_kind(file)
            if found != ("a folder" if file == Path(path) and kind.path == "folder" else None):
                what = "not a folder" if kind.path == "folder" and file == Path(path) else f"not a regular file ({found})"
                raise ConfigError(key, f"{file.as_posix()}: {what}; refused, reading it could block or never end")


def _leaves_raw(path: Path) -> str | None:
    """Why `path`'s real location is outside data/raw/ (a symlink out of it), or None."""
    real, root = path.resolve(), Path(paths.RAW_DATA).resolve()
    return None if real == root or root in real.parents else f"is a link to {real}, outside {paths.RAW_DATA}/"


def check_raw_folder() -> None:
    """Nothing in data/raw/ may block or escape a reader: DVC hashes the whole folder (a dependency of
    this stage and of the prepare stages), and the stages read what params name in it."""
    for folder, names, files in os.walk(paths.RAW_DATA):  # symlinks are listed, not followed
        for name in (*names, *files):
            path = Path(folder) / name
            leaving = _leaves_raw(path) if path.is_symlink() else None
            if leaving:
                raise DataError(f"{path.as_posix()} {leaving}: DVC hashes every file in {paths.RAW_DATA}/; remove the link")
            kind = paths.file_kind(path) if path.exists() else "a broken link"
            if kind not in (None, "a folder"):
                raise DataError(f"{path.as_posix()}: not a regular file ({kind}) in {paths.RAW_DATA}/, which DVC hashes;"
                                " refused, reading it could block or never end: remove it")


def _depth(names: set[str]) -> int:
    """How many of hidden1, hidden2, … are present without a gap (what transfer can reuse)."""
    depth = 0
    while f"hidden{depth + 1}" in names:
        depth += 1
    return depth


DENSE_STACK = {"InputLayer", "Flatten", "Reshape", "Dense"}  # classes of a Dense stack, whose depth is its hidden layers


def _keras_layer_names(path: Path) -> set[str]:
    """The layer names of a Dense stack's file; empty for any other network (its blocks need Keras to count)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    layers = [layer for layer in config.get("config", {}).get("layers", []) if isinstance(layer, dict)]
    if any(layer.get("class_name") not in DENSE_STACK for layer in layers):
        return set()
    return {layer.get("config", {}).get("name") or layer.get("name") for layer in layers}


def model_file_depth(key: str, spec: ModelFile) -> int:
    """Hidden layers of a model file, read without TensorFlow; the file must exist and be an archive."""
    path = Path(spec.path)
    if not path.exists():
        raise ConfigError(f"{key}.path", f"{spec.path}: no such file")
    if paths.file_kind(path) is not None:
        raise ConfigError(f"{key}.path", f"{spec.path}: not a regular file ({paths.file_kind(path)}); refused, reading it could block")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{key}.path", f"{spec.path}: not a .{spec.format} archive")
    if spec.format == "keras":
        return _keras_depth(path)
    try:
        datafiles.check_npz_cap(path, datafiles.Cap(spec.max_array_mb * 10**6, f"{key}.max_array_mb"))  # before np.load inflates it
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return -1  # unreadable: the import stage says exactly why, with the file named
    for name, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ModelError(f"{spec.path}: {name} has dtype {array.dtype}, expected real numbers")
    layers = {name.rpartition("/")[0] for name in arrays}
    return _depth({spec.name_map.get(name, name) for name in layers})


def _keras_depth(path: Path) -> int:
    """A Dense stack's hidden layers; -1 for any other network (`model_file@<name>` counts its blocks and checks)."""
    try:
        return _depth(names) if (names := _keras_layer_names(path)) else -1
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return -1  # unreadable: the import stage says exactly why, with the file named


def check_init_depths(params: Params) -> None:
    """`reuse_layers` must fit the init model; for model files that needs the file, so it is checked here."""
    depths = {name: model_file_depth(f"model_files.{name}", spec) for name, spec in params.model_files.items()}
    for name, variant in params.variants.items():
        depth = depths.get(variant.init_from, -1)
        if depth >= 0 and variant.reuse_layers > depth:
            raise ConfigError(
                f"variants.{name}.reuse_layers",
                f"{variant.reuse_layers} > {depth} hidden layers of {variant.init_from!r} ({params.model_files[variant.init_from].path})",
            )


def validate(params: Params) -> None:
    """Every check that needs more than the schema: files named by params, and what they hold."""
    for name, source in params.sources.items():
        check_data_path(f"sources.{name}.data.path", source.data.path, source.data.dataset)
    for name, target in params.targets.items():
        check_data_path(f"targets.{name}.path", target.path, target.dataset)
    check_raw_folder()
    check_init_depths(params)
    leakage.check(params)  # loads the datasets: last, once every file is known to be there


def main(argv: list[str]) -> None:
    if argv:
        raise ConfigError("(command line)", "usage: python -m stages.validate")
    validate(load_params(paths.PARAMS))
    artifacts.write_json(paths.PARAMS_OK, OK)
    print(f"{paths.PARAMS}: valid")


if __name__ == "__main__":
    run_main(main)
