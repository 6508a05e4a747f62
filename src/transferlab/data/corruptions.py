"""Corruptions of images (n, H, W, C) in [0, 1]: pure NumPy, seeded, never modifying their input.

Images of any size and channel count; flattened square grey images (n, side * side) are taken as
(n, side, side, 1). The result has the input's shape.

Two users: auxiliary-task pretraining (`pretraining.auxiliary`: real vs corrupted images) and the
shifted test set (`tasks.shifted_test`: a target's test images under a distribution shift). Kept
apart from the pretraining code so a prepare stage can corrupt images without starting TensorFlow.

`amount` is in (0, 1] for each:
- `noise`: that fraction of each image's values (pixels x channels; exactly, rounded) is replaced by uniform noise;
- `erase`: a random patch, H and W each scaled by sqrt(amount), so about that fraction of the area, set to 0;
- `shuffle_patches`: the image is cut into a 4 x 4 grid of patches of (H // 4) x (W // 4) pixels and that
  fraction of the patches (at least 2) is moved, each to another chosen patch's place (a cycle, so all
  move); where 4 does not divide a side, the last H % 4 rows / W % 4 columns stay in place;
- `blend`: (1 - amount) * image + amount * another image of the same set (never itself); amount < 1.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from transferlab.config import (
    PATCH_GRID,  # the grid the schema checks image sizes against
)
from transferlab.data.repetitions import derived_seed
from transferlab.errors import ConfigError


def _nhwc(x: np.ndarray) -> np.ndarray:
    """(n, H, W, C) view of `x`: 4-D as it is, flattened square grey images as (n, side, side, 1)."""
    if x.ndim == 4:
        return x
    side = int(round(np.sqrt(x.shape[1]))) if x.ndim == 2 else 0
    if x.ndim != 2 or side * side != x.shape[1]:
        raise ValueError(f"corruptions need images (n, H, W, C) or flattened square ones, got shape {x.shape}")
    return x.reshape(len(x), side, side, 1)


def noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    shape = x.shape
    x = x.reshape(len(x), -1)
    n, d = x.shape
    count = int(round(amount * d))
    chosen = np.argsort(rng.random((n, d)), axis=1)[:, :count]  # `count` distinct pixels per image
    out = x.copy()
    out[np.arange(n)[:, None], chosen] = rng.random((n, count), dtype=np.float32)
    return out.reshape(shape)


def erase(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    images = _nhwc(x).copy()
    n, height, width = images.shape[:3]
    tall, wide = (max(1, int(round(np.sqrt(amount) * side))) for side in (height, width))
    top = rng.integers(0, height - tall + 1, n)
    left = rng.integers(0, width - wide + 1, n)
    rows = (top[:, None] + np.arange(tall))[:, :, None]
    cols = (left[:, None] + np.arange(wide))[:, None, :]
    images[np.arange(n)[:, None, None], rows, cols] = 0.0
    return images.reshape(x.shape)


def shuffle_patches(x: np.ndarray, amount: float, rng: np.random.Generator, grid: int = PATCH_GRID) -> np.ndarray:
    images = _nhwc(x)
    n, height, width, channels = images.shape
    if min(height, width) < grid:
        raise ValueError(f"shuffle_patches: images of {height}x{width} are smaller than a {grid} x {grid} grid")
    tall, wide, count = height // grid, width // grid, grid * grid
    moved = min(count, max(2, int(round(amount * count))))
    region = images[:, : grid * tall, : grid * wide]  # the margin a side's remainder leaves stays in place
    patches = region.reshape(n, grid, tall, grid, wide, channels).transpose(0, 1, 3, 2, 4, 5).reshape(n, count, tall, wide, channels)
    chosen = np.argsort(rng.random((n, count)), axis=1)[:, :moved]
    out = patches.copy()
    image = np.arange(n)[:, None]
    out[image, chosen] = patches[image, np.roll(chosen, 1, axis=1)]  # a cycle: every chosen patch moves
    shuffled = images.copy()
    shuffled[:, : grid * tall, : grid * wide] = (
        out.reshape(n, grid, grid, tall, wide, channels).transpose(0, 1, 3, 2, 4, 5).reshape(n, grid * tall, grid * wide, channels))
    return shuffled.reshape(x.shape)


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
    """A corrupted copy of the images `x` (see the module docstring for `amount`)."""
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
