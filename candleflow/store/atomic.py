"""Durable, atomic file replacement: temp file in the same directory, fsync, rename, fsync dir.

A reader sees the previous or the new version of a file, never a torn one, even when the writer
is killed mid-write; leftover temp files are hidden (``.<name>.<pid>.<random>.tmp``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import filelock
import numpy as np

from candleflow.errors import CandleflowError, StoreWriteFailed


def fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; without it a power cut can resurrect the old name.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    if path.is_dir():
        return
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        with contextlib.suppress(OSError):
            fsync_dir(created.parent)


def atomic_write(
    final: Path, write: Callable[[BinaryIO], object], *, sync_dir: bool = True
) -> None:
    """Write ``final`` via a unique hidden temp file in its directory, fsync, rename, fsync dir.

    ``sync_dir=False`` leaves the directory's fsync to the caller, who writes several files
    into one directory and syncs it once after the last rename (:func:`fsync_dirs`).
    """
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(final.parent)


def fsync_dirs(paths: Iterable[Path]) -> None:
    """fsync the directory of each of ``paths`` once (their renames made durable)."""
    for directory in sorted({p.parent for p in paths}):
        fsync_dir(directory)


@contextlib.contextmanager
def write_refusals(root: object, path: object) -> Iterator[None]:
    """Within, the system refusing a write (disk full, read-only, permissions: ``OSError``)
    raises :class:`StoreWriteFailed` naming the store ``root``, the file and what to do; our own
    errors (a busy lock, bad input) pass unchanged."""
    try:
        yield
    except (CandleflowError, filelock.Timeout):
        raise
    except OSError as exc:
        raise StoreWriteFailed.from_os_error(str(root), str(path), exc) from exc


def json_default(value: object) -> object:
    if isinstance(value, datetime | date):  # pd.Timestamp is a datetime
        return value.isoformat()
    if isinstance(value, timedelta):  # pd.Timedelta too
        return value.total_seconds()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
