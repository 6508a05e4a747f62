"""Model sources: unsafe or broken files are refused with one line; every import predicts like its original."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from transferlab.errors import ModelError  # noqa: E402
from transferlab.models import networks, zoo  # noqa: E402
from transferlab.tracking import catalogue as zoo_catalogue
from transferlab.tracking import registry as zoo_registry

INPUTS = 8


def tiny_model(seed: int = 1, classes: int = 3) -> keras.Model:
    return networks.build(INPUTS, networks.dnn_layers([6, 5], "relu", classes), "he_normal", seed)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).random((20, INPUTS), dtype=np.float32)


@pytest.fixture
def keras_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.keras"
    tiny_model().save(path)
    return path


def cut_in_half(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


# --- .keras files -------------------------------------------------------------------------------


def test_keras_file_loads_with_its_weights(keras_file: Path, x: np.ndarray) -> None:
    loaded = zoo.load_keras(keras_file)
    np.testing.assert_allclose(predict(loaded, x), predict(tiny_model(), x), atol=1e-6)


def test_keras_file_with_lambda_layer_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input(shape=(INPUTS,))
    hidden = keras.layers.Dense(4, name="hidden1")(inputs)
    doubled = keras.layers.Lambda(lambda t: t * 2)(hidden)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, doubled).save(path)
    with pytest.raises(ModelError, match=r"lambda\.keras: refused, it contains a Lambda layer"):
        zoo.load_keras(path)


def test_keras_file_of_a_cnn_loads(tmp_path: Path) -> None:
    """Not a Dense stack: loaded all the same, with its weights (the Keras-layers engine runs it, cut into blocks)."""
    inputs = keras.Input(shape=(6, 6, 1))
    x = keras.layers.BatchNormalization(name="norm")(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    outputs = keras.layers.Dense(3, activation="softmax", name="outputs")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "cnn.keras")
    loaded = zoo.load_keras(tmp_path / "cnn.keras")
    assert not networks.is_dense_chain(loaded)
    images = np.random.default_rng(0).random((2, 6, 6, 1), dtype=np.float32)
    np.testing.assert_array_equal(predict(loaded, images), predict(model, images))


def test_truncated_keras_file_is_refused(keras_file: Path) -> None:
    with pytest.raises(ModelError, match=r"tiny\.keras: not a \.keras model archive") as error:
        zoo.load_keras(cut_in_half(keras_file))
    assert "\n" not in str(error.value)


# --- .npz weights -------------------------------------------------------------------------------


def test_npz_round_trip_predicts_like_the_original(tmp_path: Path, x: np.ndarray) -> None:
    original = tiny_model()
    path = tmp_path / "weights.npz"
    zoo.save_weights_npz(original, path)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(f"{layer}/{kind}" for layer in ("hidden1", "hidden2", "outputs") for kind in ("kernel", "bias"))
    imported = zoo.from_npz(path)
    assert [layer.name for layer in networks.hidden_layers(imported)] == ["hidden1", "hidden2"]
    np.testing.assert_allclose(predict(imported, x), predict(original, x), atol=1e-5)


def test_npz_in_pytorch_layout_with_name_map(tmp_path: Path, x: np.ndarray) -> None:
    """The module docstring's export, applied to a state dict in PyTorch's own layout:
    nn.Sequential(Linear, ReLU, Linear, ReLU, Linear) names `0.weight` (out, in), `0.bias`, …"""
    original = tiny_model()
    state_dict = {}  # what `net.state_dict()` holds for a network with the same weights
    for theirs, ours in (("0", "hidden1"), ("2", "hidden2"), ("4", "outputs")):
        state_dict[f"{theirs}.weight"] = np.ascontiguousarray(original.get_layer(ours).kernel.numpy().T)
        state_dict[f"{theirs}.bias"] = original.get_layer(ours).bias.numpy()
    assert state_dict["0.weight"].shape == (original.get_layer("hidden1").units, x.shape[1])  # (out, in)
    # the docstring's export expression
    arrays = {f"{k.rsplit('.', 1)[0]}/{'kernel' if k.endswith('weight') else 'bias'}": v.T if k.endswith("weight") else v
              for k, v in state_dict.items()}
    path = tmp_path / "torch.npz"
    np.savez(path, **arrays)
    imported = zoo.from_npz(path, name_map={"0": "hidden1", "2": "hidden2", "4": "outputs"})
    np.testing.assert_allclose(predict(imported, x), predict(original, x), atol=1e-5)
    # the weights left in PyTorch's layout (the transpose forgotten) are refused, not silently misread
    untransposed = {f"{k.rsplit('.', 1)[0]}/{'kernel' if k.endswith('weight') else 'bias'}": v for k, v in state_dict.items()}
    np.savez(tmp_path / "raw.npz", **untransposed)
    with pytest.raises(ModelError, match=r"raw\.npz: "):
        zoo.from_npz(tmp_path / "raw.npz", name_map={"0": "hidden1", "2": "hidden2", "4": "outputs"})


def test_pickled_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"hidden1/kernel": np.array([[1.0, "x"]], dtype=object), "hidden1/bias": np.zeros(2)})
    with pytest.raises(ModelError, match=r"pickled\.npz: refused to load .*allow_pickle=False"):
        zoo.from_npz(path)


def test_truncated_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    zoo.save_weights_npz(tiny_model(), path)
    with pytest.raises(ModelError, match=r"weights\.npz: not a readable \.npz archive") as error:
        zoo.from_npz(cut_in_half(path))
    assert "\n" not in str(error.value)


def write_layers(path: Path, shapes: dict[str, tuple[tuple[int, int], int]]) -> Path:
    arrays = {}
    for layer, (kernel, bias) in shapes.items():
        arrays[f"{layer}/kernel"], arrays[f"{layer}/bias"] = np.zeros(kernel, np.float32), np.zeros(bias, np.float32)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"hidden1": ((8, 6), 6), "hidden2": ((7, 5), 5)}, r"hidden2 kernel \(7, 5\) vs expected \(6, 5\)"),
        ({"hidden1": ((8, 6), 4)}, r"hidden1 bias shape \(4,\) vs expected \(6,\)"),
        ({"hidden1": ((8, 6), 6), "hidden3": ((6, 5), 5)}, r"no layer hidden2 \(has hidden1, hidden3\)"),
        ({"fc1": ((8, 6), 6)}, r"layer\(s\) fc1 are not hidden1..hiddenN or outputs \(use name_map\)"),
        ({"outputs": ((8, 3), 3)}, r"no layer hidden1"),
    ],
    ids=["kernels-do-not-chain", "bias-length", "gap", "foreign-name", "no-hidden"],
)
def test_npz_with_wrong_layers_is_refused(tmp_path: Path, shapes: dict, message: str) -> None:
    path = write_layers(tmp_path / "bad.npz", shapes)
    with pytest.raises(ModelError, match=rf"bad\.npz: {message}"):
        zoo.from_npz(path)


def test_name_map_naming_a_missing_layer_is_refused(tmp_path: Path) -> None:
    path = write_layers(tmp_path / "w.npz", {"fc1": ((8, 6), 6)})
    with pytest.raises(ModelError, match=r"w\.npz: name_map names layer\(s\) fc2 not in the file \(has: fc1\)"):
        zoo.from_npz(path, name_map={"fc1": "hidden1", "fc2": "hidden2"})


def test_npz_without_bias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, **{"hidden1/kernel": np.zeros((8, 6))})
    with pytest.raises(ModelError, match=r"w\.npz: hidden1 has no hidden1/bias array"):
        zoo.from_npz(path)


def test_npz_of_hidden_layers_only_is_a_feature_extractor(tmp_path: Path) -> None:
    """Transfer always replaces `outputs`, so a file without one still gives layers to reuse."""
    model = zoo.from_npz(write_layers(tmp_path / "w.npz", {"hidden2": ((6, 5), 5), "hidden1": ((8, 6), 6)}), activation="tanh")
    assert [(layer.name, layer.units, layer.activation.__name__) for layer in model.layers[1:]] == [("hidden1", 6, "tanh"), ("hidden2", 5, "tanh")]


def test_only_dense_layers_are_exported(tmp_path: Path) -> None:
    inputs = keras.Input(shape=(INPUTS,))
    normalized = keras.layers.BatchNormalization(name="norm")(keras.layers.Dense(4, name="hidden1")(inputs))
    with pytest.raises(ModelError, match=r"out\.npz: layer norm is not a Dense layer"):
        zoo.save_weights_npz(keras.Model(inputs, normalized), tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


# --- scikit-learn -------------------------------------------------------------------------------


def fitted_mlp(activation: str, classes: int) -> MLPClassifier:
    rng = np.random.default_rng(3)
    features, labels = rng.random((60, INPUTS)), np.arange(60) % classes
    mlp = MLPClassifier(hidden_layer_sizes=(6, 5), activation=activation, max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations suffice: only the weights matter
        return mlp.fit(features, labels)


@pytest.mark.parametrize(("activation", "classes"), [("relu", 3), ("tanh", 3), ("logistic", 4), ("identity", 3), ("relu", 2)])
def test_sklearn_mlp_predicts_like_predict_proba(activation: str, classes: int, x: np.ndarray) -> None:
    mlp = fitted_mlp(activation, classes)
    model = zoo.from_sklearn_mlp(mlp)
    assert [layer.name for layer in model.layers[1:]] == ["hidden1", "hidden2", "outputs"]
    expected = mlp.predict_proba(x.astype(np.float64))
    assert predict(model, x).shape == expected.shape == (len(x), classes)
    np.testing.assert_allclose(predict(model, x), expected, atol=1e-5)


def test_unfitted_sklearn_mlp_is_refused() -> None:
    with pytest.raises(ModelError, match=r"MLPClassifier\(6, 5\): not fitted"):
        zoo.from_sklearn_mlp(MLPClassifier(hidden_layer_sizes=(6, 5)))


# --- registry -----------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite store whose experiment keeps its artifacts under tmp_path; restores MLflow's URI."""
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment_id=MlflowClient().create_experiment("zoo", artifact_location=str(tmp_path / "artifacts")))
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)


EXAMPLE = np.linspace(0, 1, 3 * INPUTS, dtype=np.float32).reshape(3, INPUTS)


def register(tmp_path: Path, seed: int, accuracy: str) -> str:
    path = tmp_path / f"model{seed}.keras"
    tiny_model(seed).save(path)
    with mlflow.start_run():
        return zoo_registry.register_keras(path, "tiny", {"test_accuracy": accuracy}, EXAMPLE)


def test_registry_round_trip(registry: str, tmp_path: Path, x: np.ndarray, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert register(tmp_path, seed=1, accuracy="0.91") == "1"
    assert register(tmp_path, seed=2, accuracy="0.93") == "2"
    MlflowClient().set_registered_model_alias("tiny", "champion", "1")
    for uri, seed in [("models:/tiny/1", 1), ("models:/tiny/latest", 2), ("models:/tiny@champion", 1), ("models:/tiny/champion", 1)]:
        fetched = zoo_registry.fetch_registered(uri, tmp_path / "fetched" / "init.keras")
        np.testing.assert_allclose(predict(zoo.load_keras(fetched), x), predict(tiny_model(seed), x), atol=1e-6, err_msg=uri)

    rows = zoo_catalogue.catalogue()
    assert [(row["name"], row["version"], row["aliases"]) for row in rows] == [("tiny", "1", ["champion"]), ("tiny", "2", [])]
    assert rows[0]["input_shape"] == (INPUTS,)
    assert rows[0]["hidden_layers"] == {"hidden1": 6, "hidden2": 5}
    assert [row["test_accuracy"] for row in rows] == [0.91, 0.93]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    zoo_registry.main(["list"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "version", "aliases", "input", "hidden", "units", "test_accuracy"]
    assert table[1].split() == ["tiny", "1", "champion", "8", "6-5", "0.9100"]


def test_a_registered_cnn_is_listed_by_its_blocks(registry: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Any network is tagged with its blocks (a Dense stack keeps its `hidden_layers`), and `list` prints them."""
    path = Path(__file__).parent / "fixtures" / "mini_xception.keras"
    with mlflow.start_run():
        zoo_registry.register_keras(path, "xception", {}, np.zeros((2, 64, 64, 1), np.float32))
    (row,) = zoo_catalogue.catalogue()
    assert row["input_shape"] == (64, 64, 1) and row["hidden_layers"] == {}
    assert row["blocks"][:2] == [("conv2d_1..activation_1", 104), ("conv2d_2..activation_2", 608)]
    assert len(row["blocks"]) == 7 and row["blocks"][-1] == ("conv2d_7..predictions", 8071)
    assert "hidden_layers" not in MlflowClient().get_model_version("xception", "1").tags
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    zoo_registry.main(["list"])
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["xception", "1", "-", "64x64x1", "7", "blocks", "-"]
    assert table[3].startswith("xception 1 blocks: 1 conv2d_1..activation_1 (104 parameters), 2 conv2d_2..activation_2 (608 parameters),")
    assert table[3].endswith(", 7 conv2d_7..predictions (8,071 parameters)")


def test_registered_version_is_an_mlflow_model(registry: str, tmp_path: Path, x: np.ndarray) -> None:
    """The Models tab and the registry show a real MLflow model: MLmodel, signature, input example, loadable."""
    register(tmp_path, seed=1, accuracy="0.9")
    version = MlflowClient().get_model_version("tiny", "1")
    assert version.source.startswith("models:/m-")  # a logged model (MLflow 3), not a folder of run artifacts
    info = mlflow.models.get_model_info("models:/tiny/1")
    assert "keras" in info.flavors and info.saved_input_example_info is not None
    inputs, outputs = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert [tuple(spec.shape) for spec in inputs] == [(-1, INPUTS)] and [tuple(spec.shape) for spec in outputs] == [(-1, 3)]
    loaded = mlflow.pyfunc.load_model("models:/tiny/1")
    assert loaded.metadata.get_input_schema() is not None
    np.testing.assert_allclose(np.asarray(loaded.predict(x)), predict(tiny_model(1), x), atol=1e-6)
    fetched = zoo_registry.fetch_registered("models:/tiny/1", tmp_path / "fetched.keras")
    assert fetched.read_bytes() == (tmp_path / "model1.keras").read_bytes(), "the registered file, byte for byte"


MISSING = [
    ("models:/tiny/7", r"models:/tiny/7: registered model 'tiny' has no version 7 \(has: 1\)"),
    ("models:/nope/1", r"models:/nope/1: no registered model named 'nope'"),
    ("models:/tiny@gold", r"models:/tiny@gold: registered model 'tiny' has no alias 'gold' \(has: none\)"),
    ("runs:/abc/model", r"runs:/abc/model: not a models:/"),
]


def test_fetch_missing_entries_fail_with_one_line(registry: str, tmp_path: Path) -> None:
    register(tmp_path, seed=1, accuracy="0.9")  # one store for every case: its setup costs a second or two
    for uri, message in MISSING:
        with pytest.raises(ModelError, match=message) as error:
            zoo_registry.fetch_registered(uri, tmp_path / "init.keras")
        assert "\n" not in str(error.value)
    assert not (tmp_path / "init.keras").exists()


def test_unsafe_model_never_enters_the_registry(registry: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.keras"
    tiny_model().save(path)
    cut_in_half(path)
    with mlflow.start_run(), pytest.raises(ModelError, match=r"broken\.keras"):
        zoo_registry.register_keras(path, "broken", {}, EXAMPLE)
    assert zoo_catalogue.catalogue() == []


def test_list_without_a_store_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    zoo_registry.main(["list"])
    out = capsys.readouterr().out
    assert out.startswith("no registry yet (") and "mlflow.db does not exist)" in out
    assert not (tmp_path / "mlflow.db").exists()
