"""Reading and writing data files safely: regular files only, `.npz` without pickles, IDX files
header first, size caps read before anything is inflated, atomic deterministic writes. NumPy only.

Files given by the user are untrusted: each problem raises a `DataError` naming the file.
"""
from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.artifacts import atomic_path, deterministic_zip
from transferlab.errors import DataError
from transferlab.paths import file_kind


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


def read_idx(path: Path, cap: Cap | None = None) -> np.ndarray:
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


def load_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = (), cap: Cap | None = None,
             prefixes: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read the named arrays (and those of `optional` the file has, then every other one whose name starts with one
    of `prefixes`, in the file's order) from an `.npz` without unpickling anything.

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
            named = (*keys, *(key for key in optional if key in archive.files))
            matched = (key for key in archive.files if key.startswith(prefixes) and key not in named) if prefixes else ()
            return {key: archive[key] for key in (*named, *matched)}
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
