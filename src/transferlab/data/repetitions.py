"""Repetitions of one experiment: which labelled images and seeds repetition i uses, and how curves pool.

Repetition i of *every* variant draws the same labelled images, split the same way into training
and validation (seeded by the target's seed and i), and uses the same batch order and new-layer
initialisation (the transfer seed + i), so variants can be compared pair by pair with `scratch`.
NumPy only.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def derived_seed(seed: int, name: str) -> int:
    """A seed for one named part of a seeded computation: a layer's initializer, a corruption, a holdout."""
    return zlib.crc32(f"{seed}:{name}".encode()) % (2**31)


@dataclass(frozen=True)
class Repetition:
    index: int
    seed: int  # new-layer initialisation and batch order
    labels_seed: int  # which labelled images are drawn, and which of them validate


def plan(seeds: int, train_seed: int, target_seed: int, resample_labels: bool) -> list[Repetition]:
    """The repetitions every variant runs: same list for all, hence paired."""
    return [
        Repetition(i, train_seed + i, target_seed + i if resample_labels else target_seed)
        for i in range(seeds)
    ]


def mean_rows(histories: Sequence[Sequence[Mapping[str, float]]]) -> list[dict[str, float]]:
    """Average per-epoch rows over repetitions; runs stop at different epochs, so `n` says how many reached each."""
    by_epoch: dict[int, list[Mapping[str, float]]] = {}
    for rows in histories:
        for row in rows:
            by_epoch.setdefault(int(row["epoch"]), []).append(row)
    out = []
    for epoch in sorted(by_epoch):
        rows = by_epoch[epoch]
        keys = [key for key in rows[0] if key != "epoch"]
        out.append({"epoch": epoch, **{key: float(np.mean([row[key] for row in rows])) for key in keys}, "n": len(rows)})
    return out
