"""The one definition of the store's directory layout, shared by bars and features.

The layout is Hive-style ``key=value`` directories, so DuckDB, polars and pyarrow read a whole
kind (``bars`` or ``features``) as one table whose columns include source, symbol, timeframe and
year: ``{kind}/source={source}/symbol={SYMBOL}/timeframe={tf}/year=YYYY/`` holds
``year=YYYY.parquet``, or ``month=MM.parquet`` files for timeframes whose
:attr:`~candleflow.timeframes.Timeframe.partition` is ``"month"`` (≤5-minute bars). Every series
has the same four directory keys (the month is in the file name, which query engines do not read
as a key, not a fifth key: they require the same keys across one table); ``=`` in a symbol is
written ``%3D`` (both engines decode it). Object-store roots add a commit id to each file name
(``year=YYYY.<commit>.parquet``): files there are immutable and a manifest says which are current
(:mod:`candleflow.store.object_store`).

A partition is named by a :data:`PartitionKey` ``(year, month)``, month 0 for yearly partitions,
and holds the rows whose timestamps fall in ``[start, end)`` of its :func:`partition_bounds`.
Discovery ignores every other name, including the hidden temp files
(``.<name>.<pid>.<random>.tmp``) that :func:`candleflow.store.atomic.atomic_write` leaves behind
when a writer dies; :func:`clean_temp_files` removes those.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from candleflow.timeframes import Timeframe

__all__ = [
    "PartitionKey",
    "clean_temp_files",
    "find_partitions",
    "parse_partition_label",
    "partition_bounds",
    "partition_groups",
    "partition_label",
    "partition_relpath",
    "partition_stem",
    "series_relpath",
]

#: ``(year, month)``; month is 0 for yearly partitions.
PartitionKey = tuple[int, int]

_YEAR_DIR_RE = re.compile(r"year=(\d{4})")
_LABEL_RE = re.compile(r"(\d{4})(?:-(\d{2}))?")
_YEAR_FILE_RE = re.compile(r"year=(\d{4})\.parquet")
_MONTH_FILE_RE = re.compile(r"month=(\d{2})\.parquet")
_TEMP_RE = re.compile(r"\..*\.tmp")


def series_relpath(source: str, symbol: str, timeframe: str) -> PurePosixPath:
    """``source=…/symbol=…/timeframe=…``: a series' directory under ``bars/`` or ``features/``.

    Names must be validated already; ``=`` in a symbol becomes ``%3D`` so the directory still
    has exactly one ``key=value`` split (``EURUSD=X`` → ``symbol=EURUSD%3DX``).
    """
    return PurePosixPath(
        f"source={source}", f"symbol={symbol.replace('=', '%3D')}", f"timeframe={timeframe}"
    )


def partition_label(key: PartitionKey) -> str:
    """``"2024"`` for a yearly partition, ``"2024-03"`` for a monthly one."""
    year, month = key
    return f"{year:04d}" if month == 0 else f"{year:04d}-{month:02d}"


def parse_partition_label(label: str) -> PartitionKey | None:
    """The key of a :func:`partition_label`, ``None`` when ``label`` is not one."""
    m = _LABEL_RE.fullmatch(label)
    if m is None:
        return None
    month = int(m.group(2) or 0)
    if m.group(2) is not None and not 1 <= month <= 12:
        return None
    return int(m.group(1)), month


def partition_groups(index: pd.DatetimeIndex, tf: Timeframe) -> dict[PartitionKey, slice]:
    """The rows of each partition ``index`` touches, as positional slices, in time order.

    ``index`` must be sorted (both stores only write sorted rows), so each partition's rows are
    one contiguous run.
    """
    # One int per row (year*100 + month, or year*100) so grouping is a vectorised np.unique.
    years = np.asarray(index.year, dtype=np.int64)
    if tf.partition == "month":
        months = np.asarray(index.month, dtype=np.int64)
    else:
        months = np.zeros_like(years)
    codes = years * 100 + months
    uniq, starts = np.unique(codes, return_index=True)
    bounds = [*starts.tolist(), len(index)]
    return {
        (int(code) // 100, int(code) % 100): slice(bounds[i], bounds[i + 1])
        for i, code in enumerate(uniq)
    }


def partition_stem(key: PartitionKey) -> str:
    """The partition's file name without ``.parquet``: ``year=2024`` or ``month=03``."""
    year, month = key
    return f"year={year:04d}" if month == 0 else f"month={month:02d}"


def partition_relpath(key: PartitionKey) -> Path:
    """The partition's file path relative to its series directory (local roots)."""
    return Path(f"year={key[0]:04d}") / f"{partition_stem(key)}.parquet"


def partition_bounds(key: PartitionKey) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(start, end)`` in UTC of the times the partition may hold, end exclusive."""
    year, month = key
    if month == 0:
        return pd.Timestamp(year, 1, 1, tz="UTC"), pd.Timestamp(year + 1, 1, 1, tz="UTC")
    start = pd.Timestamp(year, month, 1, tz="UTC")
    end = pd.Timestamp(year + 1, 1, 1, tz="UTC") if month == 12 else start.replace(month=month + 1)
    return start, end


def find_partitions(series_dir: Path, tf: Timeframe) -> dict[PartitionKey, Path]:
    """The partition files in ``series_dir`` by key, in time order; ``{}`` if it is missing.

    Only the layout of ``tf``'s granularity counts; temp files and other names are ignored.
    """
    found: dict[PartitionKey, Path] = {}
    if not series_dir.is_dir():
        return found
    monthly = tf.partition == "month"
    for entry in series_dir.iterdir():
        y = _YEAR_DIR_RE.fullmatch(entry.name)
        if y is None or not entry.is_dir():
            continue
        year = int(y.group(1))
        for sub in entry.iterdir():
            if monthly:
                m = _MONTH_FILE_RE.fullmatch(sub.name)
                key = (year, int(m.group(1))) if m and 1 <= int(m.group(1)) <= 12 else None
            else:
                m = _YEAR_FILE_RE.fullmatch(sub.name)
                key = (year, 0) if m and int(m.group(1)) == year else None
            if key is not None and sub.is_file():
                found[key] = sub
    return dict(sorted(found.items()))


def clean_temp_files(series_dir: Path) -> list[Path]:
    """Remove leftover temp files in ``series_dir`` and its ``year=`` dirs; return those removed.

    Call it only under the series lock: then every temp file present belongs to a writer that
    died. Files that cannot be removed are left alone.
    """
    removed: list[Path] = []
    if not series_dir.is_dir():
        return removed
    for d in [series_dir, *(p for p in series_dir.glob("year=*") if p.is_dir())]:
        for entry in d.iterdir():
            if _TEMP_RE.fullmatch(entry.name) and entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed
