"""Unsupervised and auxiliary-task pretraining: each method returns a network whose hidden layers
are named `hidden1 … hiddenK` (lowest first), so `networks.hidden_layers` and
`race.build_variant_network` reuse them exactly like the source model's.

- `autoencoder.pretrain_autoencoders`: greedy layer-wise (denoising) autoencoders.
- `rbm.pretrain_rbms`: greedy layer-wise restricted Boltzmann machines (scikit-learn's PCD).
- `auxiliary.pretrain_goodbad` / `auxiliary.pretrain_ranking`: a classifier or a max-margin scorer
  trained to tell real images from corrupted copies.

`METHODS` is the table a `pretrain` entry's `method` is looked up in (each entry imports its own
module when called). This package module imports NumPy only, so importing one method does not pull
in another's cost.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from transferlab.errors import DataError

if TYPE_CHECKING:
    import keras

    from transferlab.config import PretrainSpec


@dataclass(frozen=True)
class PretrainResult:
    """A pretrained network, its per-epoch history rows (for a CSV) and its final metrics."""

    model: keras.Model
    rows: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def check_pixels(x: np.ndarray, name: str = "pretraining data") -> np.ndarray:
    """`x` as a float32 (n, features) array with values in [0, 1], or a DataError naming it."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{name}: expected a 2-D numeric array (n, features), got {x.dtype} {x.shape}")
    if len(x) < 2:
        raise DataError(f"{name}: needs at least 2 examples, got {len(x)}")
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise DataError(f"{name}: values outside [0, 1]")
    return x.astype(np.float32, copy=False)


def check_hidden_units(hidden_units: Sequence[int]) -> list[int]:
    units = [int(u) for u in hidden_units]
    if not units or min(units) < 1:
        raise ValueError(f"hidden_units must be a non-empty list of positive sizes, got {list(hidden_units)}")
    return units


def _autoencoder(x: np.ndarray, spec: PretrainSpec, key: str) -> PretrainResult:
    from transferlab.training.pretraining.autoencoder import pretrain_autoencoders

    return pretrain_autoencoders(x, spec.hidden_units, spec.activation, spec.initializer, spec.train, spec.noise, spec.seed)


def _rbm(x: np.ndarray, spec: PretrainSpec, key: str) -> PretrainResult:
    from transferlab.training.pretraining.rbm import pretrain_rbms

    return pretrain_rbms(x, spec.hidden_units, spec.learning_rate, spec.epochs, spec.batch_size, spec.seed)


def _goodbad(x: np.ndarray, spec: PretrainSpec, key: str) -> PretrainResult:
    from transferlab.training.pretraining.auxiliary import pretrain_goodbad

    corruptions = [(c.kind, c.amount) for c in spec.corruptions]
    return pretrain_goodbad(x, spec.hidden_units, spec.activation, spec.initializer, spec.train, corruptions, spec.seed, key=key)


def _ranking(x: np.ndarray, spec: PretrainSpec, key: str) -> PretrainResult:
    from transferlab.training.pretraining.auxiliary import pretrain_ranking

    corruptions = [(c.kind, c.amount) for c in spec.corruptions]
    return pretrain_ranking(x, spec.hidden_units, spec.activation, spec.initializer, spec.train, corruptions, spec.margin,
                            spec.seed, key=key)


# method (a `pretrain` entry's `method`, config.PRETRAIN_METHODS) -> pretrain(pool, entry, its params key)
METHODS: dict[str, Callable[[np.ndarray, PretrainSpec, str], PretrainResult]] = {
    "autoencoder": _autoencoder,
    "rbm": _rbm,
    "auxiliary_goodbad": _goodbad,
    "auxiliary_ranking": _ranking,
}
