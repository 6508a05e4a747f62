"""Repetitions of one experiment: which labelled images and seeds repetition i uses, and how results pool.

Repetition i of *every* variant draws the same labelled images (seeded by the target's seed and
i) and the same batch order and new-layer initialisation (the transfer seed + i), so variants
can be compared pair by pair with `scratch`. Importing this module does not start TensorFlow;
`Repetition.run` does.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transferlab import data
from transferlab.config import NetworkSpec, TrainSpec, VariantSpec
from transferlab.data import TargetData

if TYPE_CHECKING:
    import keras

    from transferlab.strategies import Outcome


def labelled_data(arrays: Mapping[str, np.ndarray], labels_per_class: int, seed: int) -> TargetData:
    """The labelled training subset drawn from the pool with `seed`, and the fixed test set."""
    chosen = data.draw_labelled(arrays["y_pool"], labels_per_class, seed)
    return TargetData(arrays["x_pool"][chosen], arrays["y_pool"][chosen], arrays["x_test"], arrays["y_test"])


@dataclass(frozen=True)
class Repetition:
    index: int
    seed: int  # new-layer initialisation and batch order
    labels_seed: int  # which labelled images are drawn

    def run(
        self,
        variant: VariantSpec,
        init_model: keras.Model,
        network: NetworkSpec,
        train: TrainSpec,
        arrays: Mapping[str, np.ndarray],
        labels_per_class: int,
    ) -> tuple[dict[str, Any], Outcome]:
        """Train the variant once; returns its metrics row and the full outcome."""
        from transferlab import strategies, training

        training.make_deterministic(self.seed)
        outcome = strategies.run_variant(
            variant, init_model, network, train.model_copy(update={"seed": self.seed}),
            labelled_data(arrays, labels_per_class, self.labels_seed),
        )
        row = {
            "repetition": self.index,
            "seed": self.seed,
            "labels_seed": self.labels_seed,
            "target_accuracy": outcome.test_accuracy,
            "target_loss": outcome.test_loss,
            "train_seconds": outcome.train_seconds,
            "seconds_per_epoch": outcome.history.seconds_per_epoch,
        }
        return row, outcome


def plan(seeds: int, train_seed: int, target_seed: int, resample_labels: bool) -> list[Repetition]:
    """The repetitions every variant runs: same list for all, hence paired."""
    return [
        Repetition(i, train_seed + i, target_seed + i if resample_labels else target_seed)
        for i in range(seeds)
    ]


def mean_rows(histories: Sequence[Sequence[Mapping[str, float]]]) -> list[dict[str, float]]:
    """Average per-epoch rows over repetitions (all have the same epochs)."""
    rows = []
    for epoch_rows in zip(*histories, strict=True):
        keys = [key for key in epoch_rows[0] if key != "epoch"]
        rows.append({"epoch": epoch_rows[0]["epoch"], **{key: float(np.mean([row[key] for row in epoch_rows])) for key in keys}})
    return rows
