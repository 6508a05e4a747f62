"""Writing stage outputs atomically: a failed or killed stage never leaves a half-written file."""
from __future__ import annotations

import csv
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transferlab.errors import STORAGE_ERRNOS, OutputError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        raise OutputError(f"{path}: cannot be written ({error.strerror}); nothing was recorded as done") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    with Path(path).open() as handle:
        return json.load(handle)


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """A CSV with one row per dict; columns are the union of keys, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def save_with(path: Path, save: Callable[[Path], None]) -> None:
    """Save through a library's own writer (e.g. `model.save`) into a temp file, then move it in place.

    A `.keras` archive is made byte-deterministic first, so the same weights give the same hash in
    `dvc.lock` and a rerun of an upstream stage does not rerun everything below it.
    """
    with atomic_path(path) as tmp:
        save(tmp)
        if Path(path).suffix == ".keras":
            deterministic_zip(tmp)


FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
FIXED_DATE_TEXT = "1980-01-01@00:00:00"  # Keras' own date format
KERAS_METADATA = "metadata.json"
KERAS_CONFIG = "config.json"


def _renumber_shared(node: Any, ids: dict[int, int]) -> Any:
    """Keras writes `shared_object_id` as Python's id() of an object (a memory address); number the
    ids 1, 2, … in order of appearance instead: the same sharing, the same bytes on every save."""
    if isinstance(node, dict):
        return {
            key: ids.setdefault(value, len(ids) + 1) if key == "shared_object_id" and isinstance(value, int) else _renumber_shared(value, ids)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renumber_shared(item, ids) for item in node]
    return node


def deterministic_zip(path: Path) -> None:
    """Rewrite a zip archive (a `.keras` file) with fixed entry timestamps and a fixed save date.

    Keras stamps `metadata.json` with `date_saved`, every entry with the save time, and writes
    memory addresses into `config.json`; none is part of the model. Entries keep their order,
    names and compression.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for info, content in entries:
                if info.filename == KERAS_METADATA:
                    metadata = json.loads(content)
                    if "date_saved" in metadata:
                        metadata["date_saved"] = FIXED_DATE_TEXT
                    content = json.dumps(metadata).encode()
                elif info.filename == KERAS_CONFIG:
                    content = json.dumps(_renumber_shared(json.loads(content), {})).encode()
                fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE)
                fixed.compress_type, fixed.external_attr = info.compress_type, 0o644 << 16
                archive.writestr(fixed, content)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
