"""The prepared arrays of each source and target task, computed from params: one home for the prepare
stages and for the leak check that `validate` runs before any of them. NumPy only (no TensorFlow).

A source task is (x_train, y_train, x_test, y_test): the dataset's official parts where it has
them (MNIST from `mnist.npz`, IDX files, keras), else a seeded stratified split. A target task is
(x_pool, y_pool, x_test, y_test): a seeded fixed test set and the rest as the pool, the official
parts, or (`split: source`) exactly its source's training and test sets; with `shift`, also
(x_test_shift, y_test_shift): a corrupted copy of each test image, same order, same labels.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from transferlab import corruptions, data
from transferlab.config import Params, ShiftSpec, SourceSpec, target_classes, target_dataset
from transferlab.errors import ConfigError, DataError

MAX_RESIZE_BYTES = 4 * 2**30
Arrays = dict[str, np.ndarray]


@lru_cache(maxsize=8)
def _parts(dataset: str, path: str | None, cap: data.Cap) -> tuple[data.Images, data.Images | None]:
    """Each dataset is read once per process (validate computes every task)."""
    return data.load_parts(dataset, path, cap)


def _cap(max_array_mb: int, key: str) -> data.Cap:
    return data.Cap(max_array_mb * 10**6, f"{key}.max_array_mb")


def source_arrays(name: str, spec: SourceSpec) -> Arrays:
    """A source's training and test sets, its classes relabelled 0 .. K-1 in the listed order."""
    spec_data, key = spec.data, f"sources.{name}.data ({spec.data.dataset})"
    train, test = _parts(spec_data.dataset, spec_data.path, _cap(spec_data.max_array_mb, f"sources.{name}.data"))
    if spec_data.official and test is not None:
        train, test = data.select_classes(train, spec_data.classes, key), data.select_classes(test, spec_data.classes, key)
        return {"x_train": train.x, "y_train": train.y, "x_test": test.x, "y_test": test.y}
    merged = train if test is None else data.Images(np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]))
    return data.split_source(data.select_classes(merged, spec_data.classes, key), spec_data.test_fraction, spec_data.seed)


def _resized(images: data.Images, side: int | None, key: str) -> data.Images:
    if side is None or images.side == side:
        return images
    needed = len(images.x) * side**2 * 8  # the resize works in float64
    if needed > MAX_RESIZE_BYTES:
        raise ConfigError(key, f"{side}: resizing {len(images.x)} images needs {needed / 2**30:.1f} GiB"
                               f" (limit {MAX_RESIZE_BYTES / 2**30:.0f} GiB)")
    return data.Images(data.resize(images.x, side), images.y)


def _check_pool(y_pool: np.ndarray, labels_per_class: int | None, key: str) -> None:
    """Every class of the pool must hold the labelled budget (and `all` at least one training + one validation image)."""
    needed = labels_per_class or 2
    labels, counts = np.unique(y_pool, return_counts=True)
    if counts.min() < needed:
        label = int(labels[counts.argmin()])
        raise DataError(f"{key}: class {label} has {counts.min()} pool images, fewer than labels_per_class {needed}")


def shifted_test(x_test: np.ndarray, y_test: np.ndarray, shift: ShiftSpec, key: str) -> Arrays:
    """The shifted test set: row i is test image i corrupted (its kind drawn per image from `shift.corruptions`).

    Only the test images go in, so no pool (training or validation) image can end up in it; `blend`
    partners are other test images. Deterministic from `shift.seed`.
    """
    kinds = [(c.kind, c.amount) for c in shift.corruptions]
    try:
        x_shift = corruptions.corrupt_mixed(x_test, kinds, shift.seed, f"{key}.corruptions")
    except ValueError as error:  # e.g. shuffle_patches on images whose side is not a multiple of 4
        raise ConfigError(f"{key}.corruptions", str(error)) from None
    return {"x_test_shift": x_shift.astype(x_test.dtype, copy=False), "y_test_shift": y_test.copy()}


def target_arrays(params: Params, name: str) -> Arrays:
    """A target's labelled pool, its fixed test set and, with `shift`, the shifted copy of the test set."""
    arrays = _target_split(params, name)
    shift = params.targets[name].shift
    if shift is None:
        return arrays
    return {**arrays, **shifted_test(arrays["x_test"], arrays["y_test"], shift, f"targets.{name}.shift")}


def _target_split(params: Params, name: str) -> Arrays:
    """A target's labelled pool and fixed test set (classes relabelled 0 .. K-1 in the listed order)."""
    target, key = params.targets[name], f"targets.{name}"
    size_key = f"{key}.image_size"
    if target.split == "source":
        source = source_arrays(target.source, params.sources[target.source])
        pool = _resized(data.Images(source["x_train"], source["y_train"]), target.image_size, size_key)
        test = _resized(data.Images(source["x_test"], source["y_test"]), target.image_size, size_key)
        _check_pool(pool.y, target.labels(), f"{key}.labels_per_class")
        return {"x_pool": pool.x, "y_pool": pool.y, "x_test": test.x, "y_test": test.y}
    dataset, path = target_dataset(params, name)
    classes, described = target_classes(params, name), f"{key} ({dataset})"
    own = target.dataset != "source"  # `dataset: source` reads the source's file, under the source's cap
    cap = _cap(target.max_array_mb, key) if own else _cap(params.sources[target.source].data.max_array_mb, f"sources.{target.source}.data")
    train, test = _parts(dataset, path, cap)
    official = target.split == "official" or (target.split is None and test is not None)
    if official and test is not None:
        pool = _resized(data.select_classes(train, classes, described), target.image_size, size_key)
        test_images = _resized(data.select_classes(test, classes, described), target.image_size, size_key)
        _check_pool(pool.y, target.labels(), f"{key}.labels_per_class")
        return {"x_pool": pool.x, "y_pool": pool.y, "x_test": test_images.x, "y_test": test_images.y}
    merged = train if test is None else data.Images(np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]))
    images = _resized(data.select_classes(merged, classes, described), target.image_size, size_key)
    return data.split_target(images, target.test_per_class, target.labels() or 2, target.seed, f"{key}.labels_per_class")
