"""Images as arrays: (n, H, W, C) float32 pixels in [0, 1] with int64 labels. NumPy only (no TensorFlow).

Every loader hands its pixels to `scaled`, which checks and scales them and gives them this shape;
the prepare stages then resize (`resize`, bilinear, channel by channel) and adapt the channels
(`adapt_channels`: grey -> RGB by repeating the grey channel, RGB -> grey by ITU-R BT.601 luminance).
Models flatten inside themselves; code that needs vectors calls `flat`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.errors import DataError

# ITU-R BT.601 luma weights (what Pillow's `convert("L")` uses): grey = 0.299 R + 0.587 G + 0.114 B
LUMA_601 = (0.299, 0.587, 0.114)
CHANNEL_COUNTS = (1, 3)


@dataclass(frozen=True)
class Images:
    """Images (n, H, W, C) scaled to [0, 1], their integer labels, and (for an image folder) the class names."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.x.shape[1:])  # type: ignore[return-value]


def _real_numbers(array: np.ndarray) -> bool:
    """Integers or real floats: not strings, objects, booleans or complex numbers."""
    return np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)


def as_nhwc(x: np.ndarray, name: str, flat_side: bool = False) -> np.ndarray:
    """`x` seen as (n, H, W, C): (n, H, W) gains C = 1; `flat_side`: (n, side * side) is square grey images."""
    if flat_side and x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise DataError(f"{name}: {x.shape[1]} pixels per image are not a square image")
        return x.reshape(len(x), side, side, 1)
    if x.ndim == 3:
        return x[..., np.newaxis]
    if x.ndim == 4 and x.shape[3] in CHANNEL_COUNTS:
        return x
    raise DataError(f"{name}: images have shape {x.shape}, expected (n, H, W) or (n, H, W, C) with C 1 or 3")


def scaled(x: np.ndarray, max_value: float, name: str, flat_side: bool = False) -> np.ndarray:
    """Pixels in [0, max_value] checked and scaled to float32 in [0, 1], shaped (n, H, W, C)."""
    x = np.asarray(x)
    if not _real_numbers(x):
        raise DataError(f"{name}: pixels have dtype {x.dtype}, expected numbers")
    if x.size == 0:
        raise DataError(f"{name}: no images (empty array {x.shape})")
    x = as_nhwc(x, name, flat_side).astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"{name}: pixel values are not all finite (NaN or infinity)")
    if x.min() < 0 or x.max() > max_value:
        raise DataError(f"{name}: pixel values outside [0, {max_value:g}]")
    return (x / max_value).astype(np.float32)


def labels(y: np.ndarray, name: str) -> np.ndarray:
    """Integer class labels: whole numbers >= 0, never silently truncated from floats."""
    y = np.asarray(y)
    if not _real_numbers(y):
        raise DataError(f"{name}: labels have dtype {y.dtype}, expected integers")
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{name}: labels are not whole numbers (dtype {y.dtype})")
    if y.size and y.min() < 0:
        raise DataError(f"{name}: negative label {int(y.min())}")
    return y.astype(np.int64)


def flat(x: np.ndarray) -> np.ndarray:
    """(n, H, W, C) -> (n, H * W * C): the vectors a Dense stack or scikit-learn reads (a view, no copy)."""
    return x.reshape(len(x), -1)


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (n, H, W, C) images to (n, *size, C), channel by channel, values kept in [0, 1]."""
    from scipy.ndimage import zoom

    old = x.shape[1:3]
    if tuple(old) == tuple(size):
        return x
    factors = (1, size[0] / old[0], size[1] / old[1])
    channels = [zoom(x[..., c], factors, order=1, grid_mode=True, mode="nearest") for c in range(x.shape[3])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def adapt_channels(x: np.ndarray, channels: int | None) -> tuple[np.ndarray, str | None]:
    """(images with `channels` channels, a sentence saying what was done, or None where nothing was)."""
    have = x.shape[3]
    if channels is None or channels == have:
        return x, None
    if have == 1 and channels == 3:
        return np.repeat(x, 3, axis=3), "grey images repeated into 3 identical RGB channels"
    if have == 3 and channels == 1:
        grey = np.tensordot(x.astype(np.float64), np.array(LUMA_601), axes=([3], [0]))[..., np.newaxis]
        return np.clip(grey, 0.0, 1.0).astype(np.float32), "RGB images turned grey by ITU-R BT.601 luminance (0.299 R + 0.587 G + 0.114 B)"
    raise DataError(f"cannot adapt {have}-channel images to {channels} channels")
