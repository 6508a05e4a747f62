"""The `image_folder` dataset kind: one sub-folder per class, image files in it, decoded with Pillow.

The layout of `keras.utils.image_dataset_from_directory`, read without TensorFlow. Labels follow the
sorted folder names, or the order of a given list of folder names. Files whose names start with a dot
are skipped (`.DS_Store`); anything else that is not an 8-bit image is refused with one line naming
the file. What is accepted and what is refused:
- modes L (grey), RGB, P (palette, turned RGB) and 1 (black and white, turned grey); a folder holding
  grey and colour images is read as RGB, grey images repeated into three channels (said on stderr);
- 16-bit and 32-bit images (a 16-bit TIFF or PNG) are refused, not converted: which 8 bits to keep
  (a fixed shift, the image's own range) is the owner's choice, not ours;
- images with an alpha channel (RGBA, LA) are refused: the background to composite on is the owner's choice;
- an image larger than Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, ~89 million
  pixels) is refused from its header, before any pixel is decoded;
- images of mixed sizes are resized (bilinear) to `image_size`, said in one line on stderr; without
  `image_size` they are refused;
- a class folder with fewer than 2 images is refused (nothing could be both trained on and tested).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from transferlab.data.images import Images, resize
from transferlab.errors import DataError

MIN_PER_CLASS = 2
_CONVERT = {"L": None, "RGB": None, "P": "RGB", "1": "L"}


def class_folders(folder: Path, names: tuple[str, ...] | None) -> list[Path]:
    """The class folders in label order: `names` in their order, else every sub-folder, sorted by name."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (image_folder needs one sub-folder per class)")
    present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    for name in present:
        if not (folder / name).is_dir():
            raise DataError(f"{folder / name}: not a class folder (image_folder holds one sub-folder per class, no loose files)")
    if names is None:
        if len(present) < 2:
            raise DataError(f"{folder}: {len(present)} class folder(s), a classification task needs at least 2")
        return [folder / name for name in present]
    missing = [name for name in names if name not in present]
    if missing:
        raise DataError(f"{folder}: no class folder {missing[0]!r} (has: {', '.join(present)})")
    return [folder / name for name in names]


def decode(path: Path, root: Path) -> np.ndarray:
    """One image file as uint8 (H, W) or (H, W, 3); one line naming the file for anything else."""
    from PIL import Image, UnidentifiedImageError

    if root.resolve() not in path.resolve().parents:
        raise DataError(f"{path}: a link to {path.resolve()}, outside {root}: refused")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # above the limit: refused, not warned
            with Image.open(path) as image:
                if image.mode not in _CONVERT:
                    raise DataError(f"{path}: {_mode_reason(image.mode)}")
                image.load()  # decodes here: a truncated file fails now, naming itself
                convert = _CONVERT[image.mode]
                pixels = np.asarray(image.convert(convert) if convert else image, dtype=np.uint8)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{path}: refused before decoding, a possible decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as error:  # Pillow's ways of saying corrupt or truncated
        raise DataError(f"{path}: corrupt or truncated image ({error})") from None
    return pixels


def _mode_reason(mode: str) -> str:
    if mode.startswith("I") or mode == "F":
        return f"a {mode} image (16 or 32 bits per pixel): refused, not converted; save it as 8-bit grey or RGB"
    if "A" in mode:
        return f"a {mode} image with an alpha channel: refused; flatten it onto a background and save it as RGB"
    return f"image mode {mode} is not supported (8-bit grey, RGB or palette images only)"


def read_folder(folder: Path, names: tuple[str, ...] | None, size: tuple[int, int] | None) -> Images:
    """Every image of every class folder, labelled by its folder's place in the class order."""
    classes = class_folders(folder, names)
    pixels: list[np.ndarray] = []
    files: list[Path] = []
    y: list[int] = []
    for label, class_folder in enumerate(classes):
        found = sorted(p for p in class_folder.iterdir() if not p.name.startswith("."))
        if len(found) < MIN_PER_CLASS:
            raise DataError(f"{class_folder}: class {class_folder.name!r} has {len(found)} image(s), at least"
                            f" {MIN_PER_CLASS} are needed (one to train on, one to test)")
        for path in found:
            if path.is_dir():
                raise DataError(f"{path}: a folder inside a class folder; image_folder reads one level of class folders")
            pixels.append(decode(path, folder))
            files.append(path)
            y.append(label)
    return Images(_stack(pixels, files, folder, size), np.array(y, dtype=np.int64), tuple(p.name for p in classes))


def _stack(pixels: list[np.ndarray], files: list[Path], folder: Path, size: tuple[int, int] | None) -> np.ndarray:
    """(n, H, W, C) float32 in [0, 1]; grey repeated to RGB where colour images are present; mixed sizes resized."""
    colour = any(p.ndim == 3 for p in pixels)
    if colour and not all(p.ndim == 3 for p in pixels):
        print(f"{folder}: {sum(p.ndim == 2 for p in pixels)} grey images among colour ones: read as RGB (grey repeated)",
              file=sys.stderr)
    images = [(np.repeat(p[..., None], 3, axis=2) if colour and p.ndim == 2 else p.reshape(*p.shape[:2], -1))
              for p in pixels]
    sizes = [image.shape[:2] for image in images]
    if len(set(sizes)) == 1:
        return np.stack(images).astype(np.float32) / np.float32(255.0)
    if size is None:
        other = next(i for i, s in enumerate(sizes) if s != sizes[0])
        raise DataError(f"{files[other]}: {sizes[other][0]}x{sizes[other][1]} but {files[0]} is {sizes[0][0]}x{sizes[0][1]};"
                        " images of mixed sizes need image_size to be resized to")
    odd = [i for i, s in enumerate(sizes) if s != tuple(size)]
    print(f"{folder}: {len(odd)} of {len(images)} images are not {size[0]}x{size[1]} (first: {files[odd[0]]},"
          f" {sizes[odd[0]][0]}x{sizes[odd[0]][1]}): resized (bilinear) to image_size {size[0]}x{size[1]}", file=sys.stderr)
    scaled = [image[None].astype(np.float32) / np.float32(255.0) for image in images]
    return np.concatenate([resize(image, size) for image in scaled])
