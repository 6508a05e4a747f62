"""Corruptions of flattened square images in [0, 1]: pure NumPy, seeded, never modifying their input.

Two users: auxiliary-task pretraining (`pretraining.auxiliary`: real vs corrupted images) and the
shifted test set (`tasks.shifted_test`: a target's test images under a distribution shift). Kept
apart from the pretraining code so a prepare stage can corrupt images without starting TensorFlow.

`amount` is in (0, 1] for each:
- `noise`: that fraction of each image's pixels (exactly, rounded) is replaced by uniform noise;
- `erase`: a random square patch covering about that fraction of the area is set to 0;
- `shuffle_patches`: the image is cut into a 4 x 4 grid of patches and that fraction of the
  patches (at least 2) is moved, each to another chosen patch's place (a cycle, so all move);
- `blend`: (1 - amount) * image + amount * another image of the same set (never itself); amount < 1.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from transferlab.errors import ConfigError
from transferlab.repetitions import derived_seed

PATCH_GRID = 4


def _side(x: np.ndarray) -> int:
    side = int(round(np.sqrt(x.shape[1])))
    if side * side != x.shape[1]:
        raise ValueError(f"corruptions need flattened square images, got {x.shape[1]} features")
    return side


def noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    n, d = x.shape
    count = int(round(amount * d))
    chosen = np.argsort(rng.random((n, d)), axis=1)[:, :count]  # `count` distinct pixels per image
    out = x.copy()
    out[np.arange(n)[:, None], chosen] = rng.random((n, count), dtype=np.float32)
    return out


def erase(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    n, side = len(x), _side(x)
    patch = max(1, int(round(np.sqrt(amount) * side)))
    top, left = (rng.integers(0, side - patch + 1, n) for _ in range(2))
    rows = (top[:, None] + np.arange(patch))[:, :, None]
    cols = (left[:, None] + np.arange(patch))[:, None, :]
    images = x.reshape(n, side, side).copy()
    images[np.arange(n)[:, None, None], rows, cols] = 0.0
    return images.reshape(n, -1)


def shuffle_patches(x: np.ndarray, amount: float, rng: np.random.Generator, grid: int = PATCH_GRID) -> np.ndarray:
    n, side = len(x), _side(x)
    if side % grid:
        raise ValueError(f"shuffle_patches: image side {side} is not divisible into a {grid} x {grid} grid")
    cell, count = side // grid, grid * grid
    moved = min(count, max(2, int(round(amount * count))))
    patches = x.reshape(n, grid, cell, grid, cell).transpose(0, 1, 3, 2, 4).reshape(n, count, cell, cell)
    chosen = np.argsort(rng.random((n, count)), axis=1)[:, :moved]
    out = patches.copy()
    image = np.arange(n)[:, None]
    out[image, chosen] = patches[image, np.roll(chosen, 1, axis=1)]  # a cycle: every chosen patch moves
    return out.reshape(n, grid, grid, cell, cell).transpose(0, 1, 3, 2, 4).reshape(n, -1)


def blend(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    if len(x) < 2:
        raise ValueError("blend needs at least 2 images")
    order = rng.permutation(len(x))
    partner = np.empty(len(x), dtype=np.int64)
    partner[order] = np.roll(order, -1)  # a random cycle: no image is blended with itself
    return ((1.0 - amount) * x + amount * x[partner]).astype(x.dtype)


CORRUPTIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "noise": noise,
    "erase": erase,
    "shuffle_patches": shuffle_patches,
    "blend": blend,
}


def check_corruption(kind: str, amount: float, key: str = "corruptions") -> None:
    """Raise a ConfigError naming `key` unless `kind` is known and 0 < amount <= 1."""
    if kind not in CORRUPTIONS:
        raise ConfigError(key, f"unknown corruption {kind!r} (choose from: {', '.join(CORRUPTIONS)})")
    if not 0.0 < amount <= 1.0:
        raise ConfigError(key, f"{kind} amount {amount} must be in (0, 1]")
    if kind == "blend" and amount == 1.0:  # the "corrupted" image would be another real one
        raise ConfigError(key, "blend amount 1 replaces the image by another real image; use < 1")


def corrupt(x: np.ndarray, kind: str, amount: float, seed: int, key: str = "corruptions") -> np.ndarray:
    """A corrupted copy of the flattened square images `x` (see the module docstring for `amount`)."""
    check_corruption(kind, amount, key)
    return CORRUPTIONS[kind](np.asarray(x, dtype=np.float32), amount, np.random.default_rng(seed)).astype(np.float32)


def corrupt_mixed(x: np.ndarray, corruptions: Sequence[tuple[str, float]], seed: int, key: str = "corruptions") -> np.ndarray:
    """One corrupted copy of each image, each image's corruption drawn at random from the list."""
    if not corruptions:
        raise ConfigError(key, "at least one (kind, amount) corruption is needed")
    for index, (kind, amount) in enumerate(corruptions):
        check_corruption(kind, amount, f"{key}[{index}]")  # fail before any work is done
    choice = np.random.default_rng([seed, 0]).integers(len(corruptions), size=len(x))
    bad = np.empty_like(x)
    for index, (kind, amount) in enumerate(corruptions):
        mask = choice == index
        if mask.any():
            # Corrupting all of `x` (then keeping the masked rows) draws `blend` partners from every image.
            bad[mask] = corrupt(x, kind, amount, seed=derived_seed(seed, f"corruption{index}"))[mask]
    return bad
