"""The one definition of the year/month Parquet partition layout shared by bars and features.

A series directory holds ``year=YYYY.parquet`` files, or ``year=YYYY/month=MM.parquet`` files for
timeframes whose :attr:`~candleflow.timeframes.Timeframe.partition` is ``"month"`` (≤5-minute
bars). A partition is named by a :data:`PartitionKey` ``(year, month)``, month 0 for yearly
partitions, and holds the rows whose timestamps fall in ``[start, end)`` of its
:func:`partition_bounds`. Discovery ignores every other name, including the hidden temp files
(``.<name>.<pid>.<random>.tmp``) that :func:`candleflow.store.atomic.atomic_write` leaves behind
when a writer dies; :func:`clean_temp_files` removes those.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from candleflow.timeframes import Timeframe

__all__ = [
    "PartitionKey",
    "clean_temp_files",
    "find_partitions",
    "partition_bounds",
    "partition_groups",
    "partition_relpath",
]

#: ``(year, month)``; month is 0 for yearly partitions.
PartitionKey = tuple[int, int]

_YEAR_FILE_RE = re.compile(r"year=(\d{4})\.parquet")
_YEAR_DIR_RE = re.compile(r"year=(\d{4})")
_MONTH_FILE_RE = re.compile(r"month=(\d{2})\.parquet")
_TEMP_RE = re.compile(r"\..*\.tmp")


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


def partition_relpath(key: PartitionKey) -> Path:
    """The partition's file path relative to its series directory."""
    year, month = key
    if month == 0:
        return Path(f"year={year:04d}.parquet")
    return Path(f"year={year:04d}") / f"month={month:02d}.parquet"


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
    for entry in series_dir.iterdir():
        if tf.partition != "month":
            m = _YEAR_FILE_RE.fullmatch(entry.name)
            if m and entry.is_file():
                found[(int(m.group(1)), 0)] = entry
            continue
        y = _YEAR_DIR_RE.fullmatch(entry.name)
        if y is None or not entry.is_dir():
            continue
        for sub in entry.iterdir():
            mm = _MONTH_FILE_RE.fullmatch(sub.name)
            if mm and 1 <= int(mm.group(1)) <= 12 and sub.is_file():
                found[(int(y.group(1)), int(mm.group(1)))] = sub
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
