"""Make the Fashion-MNIST sample the default run uses: 500 training images per class, seeded, uint8.

    apt-get install dataset-fashion-mnist        # Debian's package: the four IDX .gz files (MIT, (c) 2017 Zalando SE)
    PYTHONPATH=src python data/raw/fashion/make_sample.py   # writes data/raw/fashion/fashion_sample.npz

Reads the training part of `/usr/share/datasets/fashion-mnist/` (or the folder given as the first
argument) and writes `x` (5000, 28, 28) uint8 and `y` (5000,) uint8, sorted by class then by the
image's index in the training part, as a compressed, byte-deterministic `.npz` (dataset kind `npz`,
default keys `x`, `y`). The same package gives the same file: the draw depends on SEED only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from transferlab.artifacts import atomic_path, deterministic_zip
from transferlab.data.datafiles import read_idx
from transferlab.data.loaders import IDX_FILES

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
OUTPUT = Path("data/raw/fashion/fashion_sample.npz")
PER_CLASS = 500
SEED = 2017


def sample(x: np.ndarray, y: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` rows of each class, drawn without replacement with `seed`, in class then row order."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.sort(rng.choice(np.flatnonzero(y == label), per_class, replace=False))
                           for label in np.unique(y)])
    return x[rows], y[rows]


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv else DEBIAN_FOLDER
    x = read_idx(folder / IDX_FILES["x_train"])
    y = read_idx(folder / IDX_FILES["y_train"])
    x_sample, y_sample = sample(x, y, PER_CLASS, SEED)
    with atomic_path(OUTPUT) as tmp:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, x=x_sample, y=y_sample)
        deterministic_zip(tmp)
    print(f"{OUTPUT}: {len(y_sample)} images {x_sample.shape[1:]} of classes {np.unique(y_sample).tolist()},"
          f" {OUTPUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
