"""Greedy layer-wise RBM pretraining (Hinton, Osindero & Teh 2006) with scikit-learn's `BernoulliRBM`.

Each RBM is trained by scikit-learn's own persistent contrastive divergence (`partial_fit` on one
mini-batch at a time, so the pseudo-likelihood can be logged after every epoch); RBM k learns from
the hidden-unit probabilities (`transform`) of RBM k-1. Each RBM's recognition weights then become
a sigmoid Dense layer `hiddenK`, which computes exactly `transform`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.neural_network import BernoulliRBM

from transferlab.models import networks
from transferlab.training import single
from transferlab.training.pretraining import (
    PretrainResult,
    check_hidden_units,
    check_pixels,
)


def train_rbm(
    x: np.ndarray, units: int, learning_rate: float, epochs: int, batch_size: int, seed: int
) -> tuple[BernoulliRBM, list[dict[str, float]]]:
    """One RBM on `x` (values in [0, 1]), and its rows: `epoch` and `pseudo_likelihood` after each epoch."""
    if learning_rate <= 0 or epochs < 1 or batch_size < 1:
        raise ValueError(f"need learning_rate > 0, epochs >= 1, batch_size >= 1 (got {learning_rate}, {epochs}, {batch_size})")
    rbm = BernoulliRBM(n_components=units, learning_rate=learning_rate, batch_size=batch_size, n_iter=epochs, random_state=seed)
    rows: list[dict[str, float]] = []
    x64 = x.astype(np.float64)  # scikit-learn's RBM works in float64; convert once, not per batch
    for epoch in range(1, epochs + 1):
        # scikit-learn's `fit` visits batches in a fixed order; a seeded reshuffle per epoch is
        # ordinary SGD practice and keeps the run reproducible.
        order = single.epoch_order(len(x64), seed, epoch)
        for start in range(0, len(order), batch_size):
            rbm.partial_fit(x64[order[start : start + batch_size]])
        # `score_samples` flips one random input per example, drawn from the integer `random_state`,
        # so every epoch is scored with the same flips: the curve moves with the weights only.
        rows.append({"epoch": epoch, "pseudo_likelihood": float(np.mean(rbm.score_samples(x64)))})
    return rbm, rows


def pretrain_rbms(
    x: np.ndarray,
    hidden_units: Sequence[int],
    learning_rate: float = 0.1,
    epochs: int = 10,
    batch_size: int = 10,
    seed: int = 42,
) -> PretrainResult:
    """Stack RBMs greedily and turn them into sigmoid Dense layers hidden1 … hiddenK.

    Args:
        x: (n, features) inputs in [0, 1] (read as probabilities of binary visible units).
        learning_rate, epochs, batch_size: as `BernoulliRBM`'s `learning_rate`, `n_iter`, `batch_size`.
        seed: RBM k's `random_state` and batch order derive from (seed, "hidden{k}").

    Returns:
        The network `pixels -> hidden1 … hiddenK` (sigmoid, no head); rows `layer` (k), `epoch`,
        `pseudo_likelihood` (mean `score_samples` over the layer's training inputs); metrics
        `pseudo_likelihood_hidden{k}` after the last epoch.
    """
    features = check_pixels(x)
    units = check_hidden_units(hidden_units)
    specs = [networks.LayerSpec(networks.hidden_name(i + 1), u, "sigmoid") for i, u in enumerate(units)]
    # The initializer is irrelevant: every weight is overwritten by the RBMs'.
    model = networks.build(features.shape[1], specs, "glorot_uniform", seed)
    rows: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    for index, spec in enumerate(specs, start=1):
        rbm, layer_rows = train_rbm(features, spec.units, learning_rate, epochs, batch_size, networks.layer_seed(seed, spec.name))
        rows.extend({"layer": index, **row} for row in layer_rows)
        metrics[f"pseudo_likelihood_{spec.name}"] = rows[-1]["pseudo_likelihood"]
        model.get_layer(spec.name).set_weights(
            [rbm.components_.T.astype(np.float32), rbm.intercept_hidden_.astype(np.float32)]
        )
        features = rbm.transform(features).astype(np.float32)
    return PretrainResult(model, rows, metrics)
