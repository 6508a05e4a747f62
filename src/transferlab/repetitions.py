"""Repetitions of one experiment: which labelled images and seeds repetition i uses, and how results pool.

Repetition i of *every* variant draws the same labelled images (seeded by the target's seed and
i) and the same batch order and new-layer initialisation (the transfer seed + i), so variants
can be compared pair by pair with `scratch`. NumPy only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from transferlab import data
from transferlab.strategies import TargetData


def train_seed(base_seed: int, repetition: int) -> int:
    return base_seed + repetition


def labels_seed(target_seed: int, repetition: int, resample: bool) -> int:
    return target_seed + repetition if resample else target_seed


def labelled_data(arrays: Mapping[str, np.ndarray], labels_per_class: int, seed: int) -> TargetData:
    """The labelled training subset drawn from the pool with `seed`, and the fixed test set."""
    chosen = data.draw_labelled(arrays["y_pool"], labels_per_class, seed)
    return TargetData(arrays["x_pool"][chosen], arrays["y_pool"][chosen], arrays["x_test"], arrays["y_test"])


def mean_rows(histories: Sequence[Sequence[Mapping[str, float]]]) -> list[dict[str, float]]:
    """Average per-epoch rows over repetitions (all have the same epochs)."""
    rows = []
    for epoch_rows in zip(*histories, strict=True):
        keys = [key for key in epoch_rows[0] if key != "epoch"]
        rows.append({"epoch": epoch_rows[0]["epoch"], **{key: float(np.mean([row[key] for row in epoch_rows])) for key in keys}})
    return rows
