"""Auxiliary-task pretraining: learn features by telling real images from corrupted copies.

`pretrain_goodbad` trains a classifier (real = 1, corrupted = 0); `pretrain_ranking` trains a
scoring network with Collobert & Weston's (2008) max-margin loss max(0, margin - s(good) + s(bad)).
Both hold out a fraction of the (real, corrupted) pairs, and report how well the task is solved on
them, so a stage can tell a pretraining that learned something from one that did not.

The corruptions themselves (noise, erase, shuffle_patches, blend) live in `transferlab.data.corruptions`
(NumPy only: the prepare stage that builds the shifted test set uses them too); re-exported here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from transferlab.config import TrainSpec
from transferlab.data.corruptions import (  # noqa: F401  (re-exported: the pretraining API names them)
    CORRUPTIONS,
    PATCH_GRID,
    blend,
    check_corruption,
    corrupt,
    corrupt_mixed,
    erase,
    noise,
    shuffle_patches,
)
from transferlab.errors import ConfigError
from transferlab.models import networks
from transferlab.training import single
from transferlab.training.pretraining import (
    PretrainResult,
    check_hidden_units,
    check_pixels,
)

SCORE = networks.SCORE


def _split(x: np.ndarray, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    order = np.random.default_rng([seed, 1]).permutation(len(x))
    held = int(round(heldout_fraction * len(x)))
    if held < 2 or len(x) - held < 2:
        raise ValueError(f"{len(x)} images leave too few for training and held-out pairs (heldout_fraction {heldout_fraction})")
    return x[np.sort(order[held:])], x[np.sort(order[:held])]


Pairs = tuple[np.ndarray, np.ndarray]  # (real images, their corrupted copies), row by row


def _training_and_heldout_pairs(
    x: np.ndarray, heldout_fraction: float, corruptions: Sequence[tuple[str, float]], seed: int, key: str
) -> tuple[Pairs, Pairs]:
    """Split the images, then corrupt each part with its own seed (held-out: seed + 1)."""
    train_x, held_x = _split(x, heldout_fraction, seed)
    return tuple(  # type: ignore[return-value]
        (good, corrupt_mixed(good, corruptions, part_seed, f"{key}.corruptions"))
        for good, part_seed in ((train_x, seed), (held_x, seed + 1))
    )


def _rename(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    # `training.fit` calls its validation set `val_…` (`test_…` when only monitored); here it is the held-out pairs.
    return [{name.replace("val_", "heldout_", 1).replace("test_", "heldout_", 1): value for name, value in row.items()}
            for row in rows]


def _held_out(train: TrainSpec, held: tuple) -> dict[str, tuple]:
    """The held-out pairs: stopped on (`validation`) when the training has patience, else only watched."""
    return {"validation" if train.patience is not None else "eval_data": held}


def pretrain_goodbad(
    x: np.ndarray,
    hidden_units: Sequence[int],
    activation: str,
    initializer: str,
    train: TrainSpec,
    corruptions: Sequence[tuple[str, float]],
    seed: int = 42,
    heldout_fraction: float = 0.2,
    key: str = "pretrain",
) -> PretrainResult:
    """A classifier hidden1 … hiddenK + 2-way softmax `outputs`: class 1 = real image, class 0 = corrupted.

    Each image yields one (real, corrupted) pair; `heldout_fraction` of the images (and so of the
    pairs) is kept out of training. `key` prefixes the params key named in a ConfigError.

    Returns:
        rows `epoch`, `loss`, `accuracy`, `heldout_loss`, `heldout_accuracy`; metrics `loss`,
        `accuracy` (training pairs, final weights), `heldout_loss`, `heldout_accuracy`.
    """
    x = check_pixels(x)
    units = check_hidden_units(hidden_units)
    labelled = [
        (np.concatenate([good, bad]), np.concatenate([np.ones(len(good)), np.zeros(len(bad))]).astype(np.int64))
        for good, bad in _training_and_heldout_pairs(x, heldout_fraction, corruptions, seed, key)
    ]
    (xs, ys), (held_xs, held_ys) = labelled
    model = networks.build(x.shape[1], networks.dnn_layers(units, activation, n_classes=2), initializer, seed)
    history = single.fit(model, xs, ys, train, **_held_out(train, (held_xs, held_ys)))
    final, held = single.evaluate(model, xs, ys), single.evaluate(model, held_xs, held_ys)
    metrics = {**final, "heldout_loss": held["loss"], "heldout_accuracy": held["accuracy"]}
    return PretrainResult(model, _rename(history.rows), metrics)


def ranking_loss(margin: float) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Per-pair hinge max(0, margin - (s(good) - s(bad))); the pair model outputs the difference."""

    def loss(y_true: tf.Tensor, score_difference: tf.Tensor) -> tf.Tensor:
        del y_true  # unused: the order within each pair is the label
        return tf.nn.relu(margin - score_difference[:, 0])

    return loss


def pair_model(scorer: keras.Model) -> keras.Model:
    """(good, bad) -> s(good) - s(bad), both through the one shared `scorer`."""
    size = networks.input_size(scorer)
    good, bad = keras.Input(shape=(size,), name="good"), keras.Input(shape=(size,), name="bad")
    difference = keras.layers.Subtract(name="score_difference")([scorer(good), scorer(bad)])
    return keras.Model([good, bad], difference, name="ranking_pairs")


def pretrain_ranking(
    x: np.ndarray,
    hidden_units: Sequence[int],
    activation: str,
    initializer: str,
    train: TrainSpec,
    corruptions: Sequence[tuple[str, float]],
    margin: float = 1.0,
    seed: int = 42,
    heldout_fraction: float = 0.2,
    key: str = "pretrain",
) -> PretrainResult:
    """A scorer hidden1 … hiddenK + linear `score` unit, trained so real images outscore their corrupted copies by `margin`.

    Returns:
        The scorer `pixels -> hidden1 … hiddenK -> score`; rows `epoch`, `loss`, `heldout_loss`
        (mean hinge per pair); metrics `ranking_loss`, `pairs_ranked` (training pairs, final weights),
        `heldout_ranking_loss`, `heldout_pairs_ranked` (fraction of held-out pairs with s(good) > s(bad)).
    """
    if not margin > 0:
        raise ConfigError(f"{key}.margin", f"{margin} must be > 0 (a zero margin is solved by a constant score)")
    x = check_pixels(x)
    units = check_hidden_units(hidden_units)
    train_pairs, held_pairs = _training_and_heldout_pairs(x, heldout_fraction, corruptions, seed, key)
    layers = [*networks.dnn_layers(units, activation, n_classes=1)[:-1], networks.LayerSpec(SCORE, 1, "linear")]
    scorer = networks.build(x.shape[1], layers, initializer, seed)
    # `fit` wants one label per example; the ranking loss ignores it (the pair's order is the label).
    history = single.fit(
        pair_model(scorer),
        train_pairs,
        np.zeros(len(train_pairs[0]), dtype=np.float32),
        train,
        loss=ranking_loss(margin),
        accuracy=False,
        **_held_out(train, (held_pairs, np.zeros(len(held_pairs[0]), dtype=np.float32))),
    )
    metrics: dict[str, float] = {}
    for prefix, pairs in (("", train_pairs), ("heldout_", held_pairs)):
        difference = single.predict(scorer, pairs[0])[:, 0] - single.predict(scorer, pairs[1])[:, 0]
        metrics[f"{prefix}ranking_loss"] = float(np.mean(np.maximum(0.0, margin - difference)))
        metrics[f"{prefix}pairs_ranked"] = float(np.mean(difference > 0))
    return PretrainResult(scorer, _rename(history.rows), metrics)
