"""The prepared arrays of each source and target task, computed from params: one home for the prepare
stages and for the leak check that `validate` runs before any of them. NumPy only (no TensorFlow).

A source task is (x_train, y_train, x_test, y_test): the dataset's official parts where it has
them (MNIST from `mnist.npz`, IDX files, keras), else a seeded stratified split. A target task is
(x_pool, y_pool, x_test, y_test): a seeded fixed test set and the rest as the pool, the official
parts, or (`split: source`) exactly its source's training and test sets; for each further test set
`<set>` of `evaluations`, also (x_test_<set>, y_test_<set>): a corrupted copy of each test image, same order, same labels.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from transferlab import data
from transferlab.config import (
    EvaluationSpec,
    ImageData,
    Params,
    SourceSpec,
    target_classes,
    target_dataset,
)
from transferlab.data import corruptions, images
from transferlab.data.datafiles import Cap
from transferlab.data.datasets import load_parts
from transferlab.data.loaders import Request
from transferlab.errors import ConfigError, DataError

MAX_RESIZE_BYTES = 4 * 2**30
Arrays = dict[str, np.ndarray]
Parts = tuple[images.Images, images.Images | None]


@lru_cache(maxsize=8)
def _parts(request: Request) -> Parts:
    """Each dataset is read once per process (validate computes every task)."""
    return load_parts(request)


def _request(dataset: str, spec: ImageData, key: str, classes: list[int] | list[str]) -> Request:
    """What to load for a data section (`key`): its file, cap, npz keys, class folders and size."""
    folders = tuple(str(c) for c in classes) if classes and isinstance(classes[0], str) else None
    return Request(dataset, spec.path, Cap(spec.max_array_mb * 10**6, f"{key}.max_array_mb"),
                   spec.npz_keys() if dataset == "npz" else Request.keys, folders, spec.size(), key)


def _numbers(classes: list[int] | list[str]) -> list[int]:
    """Class numbers to select: folder names were loaded in their listed order, as labels 0 .. K-1."""
    return list(range(len(classes))) if classes and isinstance(classes[0], str) else list(classes)  # type: ignore[arg-type]


def _select(parts: Parts, classes: list[int] | list[str], name: str) -> Parts:
    train, test = parts
    numbers = _numbers(classes)
    empty = test is None or len(test.y) == 0  # an empty test part is no test part (a seeded split re-splits the rest)
    return data.select_classes(train, numbers, name), None if empty else data.select_classes(test, numbers, name)


def _merged(parts: Parts) -> images.Images:
    train, test = parts
    return train if test is None else images.Images(np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]))


def source_arrays(name: str, spec: SourceSpec) -> Arrays:
    """A source's training and test sets, its classes relabelled 0 .. K-1 in the listed order."""
    spec_data, key = spec.data, f"sources.{name}.data"
    described = f"{key} ({spec_data.dataset})"
    parts = _select(_parts(_request(spec_data.dataset, spec_data, key, spec_data.classes)), spec_data.classes, described)
    if spec_data.official and parts[1] is not None:
        train, test = (_prepared(part, spec_data, key)[0] for part in parts)
        return {"x_train": train.x, "y_train": train.y, "x_test": test.x, "y_test": test.y}
    merged = _prepared(_merged(parts), spec_data, key)[0]
    return data.split_source(merged, spec_data.test_fraction, spec_data.seed)


def _prepared(found: images.Images, spec: ImageData, key: str) -> tuple[images.Images, dict[str, str]]:
    """Images resized to `image_size` and adapted to `channels`, and a note of what was done."""
    size, notes = spec.size(), {}
    x = found.x
    if size is not None and x.shape[1:3] != size:
        needed = len(x) * size[0] * size[1] * x.shape[3] * 8  # the resize works in float64
        if needed > MAX_RESIZE_BYTES:
            raise ConfigError(f"{key}.image_size", f"{size[0]}x{size[1]}: resizing {len(x)} images needs"
                                                   f" {needed / 2**30:.1f} GiB (limit {MAX_RESIZE_BYTES / 2**30:.0f} GiB)")
        notes["resize"] = f"resized (bilinear, per channel) from {x.shape[1]}x{x.shape[2]} to {size[0]}x{size[1]}"
        x = images.resize(x, size)
    try:
        x, adapted = images.adapt_channels(x, spec.channels)
    except DataError as error:
        raise ConfigError(f"{key}.channels", str(error)) from None
    if adapted:
        notes["channels"] = adapted
    return images.Images(x, found.y, found.class_names), notes


def _check_pool(y_pool: np.ndarray, labels_per_class: int | None, key: str) -> None:
    """Every class of the pool must hold the labelled budget (and `all` at least one training + one validation image)."""
    needed = labels_per_class or 2
    labels, counts = np.unique(y_pool, return_counts=True)
    if counts.min() < needed:
        label = int(labels[counts.argmin()])
        raise DataError(f"{key}: class {label} has {counts.min()} pool images, fewer than labels_per_class {needed}")


def corrupted_test(x_test: np.ndarray, y_test: np.ndarray, spec: EvaluationSpec, key: str, name: str) -> Arrays:
    """A further test set `name`: row i is test image i corrupted (its kind drawn per image from `spec.corruptions`).

    Only the test images go in, so no pool (training or validation) image can end up in it; `blend`
    partners are other test images. Deterministic from `spec.seed`.
    """
    kinds = [(c.kind, c.amount) for c in spec.corruptions]
    try:
        x_set = corruptions.corrupt_mixed(x_test, kinds, spec.seed, f"{key}.corruptions")
    except ValueError as error:  # e.g. shuffle_patches on images whose side is not a multiple of 4
        raise ConfigError(f"{key}.corruptions", str(error)) from None
    x_key, y_key = data.test_set_keys(name)
    return {x_key: x_set.astype(x_test.dtype, copy=False), y_key: y_test.copy()}


def target_arrays(params: Params, name: str) -> Arrays:
    """A target's labelled pool, its fixed test set, a corrupted copy of the test set per `evaluations` entry (in
    its order), and `data.PREPARATION`: a note of what was done to its images (resizing, channel adaptation), for the report."""
    arrays, notes = _target_split(params, name)
    for test_set, spec in params.targets[name].evaluations.items():
        key = f"targets.{name}.evaluations.{test_set}"
        arrays = {**arrays, **corrupted_test(arrays["x_test"], arrays["y_test"], spec, key, test_set)}
    return {**arrays, data.PREPARATION: data.preparation_note(notes)}


def _target_split(params: Params, name: str) -> tuple[Arrays, dict[str, str]]:
    """A target's labelled pool and fixed test set (classes relabelled 0 .. K-1 in the listed order), and the preparation notes."""
    target, key = params.targets[name], f"targets.{name}"
    if target.split == "source":
        source = source_arrays(target.source, params.sources[target.source])
        pool, notes = _prepared(images.Images(source["x_train"], source["y_train"]), target, key)
        test = _prepared(images.Images(source["x_test"], source["y_test"]), target, key)[0]
        _check_pool(pool.y, target.labels(), f"{key}.labels_per_class")
        return {"x_pool": pool.x, "y_pool": pool.y, "x_test": test.x, "y_test": test.y}, notes
    dataset, section = target_dataset(params, name)
    classes, described = target_classes(params, name), f"{key} ({dataset})"
    # `dataset: source` reads the source's file, under the source's cap and image size: the same load, cached
    section_key = key if target.dataset != "source" else f"sources.{target.source}.data"
    train, test = _select(_parts(_request(dataset, section, section_key, classes)), classes, described)
    official = target.split == "official" or (target.split is None and test is not None)
    if official and test is not None:
        pool, notes = _prepared(train, target, key)
        test_images = _prepared(test, target, key)[0]
        _check_pool(pool.y, target.labels(), f"{key}.labels_per_class")
        return {"x_pool": pool.x, "y_pool": pool.y, "x_test": test_images.x, "y_test": test_images.y}, notes
    merged, notes = _prepared(_merged((train, test)), target, key)
    split = data.split_target(merged, target.test_per_class, target.labels() or 2, target.seed, f"{key}.labels_per_class")
    return split, notes
