"""Any image data: image folders and .npz files of any shape prepare to (n, H, W, C); channels adapt; every bad
file is one line naming it; a grey source model races on an RGB target. Tiny data, real Pillow and Keras."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_params
from PIL import Image

from transferlab.config import parse_params
from transferlab.data import datasets, images, tasks
from transferlab.data.loaders import Request
from transferlab.errors import DataError


def _png(path: Path, array: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def _folder(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    for name, shapes in sizes.items():
        for i, (height, width) in enumerate(shapes):
            shape = (height, width, 3) if mode == "RGB" else (height, width)
            _png(root / name / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def _params(target: dict) -> object:
    raw = tiny_params()
    raw["targets"] = {"t": {"source": "source", "test_per_class": 2, "labels_per_class": 3, "seed": 1, **target}}
    raw["variants"] = {"scratch": {"strategy": "scratch", "init_from": "source", "target": "t", "reuse_layers": 2}}
    raw.pop("sweeps")
    return parse_params(raw)


def test_an_image_folder_of_rgb_pngs_of_two_sizes_prepares_to_nhwc(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _folder(tmp_path / "raw", {"cat": [(12, 10)] * 5 + [(20, 16)], "dog": [(12, 10)] * 6})
    params = _params({"dataset": "image_folder", "path": str(folder), "classes": ["dog", "cat"], "image_size": [12, 10]})
    arrays = tasks.target_arrays(params, "t")
    assert arrays["x_pool"].shape[1:] == (12, 10, 3) and arrays["x_test"].shape == (4, 12, 10, 3)
    assert arrays["x_pool"].dtype == np.float32 and 0 <= arrays["x_pool"].min() and arrays["x_pool"].max() <= 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(part in err[0] for part in ("1 of 12 images are not 12x10", "cat/5.png", "resized")), err
    # `classes: [dog, cat]`: dog is label 0; the sorted default would make cat 0
    loaded = datasets.load_parts(Request("image_folder", str(folder), folders=("dog", "cat"), size=(12, 10)))[0]
    assert loaded.class_names == ("dog", "cat") and loaded.y.tolist() == [0] * 6 + [1] * 6


def test_an_npz_of_32x24_rgb_images_with_custom_keys_prepares(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "rgb.npz", pictures=rng.integers(0, 256, (30, 32, 24, 3), dtype=np.uint8), kinds=np.arange(30) % 3)
    params = _params({"dataset": "npz", "path": str(tmp_path / "rgb.npz"), "keys": {"x": "pictures", "y": "kinds"},
                      "classes": [0, 2], "image_size": None})
    arrays = tasks.target_arrays(params, "t")
    assert arrays["x_pool"].shape == (16, 32, 24, 3) and arrays["x_test"].shape == (4, 32, 24, 3)
    grey = tasks.target_arrays(_params({"dataset": "npz", "path": str(tmp_path / "rgb.npz"), "classes": [0, 2],
                                        "keys": {"x": "pictures", "y": "kinds"}, "image_size": [16, 12], "channels": 1}), "t")
    assert grey["x_test"].shape == (4, 16, 12, 1)
    assert "ITU-R BT.601" in str(grey["preparation"]) and "resized" in str(grey["preparation"])


def test_channel_adaptation_repeats_grey_and_weighs_rgb_by_luminance() -> None:
    grey = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 2, 2, 1)
    rgb, note = images.adapt_channels(grey, 3)
    assert rgb.shape == (2, 2, 2, 3) and (rgb == grey).all() and "repeated" in note
    back, note = images.adapt_channels(rgb, 1)
    np.testing.assert_allclose(back, grey, atol=1e-6)  # the weights sum to 1
    red = np.zeros((1, 1, 1, 3), np.float32)
    red[..., 0] = 1.0
    assert images.adapt_channels(red, 1)[0].item() == pytest.approx(0.299) and images.adapt_channels(red, 3)[1] is None


def _bomb_png(path: Path, side: int) -> Path:
    """A PNG header claiming side x side pixels, with no pixel data: only the header is ever read."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)) + chunk(b"IEND", b""))
    return path


def _bad_folder(root: Path, case: str) -> Path:
    folder = _folder(root, {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3}, mode="L")
    if case == "non-image":
        (folder / "a" / "notes.txt").write_text("not an image")
    elif case == "truncated":
        good = (folder / "a" / "0.png").read_bytes()
        (folder / "a" / "0.png").write_bytes(good[: len(good) // 2])
    elif case == "16-bit":
        Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(folder / "a" / "0.tif")
    elif case == "one image":
        for extra in ("1.png", "2.png"):
            (folder / "b" / extra).unlink()
    elif case == "bomb":
        _bomb_png(folder / "a" / "huge.png", 100_000)
    elif case == "empty class":
        (folder / "c").mkdir()
    return folder


@pytest.mark.parametrize(("case", "fragments"), [
    ("non-image", ("a/notes.txt", "not an image file")),
    ("truncated", ("a/0.png", "corrupt or truncated")),
    ("16-bit", ("a/0.tif", "16 or 32 bits", "refused, not converted")),
    ("one image", ("/b", "has 1 image(s)", "at least 2")),
    ("bomb", ("a/huge.png", "decompression bomb")),
    ("empty class", ("/c", "has 0 image(s)")),
])
def test_a_bad_image_folder_is_one_line_naming_the_file(tmp_path: Path, case: str, fragments: tuple[str, ...]) -> None:
    folder = _bad_folder(tmp_path / "raw", case)
    with pytest.raises(DataError) as error:
        datasets.load_parts(Request("image_folder", str(folder)))
    message = str(error.value)
    assert "\n" not in message and all(fragment in message for fragment in fragments), message


def test_a_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "raw", {"a": [(8, 8)] * 2, "b": [(8, 8)] * 2}, mode="L")
    outside = _png(tmp_path / "elsewhere.png", np.zeros((8, 8), np.uint8))
    (folder / "a" / "link.png").symlink_to(outside)
    with pytest.raises(DataError, match="link.png: a link to .*outside"):
        datasets.load_parts(Request("image_folder", str(folder)))


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"x": np.array([{"evil": 1}] * 4, dtype=object), "y": np.arange(4)}, "refused to load"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.array([0, 1, -1, 1])}, "negative label -1"),
    ({"x": np.zeros((4, 8, 8), np.uint16) + 300, "y": np.arange(4)}, "pixel values outside [0, 255]"),
    ({"x": np.zeros((4, 8), np.uint8), "y": np.arange(4)}, "expected (n, H, W) or (n, H, W, C)"),
])
def test_a_bad_npz_is_one_line_naming_the_file(tmp_path: Path, arrays: dict, fragment: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as error:
        datasets.load_parts(Request("npz", str(tmp_path / "bad.npz"), keys=("x", "y", None, None)))
    assert "bad.npz" in str(error.value) and fragment in str(error.value), str(error.value)


def test_labels_out_of_the_declared_classes_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "few.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 2)
    params = _params({"dataset": "npz", "path": str(tmp_path / "few.npz"), "classes": [0, 1, 7], "image_size": None})
    with pytest.raises(DataError, match=r"no images of class\(es\) \[7\]"):
        tasks.target_arrays(params, "t")


def test_a_grey_source_model_races_on_an_rgb_target_through_channel_adaptation(tmp_path: Path) -> None:
    from transferlab.config import (
        NetworkSpec,
        OptimizerSpec,
        Protocol,
        StoppingSpec,
        TrainSpec,
        VariantSpec,
    )
    from transferlab.data import repetitions
    from transferlab.models import networks
    from transferlab.training import race, single

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (60, 12, 12, 3), dtype=np.uint8)
    y = np.arange(60) % 3
    x[y == 1, :6] //= 4  # something to learn: the classes differ in brightness
    np.savez(tmp_path / "rgb.npz", x=x, y=y)
    target = {"dataset": "npz", "path": str(tmp_path / "rgb.npz"), "classes": [0, 1, 2], "image_size": 12, "channels": 1}
    arrays = tasks.target_arrays(_params({**target, "test_per_class": 5, "labels_per_class": 8}), "t")
    assert arrays["x_pool"].shape[1:] == (12, 12, 1)
    single.make_deterministic(0)
    network = NetworkSpec(hidden_units=[16, 8], activation="relu", initializer="he_normal")
    grey = networks.build((12, 12, 1), networks.dnn_layers(network.hidden_units, "relu", 3), "he_normal", seed=0)
    single.fit(grey, arrays["x_pool"], arrays["y_pool"], TrainSpec(epochs=1, batch_size=16, seed=0))
    variant = VariantSpec(strategy="freeze", init_from="source", target="t", reuse_layers=2, frozen_layers=1)
    protocol = Protocol(batch_size=8, validation_fraction=0.25, stopping=StoppingSpec(max_epochs=3, patience=2),
                        grid=[OptimizerSpec(name="sgd", learning_rate=0.05)])
    outcome = race.race(variant, grey, network, protocol, arrays, 8, repetitions.plan(1, train_seed=1, target_seed=0, resample_labels=True))
    assert 0 <= outcome.results[0].target_accuracy <= 1
    np.testing.assert_array_equal(outcome.models[0].get_layer("hidden1").get_weights()[0], grey.get_layer("hidden1").get_weights()[0])


def test_the_report_states_how_a_targets_images_were_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_target records its preparation notes in runs/targets/<name>.json; the report's task sentence says them."""
    import sys

    from conftest import ROOT
    from test_reporting import SCRATCH

    from transferlab import artifacts, paths
    from transferlab.report import verdicts

    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("stages.report", None)
    from stages import report

    monkeypatch.chdir(tmp_path)
    params = _params({"dataset": "npz", "path": "rgb.npz", "classes": [0, 2], "channels": 1, "image_size": [16, 12]})
    notes = {"channels": "RGB -> grey by ITU-R BT.601 luminance", "size": "resized 32x24 -> 16x12 (bilinear, per channel)"}
    artifacts.write_json(paths.target_run("t"), {"classes": [0, 2], "image_shape": [16, 12, 1], "preparation": notes})
    sentence = report.task_sentence(params, "t", verdicts.rank([SCRATCH]))
    assert sentence.endswith("Prepared: RGB -> grey by ITU-R BT.601 luminance; resized 32x24 -> 16x12 (bilinear, per channel).")
    assert "classes [0, 2] of rgb.npz" in sentence
