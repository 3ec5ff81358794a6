"""The bar store: plain Parquet partitions per series, written atomically under a per-series lock.

Layout (DESIGN §5, :mod:`candleflow.store.partitions`):
``{root}/bars/source={source}/symbol={SYMBOL}/timeframe={tf}/year=YYYY/year=YYYY.parquet``, or
``.../year=YYYY/month=MM.parquet`` for ≤5-minute bars, so query engines read ``bars/**/*.parquet``
as one table with source, symbol, timeframe and year columns; plus ``_meta.json`` and the lock
file ``.lock`` in each series directory. A root ``s3://bucket/prefix`` gives an
:class:`~candleflow.store.object_store.ObjectBarStore` instead (same API, same layout, a
manifest-based commit protocol: :mod:`candleflow.store.manifest`); what follows is about local
roots. Every file is written to a temp file in the same directory
(``.<name>.<pid>.<random>.tmp``, which neither a ``*.parquet`` glob nor pyarrow's dataset discovery
picks up), fsynced and renamed over the old one, so a reader sees either the previous or the new
version of a partition, never a torn one. A write rewrites only the partitions its bars fall
into; each is atomic on its own, and a writer killed between two partitions leaves each one old
or new, with the metadata updated last.
Symbols and sources are checked against a strict pattern before they become path parts, input
bars are checked (tz-aware index, sane OHLC) before anything is written, and a file that cannot
be read raises ``StoreCorrupted`` naming it instead of being skipped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import filelock
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from candleflow.errors import (
    InvalidRequest,
    StoreBusy,
    StoreCorrupted,
)
from candleflow.models import BAR_COLUMNS, INDEX_NAME, SYMBOL_RE, parse_timestamp
from candleflow.store.atomic import (
    atomic_write,
    fsync_dirs,
    json_default,
    make_dirs,
    write_refusals,
)
from candleflow.store.frames import (
    bars_table,
    check_ohlc,
    empty_bars,
    normalize_bars,
    write_parquet,
)
from candleflow.store.journal import (
    Journal,
    journal_files,
    orphans,
    pending_bars,
    remove_journals,
)
from candleflow.store.objects import ObjectPath, is_object_root
from candleflow.store.partitions import (
    PartitionKey,
    clean_temp_files,
    find_partitions,
    partition_bounds,
    partition_groups,
    partition_relpath,
    series_relpath,
)
from candleflow.timeframes import TIMEFRAMES, Timeframe, parse_timeframe

logger = logging.getLogger(__name__)

#: Threads writing the partitions of one write (a few: the work is encoding and fsync).
_WRITERS = 4

#: Legal source names: lowercase letters, digits, ``_`` and ``-``, 1–32 characters.
SOURCE_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,31}")

META_FILE = "_meta.json"
LOCK_FILE = ".lock"

#: Where a store, a series or a file is: a local path, or a location in a bucket.
StorePath: TypeAlias = Path | ObjectPath

_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What :meth:`BarStore.write` did.

    ``rows_before``/``rows_after`` count the whole series; ``rows_added`` counts timestamps that
    were not stored before (overwritten bars are not added); ``partitions`` lists the partition
    files (re)written, as strings, in time order.
    """

    rows_before: int
    rows_after: int
    rows_added: int
    partitions: tuple[str, ...]


def validate_symbol_name(symbol: str) -> str:
    """Return ``symbol`` unchanged if it is safe as a path part, else raise ``InvalidRequest``.

    Allowed: letters, digits, ``.``, ``-``, ``_``, ``^``, ``=``; 1–32 characters; no leading ``.``.
    """
    if not isinstance(symbol, str) or SYMBOL_RE.fullmatch(symbol) is None:
        raise InvalidRequest(
            f"invalid symbol {symbol!r}: use 1-32 letters, digits or . - _ ^ = "
            "(not starting with '.'), e.g. 'AAPL', 'BRK.B', '^GSPC', 'EURUSD=X'"
        )
    return symbol


def validate_source_name(source: str) -> str:
    """Return ``source`` unchanged if it is a legal source name, else raise ``InvalidRequest``.

    Allowed: lowercase letters, digits, ``_`` and ``-``; 1–32 characters; first a letter or digit.
    """
    if not isinstance(source, str) or SOURCE_RE.fullmatch(source) is None:
        raise InvalidRequest(
            f"invalid source name {source!r}: use 1-32 lowercase letters, digits, '_' or '-', "
            "e.g. 'ib', 'synthetic', 'csv'"
        )
    return source


def _local_root(root: str | os.PathLike[str]) -> Path:
    text = os.fspath(root)
    if not isinstance(text, str):
        raise InvalidRequest(f"store root {root!r} must be a str path, not bytes")
    if _URI_RE.match(text):
        parsed = urlparse(text)
        if parsed.scheme.lower() != "file":
            raise InvalidRequest(
                f"store root {text!r}: use a local path (or file:// URI) or s3://bucket/prefix",
                "store",
                text,
            )
        if parsed.netloc not in ("", "localhost"):
            raise InvalidRequest(
                f"store root {text!r}: file:// URIs must name a local path (file:///dir/store)"
            )
        text = url2pathname(unquote(parsed.path))
    if not text or "\x00" in text:
        raise InvalidRequest(f"store root {root!r} is not a usable path")
    return Path(os.path.abspath(os.path.expanduser(text)))


def _hive_dirs(bars: Path) -> Iterator[tuple[str, str, str, Path]]:
    """``(source, symbol, timeframe, dir)`` of every well-named series directory under ``bars``."""
    for source_dir in bars.glob("source=*"):
        source = source_dir.name.partition("=")[2]
        if SOURCE_RE.fullmatch(source) is None or not source_dir.is_dir():
            continue
        for symbol_dir in source_dir.glob("symbol=*"):
            symbol = symbol_dir.name.partition("=")[2].replace("%3D", "=")
            if SYMBOL_RE.fullmatch(symbol) is None or not symbol_dir.is_dir():
                continue
            for tf_dir in symbol_dir.glob("timeframe=*"):
                name = tf_dir.name.partition("=")[2]
                if name in TIMEFRAMES and tf_dir.is_dir():
                    yield source, symbol, name, tf_dir


def _empty_bars() -> pd.DataFrame:
    # Same index unit as a non-empty read, so concatenating results never mixes resolutions.
    frame = empty_bars()
    frame.index = pd.DatetimeIndex(frame.index).as_unit("ns")
    return frame


def bars_in_window(
    frames: list[pd.DataFrame], lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> pd.DataFrame:
    """The partitions' bars (in time order) starting in ``[lo, hi)``, as one frame."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty_bars()
    out = frames[0] if len(frames) == 1 else pd.concat(frames)
    if lo is not None or hi is not None:
        mask = np.ones(len(out), dtype=bool)
        if lo is not None:
            mask &= out.index >= lo
        if hi is not None:
            mask &= out.index < hi
        out = out[mask]
    return out if len(out) else _empty_bars()


def bars_from_table(table: pa.Table, path: StorePath, key: PartitionKey) -> pd.DataFrame:
    """A partition's table as a bar frame, checked: StoreCorrupted naming ``path`` if it is not
    one (columns, types, nulls, duplicates, bars outside the partition's range)."""
    names = set(table.column_names)
    missing = [c for c in (INDEX_NAME, *BAR_COLUMNS) if c not in names]
    if missing:
        raise StoreCorrupted(str(path), f"missing column(s) {', '.join(missing)}")
    ts_type = table.schema.field(INDEX_NAME).type
    if not pa.types.is_timestamp(ts_type) or ts_type.tz not in ("UTC", "+00:00", "Etc/UTC"):
        raise StoreCorrupted(
            str(path), f"column {INDEX_NAME} is {ts_type}, expected timestamp[ns, tz=UTC]"
        )
    for col in BAR_COLUMNS:
        col_type = table.schema.field(col).type
        if not (pa.types.is_floating(col_type) or pa.types.is_integer(col_type)):
            raise StoreCorrupted(str(path), f"column {col} is {col_type}, expected double")
    if table.column(INDEX_NAME).null_count:
        raise StoreCorrupted(str(path), f"null values in column {INDEX_NAME}")
    try:
        ts = table.column(INDEX_NAME).cast(pa.timestamp("ns", tz="UTC"))
    except pa.ArrowException as exc:
        raise StoreCorrupted(str(path), f"timestamps out of range: {exc}") from exc
    index = pd.DatetimeIndex(ts.to_pandas(), name=INDEX_NAME).tz_convert("UTC").as_unit("ns")
    frame = pd.DataFrame(
        {c: table.column(c).to_numpy().astype("float64", copy=False) for c in BAR_COLUMNS},
        index=index,
    )
    if not index.is_monotonic_increasing:
        frame = frame.sort_index()
    if frame.index.has_duplicates:
        raise StoreCorrupted(str(path), "duplicate timestamps")
    lo, hi = partition_bounds(key)
    if len(frame) and (frame.index[0] < lo or frame.index[-1] >= hi):
        raise StoreCorrupted(
            str(path),
            f"holds bars from {frame.index[0]} to {frame.index[-1]}, outside its partition "
            f"[{lo.date()}, {hi.date()})",
        )
    return frame


class BarStore:
    """Bars of many series under one root; see the module docstring for layout and guarantees.

    ``root`` is a local directory, a ``file://`` URI, or ``s3://bucket/prefix`` (then the
    instance is an :class:`~candleflow.store.object_store.ObjectBarStore`; see there for what
    differs: no lock is needed to write, ``gc_grace`` seconds before replaced files go).
    ``lock_timeout`` is how long a write waits for another writer of the same series, in seconds
    (negative: forever); past it :class:`StoreBusy` is raised. Readers never take the lock: every
    partition they open is complete, though a read racing a multi-partition write may see some
    partitions before and some after it. The lock is reentrant within a thread, across
    ``BarStore`` instances, so ``with store.lock(...): store.write(...)`` is safe.
    """

    def __new__(cls, root: str | os.PathLike[str] | ObjectPath | None = None, **_: Any) -> BarStore:
        # root is optional only for pickle, which makes the instance with no arguments.
        if cls is BarStore and root is not None and is_object_root(root):
            from candleflow.store.object_store import ObjectBarStore

            return super().__new__(ObjectBarStore)
        return super().__new__(cls)

    def __init__(
        self,
        root: str | os.PathLike[str] | ObjectPath,
        *,
        lock_timeout: float = 120.0,
        gc_grace: float = 600.0,
    ) -> None:
        if isinstance(root, ObjectPath):
            raise InvalidRequest(f"store root {root}: object roots need ObjectBarStore")
        self._path: Path = _local_root(root)
        self.root: StorePath = self._path
        self.gc_grace = float(gc_grace)
        try:
            self.lock_timeout = float(lock_timeout)
        except (TypeError, ValueError):
            raise InvalidRequest(
                f"lock_timeout={lock_timeout!r} must be seconds (a number)"
            ) from None
        if self.lock_timeout != self.lock_timeout:
            raise InvalidRequest("lock_timeout must be a number of seconds, not NaN")

    def __repr__(self) -> str:
        return f"BarStore({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------

    def series_dir(self, source: str, symbol: str, timeframe: str | Timeframe) -> StorePath:
        """``{root}/bars/source={source}/symbol={symbol}/timeframe={tf}``; names validated first.

        A ``Path`` for local roots, an :class:`~candleflow.store.objects.ObjectPath` for object
        roots (both join with ``/`` and print as the location).
        """
        return self._series_path(source, symbol, timeframe)

    def meta_path(self, source: str, symbol: str, timeframe: str | Timeframe) -> StorePath:
        """Where the series' metadata is kept (named in errors about it)."""
        return self._series_path(source, symbol, timeframe) / META_FILE

    def _series_path(self, source: str, symbol: str, timeframe: str | Timeframe) -> Path:
        validate_source_name(source)
        validate_symbol_name(symbol)
        tf = parse_timeframe(timeframe)
        return self._path / "bars" / series_relpath(source, symbol, tf.name)

    def _resolve(
        self, source: str, symbol: str, timeframe: str | Timeframe
    ) -> tuple[Path, Timeframe]:
        tf = parse_timeframe(timeframe)
        return self._series_path(source, symbol, tf), tf

    def _resolve_current(
        self, source: str, symbol: str, timeframe: str | Timeframe
    ) -> tuple[Path, Timeframe]:
        """:meth:`_resolve`, refusing a series still in the first layout (unmigrated): reading
        it as empty would make a load fetch its whole history again."""
        series_dir, tf = self._resolve(source, symbol, timeframe)
        old = self._path / "bars" / source / symbol / tf.name
        if old.is_dir():
            raise InvalidRequest(
                f"store {self._path} holds {source}/{symbol}/{tf.name} in the first layout "
                f"({old}); move the store to the key=value layout once with "
                f"`candleflow store migrate --store {self._path}`",
                "store",
                str(self._path),
            )
        return series_dir, tf

    def partitions(
        self, source: str, symbol: str, timeframe: str | Timeframe
    ) -> Sequence[StorePath]:
        """The series' partition files in time order (temp files and other names excluded)."""
        series_dir, tf = self._resolve(source, symbol, timeframe)
        return list(find_partitions(series_dir, tf).values())

    def partition_rows(
        self, source: str, symbol: str, timeframe: str | Timeframe
    ) -> list[tuple[str, int]]:
        """Each partition's path relative to the root (``/``-separated) and its row count."""
        series_dir, tf = self._resolve(source, symbol, timeframe)
        return [
            (path.relative_to(self._path).as_posix(), self._row_count(path))
            for path in find_partitions(series_dir, tf).values()
        ]

    def series(self) -> list[tuple[str, str, str]]:
        """``(source, symbol, timeframe)`` of every series with a partition, metadata or a journal
        of fetched bars, sorted."""
        out: list[tuple[str, str, str]] = []
        bars = self._path / "bars"
        if not bars.is_dir():
            return out
        for source, symbol, name, tf_dir in _hive_dirs(bars):
            tf = TIMEFRAMES[name]
            # A journal alone: the series' first load died before saving; its bars are there.
            stored = (tf_dir / META_FILE).is_file() or find_partitions(tf_dir, tf)
            if stored or journal_files(tf_dir):
                out.append((source, symbol, tf.name))
        return sorted(out)

    # -- locking -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, source: str, symbol: str, timeframe: str | Timeframe) -> Iterator[None]:
        """Hold the series' file lock (``.lock`` in the series directory) for the ``with`` body.

        Raises :class:`StoreBusy` after ``lock_timeout`` seconds. Reentrant within a thread.
        """
        series_dir, tf = self._resolve(source, symbol, timeframe)
        path = series_dir / LOCK_FILE
        with self._writing(series_dir):
            make_dirs(series_dir)
        # is_singleton shares one lock object per path in this process, which is what makes the
        # lock reentrant across BarStore instances; flock still excludes other threads/processes.
        flock = filelock.FileLock(path, is_singleton=True)
        try:
            with self._writing(path):
                flock.acquire(timeout=self.lock_timeout)
        except filelock.Timeout:
            raise StoreBusy(str(path), f"{source}/{symbol}/{tf.name}", self.lock_timeout) from None
        try:
            yield
        finally:
            flock.release()

    def _writing(self, path: StorePath) -> contextlib.AbstractContextManager[None]:
        """Within, the system refusing a write raises :class:`StoreWriteFailed` naming this store
        and what to do (:func:`~candleflow.store.atomic.write_refusals`)."""
        return write_refusals(self.root, path)

    # -- reading -----------------------------------------------------------------------------

    def _read_partition(self, path: Path, key: PartitionKey) -> pd.DataFrame:
        try:
            with pq.ParquetFile(path) as pf:
                table = pf.read()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StoreCorrupted(str(path), f"not readable as Parquet: {exc}") from exc
        return bars_from_table(table, path, key)

    def _row_count(self, path: Path) -> int:
        try:
            with pq.ParquetFile(path) as pf:
                return int(pf.metadata.num_rows)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StoreCorrupted(str(path), f"not readable as Parquet: {exc}") from exc

    def read(
        self,
        source: str,
        symbol: str,
        timeframe: str | Timeframe,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Stored bars starting in ``[start, end)`` (either bound optional), sorted by time.

        Opens only the partitions overlapping the range; returns ``empty_bars()`` when nothing is
        stored there. ``start``/``end`` must be tz-aware. A partition that cannot be read raises
        ``StoreCorrupted`` naming it.
        """
        series_dir, tf = self._resolve_current(source, symbol, timeframe)
        lo = None if start is None else parse_timestamp(start, what="start", naive_tz=None)
        hi = None if end is None else parse_timestamp(end, what="end", naive_tz=None)
        if lo is not None and hi is not None and lo > hi:
            raise InvalidRequest(f"start {lo} is after end {hi}; swap them")
        frames: list[pd.DataFrame] = []
        for key, path in find_partitions(series_dir, tf).items():
            p_lo, p_hi = partition_bounds(key)
            if (hi is not None and p_lo >= hi) or (lo is not None and p_hi <= lo):
                continue
            frames.append(self._read_partition(path, key))
        pending = pending_bars(series_dir)
        if pending is None:
            return bars_in_window(frames, lo, hi)
        # Fetched by a load that has not folded its journal yet (or died before it could):
        # those bars are newer than the partitions' at the same times.
        stored = bars_in_window(frames, lo, hi)
        pending = bars_in_window([pending], lo, hi)
        merged = pd.concat([stored, pending]) if len(stored) else pending
        return merged[~merged.index.duplicated(keep="last")].sort_index()

    # -- the fetch journal -------------------------------------------------------------------

    def journal(self, source: str, symbol: str, timeframe: str | Timeframe) -> Journal | None:
        """A new journal for one load's fetched segments (:mod:`candleflow.store.journal`), or
        None for a store that has none (an object store: each batch is written at once)."""
        series_dir, _ = self._resolve_current(source, symbol, timeframe)
        return Journal(series_dir, refusals=self._writing)

    def recover(self, source: str, symbol: str, timeframe: str | Timeframe) -> int:
        """Fold the series' orphan journals (loads that died) into its partitions, oldest first,
        and remove them; returns the bars folded. Live loads' journals are left alone."""
        series_dir, tf = self._resolve_current(source, symbol, timeframe)
        if not journal_files(series_dir):
            return 0
        with self.lock(source, symbol, tf), orphans(series_dir) as found:
            if not found:
                return 0
            frames = [read.bars for _, read in found if len(read.bars)]
            if frames:
                bars = pd.concat(frames)
                self.write(source, symbol, tf, bars[~bars.index.duplicated(keep="last")])
            with self._writing(series_dir):
                remove_journals([path for path, _ in found])
            rows = sum(len(f) for f in frames)
            logger.info(
                "%s/%s/%s: folded %d bars from %d journal(s) of loads that did not finish",
                source, symbol, tf.name, rows, len(found),
            )  # fmt: skip
            return rows

    # -- metadata ----------------------------------------------------------------------------

    @staticmethod
    def _load_meta(path: Path) -> dict[str, object]:
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):  # no series (the root may be a file)
            return {}
        except UnicodeDecodeError as exc:
            raise StoreCorrupted(str(path), f"not UTF-8 text: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreCorrupted(str(path), f"invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise StoreCorrupted(str(path), f"expected a JSON object, found {type(data).__name__}")
        return data

    @staticmethod
    def _store_meta(path: Path, meta: Mapping[str, object]) -> None:
        try:
            text = json.dumps(
                dict(meta), default=json_default, indent=2, sort_keys=True, allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(
                f"metadata for {path.parent} is not JSON serialisable ({exc}); "
                "pass numbers, strings, lists, dicts or timestamps"
            ) from exc
        atomic_write(path, lambda fh: fh.write((text + "\n").encode("utf-8")))

    def read_meta(self, source: str, symbol: str, timeframe: str | Timeframe) -> dict[str, object]:
        """The series' ``_meta.json`` as a dict, ``{}`` if absent; unreadable: StoreCorrupted."""
        series_dir, _ = self._resolve_current(source, symbol, timeframe)
        return self._load_meta(series_dir / META_FILE)

    def update_meta(
        self, source: str, symbol: str, timeframe: str | Timeframe, **fields: object
    ) -> dict[str, object]:
        """Merge ``fields`` into ``_meta.json`` atomically under the series lock; return the result.

        Timestamps become ISO strings, timedeltas seconds, objects with ``to_dict()`` their dicts.
        """
        series_dir, tf = self._resolve_current(source, symbol, timeframe)
        with self.lock(source, symbol, tf):
            path = series_dir / META_FILE
            meta = self._load_meta(path)
            meta.update(fields)
            with self._writing(path):
                self._store_meta(path, meta)
            # Round-trip so callers see what is stored (ISO strings, not Timestamp objects).
            return self._load_meta(path)

    # -- writing -----------------------------------------------------------------------------

    def _prepare(self, bars: pd.DataFrame, series: str) -> pd.DataFrame:
        if not isinstance(bars, pd.DataFrame):
            raise InvalidRequest(f"{series}: bars must be a DataFrame, got {type(bars).__name__}")
        if isinstance(bars.index, pd.DatetimeIndex) and bars.index.tz is None:
            raise InvalidRequest(
                f"{series}: bars have a tz-naive index; localise it first, e.g. "
                "bars.tz_localize('UTC') (or the exchange's zone, then tz_convert('UTC'))"
            )
        frame = normalize_bars(bars, origin=series)
        if frame.index.hasnans:
            raise InvalidRequest(f"{series}: the bar index contains NaT; drop those rows")
        if frame.index.has_duplicates:
            # Newest wins inside one batch too, matching what happens across writes.
            dups = int(frame.index.duplicated(keep="last").sum())
            logger.debug("%s: %d duplicate timestamps in input, keeping the last", series, dups)
            frame = frame[~frame.index.duplicated(keep="last")]
        if not frame.index.is_monotonic_increasing:
            frame = frame.sort_index()
        return frame

    def write(
        self,
        source: str,
        symbol: str,
        timeframe: str | Timeframe,
        bars: pd.DataFrame,
        *,
        meta: Mapping[str, object] | None = None,
    ) -> WriteResult:
        """Merge ``bars`` into the series: stored bars at the same timestamps are replaced.

        ``bars`` needs a tz-aware DatetimeIndex (naive → ``InvalidRequest``; other zones are
        converted to UTC) and the columns open, high, low, close, volume (others are dropped).
        Every row is checked first (no NaN/inf prices, high ≥ max(open, close), low ≤ min(open,
        close), volume not negative; NaN volume is allowed); any failure raises
        :class:`InvalidBars` and nothing is written. Then, under the series lock, each partition
        the bars fall into is read, merged and replaced atomically — other partitions are not
        touched — and ``_meta.json`` gets ``meta`` merged in plus ``rows``, ``first``, ``last``
        and ``updated_at``. Empty ``bars`` is a no-op.
        """
        series_dir, tf = self._resolve_current(source, symbol, timeframe)
        series = f"{source}/{symbol}/{tf.name}"
        if isinstance(bars, pd.DataFrame) and len(bars) == 0:
            total = sum(self._row_count(p) for p in find_partitions(series_dir, tf).values())
            return WriteResult(total, total, 0, ())
        frame = self._prepare(bars, series)
        check_ohlc(frame, series)
        if meta is not None:
            # Fail on unserialisable metadata now rather than after the partitions are replaced.
            try:
                json.dumps(dict(meta), default=json_default, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(f"{series}: meta is not JSON serialisable ({exc})") from exc

        slices = partition_groups(pd.DatetimeIndex(frame.index), tf)

        with self.lock(source, symbol, tf):
            for stale in clean_temp_files(series_dir):
                logger.info("removed stale temp file %s", stale)
            existing = find_partitions(series_dir, tf)
            rows_before = 0
            rows_added = 0
            merged: dict[PartitionKey, pd.DataFrame | pa.Table] = {}
            whole: pa.Table | None = None  # the new bars as one table, sliced per partition
            for key, path in existing.items():
                if key not in slices:
                    rows_before += self._row_count(path)
            for key, rows in slices.items():
                found = existing.get(key)
                kept = None
                if found is not None:
                    old = self._read_partition(found, key)
                    new = frame.iloc[rows]
                    replaced = old.index.isin(new.index)
                    rows_before += len(old)
                    rows_added += len(new) - int(replaced.sum())
                    kept = old[~replaced]
                else:
                    rows_added += rows.stop - rows.start
                if kept is not None and len(kept):
                    merged[key] = pd.concat([kept, new]).sort_index()
                else:  # only new bars: a slice of one conversion, not one per partition
                    whole = whole if whole is not None else bars_table(frame)
                    merged[key] = whole.slice(rows.start, rows.stop - rows.start)
            # Read everything before writing anything: a corrupt partition stops the write whole.
            written = self._write_partitions(series_dir, merged)
            rows_after = rows_before + rows_added

            partition_map = find_partitions(series_dir, tf)
            first_key, last_key = next(iter(partition_map)), next(reversed(partition_map))
            first = self._edge(partition_map, merged, first_key, first=True)
            last = self._edge(partition_map, merged, last_key, first=False)
            meta_path = series_dir / META_FILE
            stored = self._load_meta(meta_path)
            stored.update(meta or {})
            stored.update(
                rows=rows_after,
                first=first.isoformat(),
                last=last.isoformat(),
                updated_at=pd.Timestamp.now(tz="UTC").isoformat(),
            )
            with self._writing(meta_path):
                self._store_meta(meta_path, stored)

        logger.info(
            "%s: stored %d bars (%d new, %d rows now) in %d partition(s)",
            series,
            len(frame),
            rows_added,
            rows_after,
            len(written),
        )
        return WriteResult(rows_before, rows_after, rows_added, tuple(written))

    def _write_partitions(
        self, series_dir: Path, merged: Mapping[PartitionKey, pd.DataFrame | pa.Table]
    ) -> list[str]:
        """Replace each partition of ``merged`` atomically; return their paths.

        Partitions are written by a few threads (encoding and fsync release the GIL, and a
        1-minute import touches hundreds of monthly files), and each directory is synced once
        after its last rename. Every write is waited for before returning or raising, so none
        outlives the series lock; the first refusal is raised.
        """
        paths = {key: series_dir / partition_relpath(key) for key in merged}
        for directory in sorted({p.parent for p in paths.values()}):
            with self._writing(directory):
                make_dirs(directory)

        def replace(key: PartitionKey) -> None:
            path = paths[key]
            with self._writing(path):
                part = merged[key]
                table = part if isinstance(part, pa.Table) else bars_table(part)
                atomic_write(path, functools.partial(write_parquet, table), sync_dir=False)

        if len(paths) == 1:
            replace(next(iter(paths)))
        else:
            with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="store") as pool:
                futures = [pool.submit(replace, key) for key in paths]
                wait(futures)
            for future in futures:
                future.result()
        with self._writing(series_dir):
            fsync_dirs(paths.values())
        return [str(p) for p in paths.values()]

    def _edge(
        self,
        partition_map: Mapping[PartitionKey, Path],
        merged: Mapping[PartitionKey, pd.DataFrame | pa.Table],
        key: PartitionKey,
        *,
        first: bool,
    ) -> pd.Timestamp:
        part = merged.get(key)
        if isinstance(part, pa.Table) and len(part):
            edge = part.column(INDEX_NAME).slice(0 if first else len(part) - 1, 1)
            return pd.Timestamp(pd.DatetimeIndex(edge.to_pandas())[0]).tz_convert("UTC")
        frame = part if isinstance(part, pd.DataFrame) else None
        if frame is None:
            frame = self._read_partition(partition_map[key], key)
        if not len(frame):
            raise StoreCorrupted(str(partition_map[key]), "partition holds no bars")
        ts = frame.index[0] if first else frame.index[-1]
        return pd.Timestamp(ts)
