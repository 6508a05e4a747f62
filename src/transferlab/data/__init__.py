"""Splitting, drawing and checking prepared image data. NumPy only: no TensorFlow start-up.

Images are (n, H, W, C) float32 pixels in [0, 1] (`images`), with int64 labels; where they come from
is the dataset kinds' table (`datasets`), how files are read safely `datafiles`. Prepared files are
checked when read back (`check_images`), and a prepared target's file says how it was prepared
(`PREPARATION`: resizing, channel adaptation), for the report.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from transferlab import paths
from transferlab.data.datafiles import load_npz
from transferlab.data.images import Images
from transferlab.errors import DataError


def select_classes(images: Images, classes: list[int], name: str) -> Images:
    """Keep the listed classes and relabel them 0 .. len(classes) - 1, in the listed order."""
    present = set(np.unique(images.y).tolist())
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(f"{name}: no images of class(es) {absent}")
    mask = np.isin(images.y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    y = np.array([relabel[int(c)] for c in images.y[mask]], dtype=np.int64)
    return Images(images.x[mask], y)


def holdout_rows(n: int, fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) row indices: `fraction` of the rows (of each class, given `labels`), seeded, at least one."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    held = [rng.permutation(rows)[: max(1, round(len(rows) * fraction))] for rows in groups]
    held_rows = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(n), held_rows), held_rows


def split_source(images: Images, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A stratified, seeded train/test split."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in np.unique(images.y):
        idx = rng.permutation(np.flatnonzero(images.y == label))
        test_idx.append(idx[: int(round(len(idx) * test_fraction))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(images.y)), test)
    train = rng.permutation(train)
    return {"x_train": images.x[train], "y_train": images.y[train], "x_test": images.x[test], "y_test": images.y[test]}


def split_target(images: Images, test_per_class: int, labels_per_class: int, seed: int, key: str) -> dict[str, np.ndarray]:
    """A fixed test set of `test_per_class` images per class; the rest is the pool labels are drawn from."""
    rng = np.random.default_rng(seed)
    test_idx, pool_idx = [], []
    for label in np.unique(images.y):
        idx = rng.permutation(np.flatnonzero(images.y == label))
        if len(idx) < test_per_class + labels_per_class:
            raise DataError(
                f"{key}: class {label} has {len(idx)} images, fewer than test_per_class {test_per_class}"
                f" + labels_per_class {labels_per_class}"
            )
        test_idx.append(idx[:test_per_class])
        pool_idx.append(idx[test_per_class:])
    test, pool = np.sort(np.concatenate(test_idx)), np.sort(np.concatenate(pool_idx))
    return {"x_pool": images.x[pool], "y_pool": images.y[pool], "x_test": images.x[test], "y_test": images.y[test]}


def draw_labelled(y_pool: np.ndarray, labels_per_class: int, validation_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The labelled images a practitioner has: `labels_per_class` pool images per class, drawn with `seed`.

    Returns (training rows, validation rows): the first `validation_per_class` of each class's
    draw are held out for validation, the rest are trained on. Both sorted, so the batch order
    is the trainer's; disjoint by construction, and never a test image (the pool excludes them).
    """
    if not 0 < validation_per_class < labels_per_class:
        raise DataError(f"validation_per_class {validation_per_class} must lie in 1 .. labels_per_class - 1 ({labels_per_class - 1})")
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(y_pool):
        idx = np.flatnonzero(y_pool == label)
        if len(idx) < labels_per_class:
            raise DataError(f"labels_per_class {labels_per_class} > {len(idx)} pool images of class {label}")
        chosen = rng.choice(idx, size=labels_per_class, replace=False)
        validation.append(chosen[:validation_per_class])
        train.append(chosen[validation_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def split_per_class(y_pool: np.ndarray, labels_per_class: int | None, validation_fraction: float) -> tuple[int, int]:
    """(training, validation) labelled images per class; for labels `all` (None) the mean over classes."""
    from transferlab.config import split_sizes

    if labels_per_class is not None:
        return split_sizes(labels_per_class, validation_fraction)
    counts = np.unique(y_pool, return_counts=True)[1]
    held = [max(1, round(int(count) * validation_fraction)) for count in counts]  # as holdout_rows carves them
    return round((int(counts.sum()) - sum(held)) / len(counts)), round(sum(held) / len(counts))


def draw_all(y_pool: np.ndarray, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pool image labelled (`labels_per_class: all`): per class, a seeded `validation_fraction` validates.

    Returns (training rows, validation rows), sorted and disjoint, as `draw_labelled` does.
    """
    kept, held = holdout_rows(len(y_pool), validation_fraction, seed, labels=y_pool)
    if len(kept) == 0 or any((y_pool[kept] == label).sum() == 0 for label in np.unique(y_pool)):
        raise DataError(f"labels_per_class all: a class has too few pool images to keep one for training ({len(y_pool)} in all)")
    return kept, held


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash of arrays, logged so runs on different data are never confused."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def check_images(arrays: dict[str, np.ndarray], path: Path, n_classes: int | None = None) -> None:
    """Validate prepared arrays read back from disk: images (n, H, W, C) of one shape, pixels in [0, 1],
    labels 0 .. classes - 1.

    `n_classes`: the number of classes the params declare; without it, the labels present must
    still be exactly 0 .. K-1 (a stray 7 in a 5-class pool is caught here, not as a shape error later).
    """
    labels = [array for key, array in arrays.items() if key.startswith("y_") and np.issubdtype(array.dtype, np.integer)]
    present = np.unique(np.concatenate([np.ravel(y) for y in labels])) if labels else np.array([], dtype=np.int64)
    classes = n_classes if n_classes is not None else len(present)
    shapes = {array.shape[1:] for key, array in arrays.items() if key.startswith("x_")}
    if len(shapes) > 1:
        raise DataError(f"{path}: its image arrays have different image shapes {sorted(shapes)}")
    for key, array in arrays.items():
        if key.startswith("x_") and array.size == 0:
            raise DataError(f"{path}: {key} is empty {array.shape}")
        if key.startswith("y_") and np.issubdtype(array.dtype, np.integer) and array.size:
            bad = array[(array < 0) | (array >= classes)]
            if bad.size and n_classes is None:  # the count is unknown here: a stray label is not one more class
                raise DataError(f"{path}: {key} has label {int(bad[0])}; the labels present"
                                f" ({', '.join(map(str, present.tolist()))}) are not 0..K-1")
            if bad.size:
                raise DataError(f"{path}: {key} has label {int(bad[0])} outside 0..{classes - 1} ({classes} classes)")
        if key.startswith("x_"):
            if array.ndim != 4 or array.shape[3] not in (1, 3) or not np.issubdtype(array.dtype, np.floating):
                raise DataError(f"{path}: {key} must be float images (n, H, W, C) with C 1 or 3, got {array.dtype} {array.shape}")
            if array.size and (array.min() < 0 or array.max() > 1 or not np.isfinite(array).all()):
                raise DataError(f"{path}: {key} has pixel values outside [0, 1]")
            y = arrays.get("y_" + key[2:])
            if y is not None and y.shape != (len(array),):
                raise DataError(f"{path}: y_{key[2:]} has shape {y.shape}, expected ({len(array)},)")
        elif key.startswith("y_") and not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{path}: {key} must hold integer labels, got {array.dtype}")


TEST_SET_PREFIX = "x_test_"  # a further test set's arrays (`targets.<name>.evaluations.<set>`): x_test_<set>, y_test_<set>


def test_set_keys(name: str) -> tuple[str, str]:
    """The prepared file's array names of the further test set `name`."""
    return f"{TEST_SET_PREFIX}{name}", f"y_test_{name}"


def test_sets(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The further test sets a target's prepared arrays hold, in the file's order (the params' order)."""
    return [key[len(TEST_SET_PREFIX):] for key in arrays if key.startswith(TEST_SET_PREFIX)]


PREPARATION = "preparation"  # a prepared file's note of how it was prepared: a JSON string (a 0-d unicode array)


def preparation_note(steps: dict[str, str]) -> np.ndarray:
    """The `PREPARATION` entry of a prepared file: what was done to its images (resize, channel adaptation)."""
    return np.array(json.dumps(steps, sort_keys=True))


def preparation(path: Path) -> dict[str, str]:
    """How a prepared file's images were prepared ({} where nothing was done, or the file predates the note)."""
    note = load_npz(path, (), optional=(PREPARATION,)).get(PREPARATION)
    return {} if note is None else json.loads(str(note))


def load_target(target: str) -> dict[str, np.ndarray]:
    """A target's prepared arrays (pool, test set, and each further test set), read and checked."""
    target_file = paths.target_data(target)
    arrays = load_npz(target_file, ("x_pool", "y_pool", "x_test", "y_test"), prefixes=(TEST_SET_PREFIX, "y_test_"))
    check_images(arrays, target_file)
    for name in test_sets(arrays):
        x_key, y_key = test_set_keys(name)
        if arrays[x_key].shape != arrays["x_test"].shape or not np.array_equal(arrays.get(y_key), arrays["y_test"]):
            raise DataError(f"{target_file}: {x_key} / {y_key} must be a copy of the test set's shape and labels;"
                            " rerun its stage: dvc repro")
    return arrays


def check_input_size(arrays: dict[str, np.ndarray], input_shape: tuple[int | None, ...], init_from: str, target: str) -> None:
    """The target's images must fill the init model's input, (H, W, C) (a CNN's, or a Dense stack that
    flattens them itself) or its flattened H * W * C values; the error says which params resize and
    adapt them. An input whose size is not fixed (None) is refused: the variant's network is built
    for one image size."""
    image = tuple(int(d) for d in arrays["x_test"].shape[1:])
    if any(d is None for d in input_shape[1:]):
        shape = "x".join("?" if d is None else str(d) for d in input_shape[1:])
        raise DataError(f"{paths.init_model(init_from)}: its input is {shape}, not of a fixed size; save the model with a "
                        f"fixed input (keras.Input(shape=(H, W, C))) to transfer it to {target}'s {'x'.join(map(str, image))} images")
    wanted = tuple(int(d) for d in input_shape[1:])
    if wanted != image and wanted != (int(np.prod(image)),):
        height, width, channels = image
        raise DataError(
            f"{paths.target_data(target)}: images are {height}x{width}x{channels} but {paths.init_model(init_from)}"
            f" expects {'x'.join(map(str, wanted))} (set targets.{target}.image_size and targets.{target}.channels)"
        )
