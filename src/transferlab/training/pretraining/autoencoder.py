"""Greedy layer-wise autoencoder pretraining (Hinton & Salakhutdinov 2006; Bengio et al. 2007),
optionally denoising (Vincent et al. 2008; Erhan et al. 2010).

Layer k is trained alone, as a one-hidden-layer autoencoder on the outputs of the already trained
layers 1 … k-1 (computed once, as `cache` does): those layers are never part of layer k's training
model, so they cannot change. The decoders are thrown away; the result is the encoder stack.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from transferlab import data
from transferlab.config import TrainSpec
from transferlab.models import networks
from transferlab.training import single
from transferlab.training.pretraining import (
    PretrainResult,
    check_hidden_units,
    check_pixels,
)


def reconstruction_error(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-example mean squared error over features."""
    return tf.reduce_mean(tf.square(tf.cast(y_true, y_pred.dtype) - y_pred), axis=-1)


def mask_inputs(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Masking noise: each value is set to 0 with probability `fraction` (seeded; `x` is not modified)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return x
    keep = np.random.default_rng(seed).random(x.shape) >= fraction
    return (x * keep).astype(x.dtype, copy=False)


def _decoder_activation(layer_index: int) -> str:
    # Pixels lie in [0, 1], so a sigmoid decoder matches their range; the codes of upper layers
    # (ReLU, tanh, ELU, …) have no common range, so their decoders are linear.
    return "sigmoid" if layer_index == 1 else "linear"


def pretrain_autoencoders(
    x: np.ndarray,
    hidden_units: Sequence[int],
    activation: str,
    initializer: str,
    train: TrainSpec,
    noise: float = 0.0,
    seed: int = 42,
) -> PretrainResult:
    """Train hidden1 … hiddenK greedily, each to reconstruct its own input (MSE) through a throw-away decoder.

    Args:
        x: (n, features) inputs in [0, 1].
        noise: denoising autoencoders when > 0: that fraction of each layer's input values is
            zeroed (masking noise, drawn once per layer from `seed`), the target stays clean.
        seed: seeds the layers' initializers (by layer name, as `networks.build`) and the noise;
            `train.seed` orders the batches.

    Returns:
        The encoder `pixels -> hidden1 … hiddenK` (no head); rows `layer` (k), `epoch`, `loss`;
        metrics `reconstruction_loss_hidden{k}`: layer k's objective on its training data after its
        last epoch.
    """
    x = check_pixels(x)
    units = check_hidden_units(hidden_units)
    specs = networks.dnn_layers(units, activation, n_classes=1)[:-1]  # hidden layers only
    encoder = networks.build(x.shape[1], specs, initializer, seed)
    rows: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    features = x  # the input of the layer being trained: pixels, then each trained layer's code
    for index, spec in enumerate(specs, start=1):
        decoder = networks.LayerSpec(f"decoder{index}", features.shape[1], _decoder_activation(index))
        layer_model = networks.build(features.shape[1], [spec, decoder], initializer, seed)
        corrupted = mask_inputs(features, noise, networks.layer_seed(seed, f"noise{index}"))

        kept, held = data.holdout_rows(len(features), train.validation_fraction, networks.layer_seed(seed, f"holdout{index}"))
        validation = (corrupted[held], features[held]) if train.patience is not None else None
        fit_rows = kept if train.patience is not None else np.arange(len(features))
        history = single.fit(
            layer_model, corrupted[fit_rows], features[fit_rows], train, loss=reconstruction_error, accuracy=False,
            validation=validation,
        )
        rows.extend({"layer": index, **row} for row in history.rows)
        final = single.evaluate(layer_model, corrupted, features, reconstruction_error, accuracy=False)
        metrics[f"reconstruction_loss_{spec.name}"] = final["loss"]
        networks.copy_weights(layer_model, encoder, [spec.name])
        # The clean input's code is what the next layer learns from (noise is per layer, not carried up).
        features = keras.ops.convert_to_numpy(layer_model.get_layer(spec.name)(features))
    return PretrainResult(encoder, rows, metrics)
