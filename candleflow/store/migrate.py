"""Moving a store from the first layout (``bars/{source}/{SYMBOL}/{timeframe}/year=YYYY.parquet``)
to the ``key=value`` one (:mod:`candleflow.store.partitions`), in place.

:func:`migrate_store` copies every partition file of every old-layout series (bars and features)
to its new path with the store's atomic write, checks that the copy holds the rows the original
holds, and only then deletes the original; the metadata follows, then the emptied directories
go. Each step is idempotent, so a migration that was interrupted (killed, disk full) is resumed
by running it again: a copy already in place is checked instead of redone, and where the new
series was written to meanwhile, the old bars fill only the timestamps it lacks. Run it while no
older candleflow writes to the store (this one writes only the new layout). Object-store roots
were never in the old layout: there is nothing to migrate there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from candleflow.errors import StoreCorrupted
from candleflow.models import INDEX_NAME, SYMBOL_RE
from candleflow.store.atomic import atomic_write, fsync_dir, make_dirs, write_refusals
from candleflow.store.bar_store import (
    LOCK_FILE,
    META_FILE,
    SOURCE_RE,
    BarStore,
    bars_from_table,
)
from candleflow.store.frames import bars_table, write_parquet
from candleflow.store.partitions import (
    PartitionKey,
    find_partitions,
    partition_relpath,
    series_relpath,
)
from candleflow.timeframes import TIMEFRAMES, Timeframe

__all__ = ["MigrationReport", "legacy_series", "migrate_store"]

logger = logging.getLogger(__name__)

_KINDS = ("bars", "features")
_OLD_YEAR_FILE_RE = re.compile(r"year=(\d{4})\.parquet")
_OLD_YEAR_DIR_RE = re.compile(r"year=(\d{4})")
_OLD_MONTH_FILE_RE = re.compile(r"month=(\d{2})\.parquet")


@dataclass(frozen=True, slots=True)
class MigratedSeries:
    """One series moved: ``kind`` (bars or features), its names, files and rows verified."""

    kind: str
    source: str
    symbol: str
    timeframe: str
    files: int
    rows: int

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "source": self.source,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "files": self.files,
            "rows": self.rows,
        }


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`migrate_store` moved (nothing: the store was in the new layout already)."""

    root: str
    series: tuple[MigratedSeries, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.series if s.kind == "bars")

    def to_dict(self) -> dict[str, object]:
        return {
            "root": self.root,
            "rows": self.rows,
            "series": [s.to_dict() for s in self.series],
        }


def legacy_series(root: Path, kind: str = "bars") -> Iterator[tuple[str, str, Timeframe, Path]]:
    """``(source, symbol, timeframe, dir)`` of each old-layout series directory under ``root``."""
    base = root / kind
    if not base.is_dir():
        return
    for source_dir in sorted(base.iterdir()):
        # New-layout directories are "source=…", which no source name can be.
        if SOURCE_RE.fullmatch(source_dir.name) is None or not source_dir.is_dir():
            continue
        for symbol_dir in sorted(source_dir.iterdir()):
            if SYMBOL_RE.fullmatch(symbol_dir.name) is None or not symbol_dir.is_dir():
                continue
            for tf_dir in sorted(symbol_dir.iterdir()):
                tf = TIMEFRAMES.get(tf_dir.name)
                if tf is not None and tf_dir.is_dir():
                    yield source_dir.name, symbol_dir.name, tf, tf_dir


def _old_partitions(series_dir: Path, tf: Timeframe) -> dict[PartitionKey, Path]:
    found: dict[PartitionKey, Path] = {}
    for entry in series_dir.iterdir():
        if tf.partition != "month":
            m = _OLD_YEAR_FILE_RE.fullmatch(entry.name)
            if m and entry.is_file():
                found[(int(m.group(1)), 0)] = entry
            continue
        y = _OLD_YEAR_DIR_RE.fullmatch(entry.name)
        if y is None or not entry.is_dir():
            continue
        for sub in entry.iterdir():
            mm = _OLD_MONTH_FILE_RE.fullmatch(sub.name)
            if mm and 1 <= int(mm.group(1)) <= 12 and sub.is_file():
                found[(int(y.group(1)), int(mm.group(1)))] = sub
    return dict(sorted(found.items()))


def _rows(path: Path) -> int:
    try:
        with pq.ParquetFile(path) as pf:
            return int(pf.metadata.num_rows)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StoreCorrupted(str(path), f"not readable as Parquet: {exc}") from exc


def _read_bars(path: Path, key: PartitionKey) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StoreCorrupted(str(path), f"not readable as Parquet: {exc}") from exc
    return bars_from_table(table, path, key)


def _copy_bytes(source: Path, target: Path) -> None:
    with open(source, "rb") as fh:
        data = fh.read()
    atomic_write(target, lambda out: out.write(data))


def _move_partition(kind: str, key: PartitionKey, old: Path, new: Path) -> int:
    """Put ``old``'s rows at ``new`` and check them there; return the rows ``new`` holds."""
    expected = _rows(old)
    make_dirs(new.parent)
    if not new.exists():
        _copy_bytes(old, new)
        got = _rows(new)
    elif kind == "bars":
        # Resumed, or the series was written in the new layout meanwhile: the newer bars win,
        # the old ones fill the timestamps the new file lacks.
        current, previous = _read_bars(new, key), _read_bars(old, key)
        missing = previous[~previous.index.isin(current.index)]
        if len(missing):
            merged = pd.concat([current, missing]).sort_index()
            atomic_write(new, functools.partial(write_parquet, bars_table(merged)))
        expected = len(current) + len(missing)
        got = _rows(new)
    else:
        # Features are derived: whatever is there was computed from the bars by this version.
        return _rows(new)
    if got != expected:
        raise StoreCorrupted(
            str(new), f"holds {got} rows after the move, {expected} expected; run migrate again"
        )
    return got


def _merge_meta(old: Path, new: Path, new_dir: Path, tf: Timeframe) -> None:
    """The old metadata under the new (which wins), with rows/first/last of the merged series."""
    try:
        previous = json.loads(old.read_text(encoding="utf-8")) if old.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreCorrupted(str(old), f"invalid JSON: {exc}") from exc
    current: dict[str, object] = {}
    if new.is_file():
        with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError):
            current = json.loads(new.read_text(encoding="utf-8"))
    merged = {**previous, **current} if isinstance(previous, dict) else current
    partitions = find_partitions(new_dir, tf)
    if partitions:
        first = pq.read_table(next(iter(partitions.values())), columns=[INDEX_NAME])
        last = pq.read_table(next(reversed(partitions.values())), columns=[INDEX_NAME])
        merged.update(
            rows=sum(_rows(p) for p in partitions.values()),
            first=pd.Timestamp(first.column(0).to_pandas().min()).isoformat(),
            last=pd.Timestamp(last.column(0).to_pandas().max()).isoformat(),
        )
    text = json.dumps(merged, indent=2, sort_keys=True) + "\n"
    make_dirs(new.parent)
    atomic_write(new, lambda fh: fh.write(text.encode("utf-8")))


def _remove_empty_dirs(top: Path, stop: Path) -> None:
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    path = top
    while path != stop and path.is_dir():
        try:
            path.rmdir()
        except OSError:
            return
        fsync_dir(path.parent)
        path = path.parent


def migrate_store(root: str | os.PathLike[str]) -> MigrationReport:
    """Move the store at ``root`` to the ``key=value`` layout in place; see the module docstring.

    Returns what was moved. A partition whose copy does not hold its rows raises
    ``StoreCorrupted`` and leaves the original in place; a refused write raises
    ``StoreWriteFailed``. Running it again resumes; on a migrated store it does nothing.
    """
    store = BarStore(root)
    if not isinstance(store.root, Path):
        return MigrationReport(str(store.root))
    base = store.root
    moved: list[MigratedSeries] = []
    for kind in _KINDS:
        for source, symbol, tf, old_dir in list(legacy_series(base, kind)):
            new_dir = base / kind / series_relpath(source, symbol, tf.name)
            with store.lock(source, symbol, tf), _old_lock(old_dir), write_refusals(base, new_dir):
                files = rows = 0
                partitions = _old_partitions(old_dir, tf)
                for key, old in partitions.items():
                    rows += _move_partition(kind, key, old, new_dir / partition_relpath(key))
                    files += 1
                if kind == "bars":
                    _merge_meta(old_dir / META_FILE, new_dir / META_FILE, new_dir, tf)
                # Everything is in place and checked: now the originals go.
                for old in partitions.values():
                    old.unlink()
                with contextlib.suppress(FileNotFoundError):
                    (old_dir / META_FILE).unlink()
            with contextlib.suppress(FileNotFoundError):
                (old_dir / LOCK_FILE).unlink()
            leftovers = [p for p in old_dir.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
            for temp in leftovers:
                temp.unlink()
            _remove_empty_dirs(old_dir, base / kind)
            if old_dir.exists():
                logger.warning("%s: files the store does not own were left in place", old_dir)
            moved.append(MigratedSeries(kind, source, symbol, tf.name, files, rows))
            logger.info("migrated %s %s/%s/%s: %d file(s), %d rows", kind, source, symbol,
                        tf.name, files, rows)  # fmt: skip
    return MigrationReport(str(base), tuple(moved))


@contextlib.contextmanager
def _old_lock(old_dir: Path) -> Iterator[None]:
    """The old layout's series lock, so a writer of the previous version is not racing us."""
    path = old_dir / LOCK_FILE
    lock = filelock.FileLock(path, is_singleton=True)
    lock.acquire(timeout=120)
    try:
        yield
    finally:
        lock.release()
