"""The feature store: feature columns as Parquet beside the bars, updated incrementally.

Layout mirrors the bar store (DESIGN §5, :mod:`candleflow.store.partitions`):
``{root}/features/source={source}/symbol={SYMBOL}/timeframe={tf}/year=YYYY/year=YYYY.parquet``
(``year=YYYY/month=MM.parquet`` for ≤5-minute bars), one row per stored bar, written atomically
(:func:`candleflow.store.atomic.atomic_write`) under the bar series' lock (:meth:`BarStore.lock`),
so bars cannot change while their features are computed. A file holds ``timestamp``, the spec's
value columns (float64, warm-up rows NaN), the ``_state_*`` recursion columns of RSI and MACD
(see :mod:`candleflow.features.catalogue`) and ``_bars_hash``, a 64-bit fingerprint of the bar each
row was computed from; its schema metadata records the spec and the format version. Readers that
want values only use :meth:`FeatureStore.read`, which drops the ``_`` columns; ``pd.read_parquet``
on a file works too.

:func:`update_features` compares the stored timestamps and fingerprints with the bars, finds the
first row that differs (a revised last bar, a filled gap, or simply the first new bar) and
recomputes from there only — windowed features from their lookback, recursive ones from the
stored state of the row before — which gives exactly the values of a full recomputation. A
different spec or format version, or files with other columns, mean a full recomputation. The
partitions it touches are rewritten newest first, so a writer killed midway leaves the oldest
affected partition unchanged and the next update finds the same first difference again; the
series' ``_meta.json`` (feature_count, feature_spec, features_updated_at) is updated last.

On an object-store root the feature files follow the bar store's commit protocol
(:mod:`candleflow.store.manifest`): the partitions an update touches are uploaded as new files and
take effect together with one conditional manifest put; an update that loses the race to another
one starts over on what that one stored.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from candleflow.errors import InvalidRequest, NoData, StoreCorrupted
from candleflow.features.catalogue import FeatureSpec, compute_feature_rows, parse_feature_spec
from candleflow.models import BAR_COLUMNS, INDEX_NAME, parse_timestamp
from candleflow.progress import Span
from candleflow.store.atomic import atomic_write, make_dirs, write_refusals
from candleflow.store.bar_store import BarStore, StorePath
from candleflow.store.manifest import ObjectSeries, PartitionEntry, retry_commits
from candleflow.store.object_store import ObjectBarStore
from candleflow.store.objects import ObjectPath, PreconditionFailed
from candleflow.store.partitions import (
    PartitionKey,
    clean_temp_files,
    find_partitions,
    partition_groups,
    partition_relpath,
    series_relpath,
)
from candleflow.timeframes import Timeframe, parse_timeframe

__all__ = ["FORMAT_VERSION", "HASH_COLUMN", "FeatureStore", "UpdateResult", "update_features"]

logger = logging.getLogger(__name__)

#: Bumped when stored values would differ for the same spec; a mismatch forces a recomputation.
FORMAT_VERSION: Final = 1
HASH_COLUMN: Final = "_bars_hash"
FEATURES_DIR: Final = "features"

_META_SPEC = b"candleflow.feature_spec"
_META_VERSION = b"candleflow.features_version"

_U64 = np.uint64


def bar_fingerprints(bars: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """A 64-bit fingerprint of each bar's open, high, low, close and volume (NaNs canonical)."""
    h = np.zeros(len(bars), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in BAR_COLUMNS:
            values = bars[col].to_numpy(dtype=np.float64) + 0.0  # -0.0 → 0.0
            values = np.where(np.isnan(values), np.nan, values)
            h = _mix(h ^ values.view(np.uint64))
    return h


def _mix(z: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    # splitmix64's finaliser: every input bit affects every output bit.
    z = z + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    out: np.ndarray[Any, np.dtype[np.uint64]] = z ^ (z >> _U64(31))
    return out


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What :func:`update_features` did for one series.

    ``mode`` is ``"full"``, ``"incremental"`` or ``"unchanged"``; ``reason`` says why (e.g.
    "no stored features", "feature spec changed", "bars changed from 2025-01-02 14:30"). ``rows``
    counts the series' bars (= feature rows), ``rows_recomputed`` the rows computed this time
    (from ``first_recomputed`` on), ``feature_count`` the value columns; ``partitions`` lists
    the files (re)written or removed, oldest first.
    """

    series: str
    mode: str
    reason: str
    rows: int
    rows_recomputed: int
    feature_count: int
    first_recomputed: pd.Timestamp | None
    partitions: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "series": self.series,
            "mode": self.mode,
            "reason": self.reason,
            "rows": self.rows,
            "rows_recomputed": self.rows_recomputed,
            "feature_count": self.feature_count,
            "first_recomputed": (
                None if self.first_recomputed is None else self.first_recomputed.isoformat()
            ),
            "partitions": list(self.partitions),
        }


class FeatureStore:
    """Feature partitions beside the bars of a :class:`BarStore`; see the module docstring.

    ``store`` is the bar store (or its root, from which one is made with ``lock_timeout``); its
    series lock guards feature writes too.
    """

    def __init__(
        self, store: BarStore | str | os.PathLike[str], *, lock_timeout: float = 120.0
    ) -> None:
        self.bar_store: BarStore = (
            store if isinstance(store, BarStore) else BarStore(store, lock_timeout=lock_timeout)
        )
        self.root: StorePath = self.bar_store.root

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def series_dir(self, source: str, symbol: str, timeframe: str | Timeframe) -> StorePath:
        """``{root}/features/source={source}/symbol={symbol}/timeframe={tf}``; names validated
        as for bars."""
        self.bar_store.series_dir(source, symbol, timeframe)  # validates the names
        relpath = series_relpath(source, symbol, parse_timeframe(timeframe).name)
        if isinstance(self.root, ObjectPath):
            return self.root / FEATURES_DIR / str(relpath)
        return self.root / FEATURES_DIR / relpath

    def files(self, source: str, symbol: str, timeframe: str | Timeframe) -> _Files:
        """The series' feature files as stored now (a snapshot of the manifest on object roots)."""
        tf = parse_timeframe(timeframe)
        if isinstance(self.bar_store, ObjectBarStore):
            return _ObjectFiles(self.bar_store.object_series(source, symbol, tf, FEATURES_DIR))
        series_dir = self.series_dir(source, symbol, tf)
        assert isinstance(series_dir, Path)
        return _LocalFiles(series_dir, tf)

    def partitions(self, source: str, symbol: str, timeframe: str | Timeframe) -> list[StorePath]:
        """The series' feature partition files in time order."""
        return list(self.files(source, symbol, timeframe).find().values())

    def read(
        self,
        source: str,
        symbol: str,
        timeframe: str | Timeframe,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        *,
        internal: bool = False,
    ) -> pd.DataFrame:
        """Stored features of bars starting in ``[start, end)``, indexed by ``timestamp``.

        Value columns only unless ``internal`` (then ``_state_*`` and ``_bars_hash`` too).
        Nothing stored: an empty frame with no columns. An unreadable file: StoreCorrupted.
        """
        tf = parse_timeframe(timeframe)
        lo = None if start is None else parse_timestamp(start, what="start", naive_tz=None)
        hi = None if end is None else parse_timestamp(end, what="end", naive_tz=None)
        frames = _read_series(self, source, symbol, tf)
        if not frames:
            return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name=INDEX_NAME))
        out = pd.concat(frames) if len(frames) > 1 else frames[0]
        if lo is not None:
            out = out[out.index >= lo]
        if hi is not None:
            out = out[out.index < hi]
        if not internal:
            out = out.loc[:, [c for c in out.columns if not str(c).startswith("_")]]
        return out


def _read_series(
    store: FeatureStore, source: str, symbol: str, tf: Timeframe
) -> list[pd.DataFrame]:
    for attempt in range(3):
        files = store.files(source, symbol, tf)
        try:
            return [_read_partition(files, path) for path in files.find().values()]
        except PreconditionFailed as exc:
            if attempt == 2:
                raise StoreCorrupted(str(exc), "named by the manifest but gone") from exc
    raise AssertionError("unreachable")


class _Files(Protocol):
    """A series' feature files: local ones, or those an object-store manifest names."""

    def find(self) -> dict[PartitionKey, StorePath]: ...

    def read_table(self, path: StorePath, columns: list[str] | None) -> pa.Table: ...

    def read_schema(self, path: StorePath) -> pa.Schema: ...

    def replace(
        self, parts: list[tuple[PartitionKey, pd.DataFrame | None]], spec_json: str
    ) -> list[str]: ...


class _LocalFiles:
    """Files in a local series directory, each replaced atomically on its own (newest first)."""

    def __init__(self, series_dir: Path, tf: Timeframe) -> None:
        self.series_dir = series_dir
        self.tf = tf

    def find(self) -> dict[PartitionKey, StorePath]:
        return dict(find_partitions(self.series_dir, self.tf))

    def read_table(self, path: StorePath, columns: list[str] | None) -> pa.Table:
        try:
            with pq.ParquetFile(path) as pf:
                return pf.read(columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StoreCorrupted(str(path), f"not readable as Parquet: {exc}") from exc

    def read_schema(self, path: StorePath) -> pa.Schema:
        try:
            return pq.read_schema(path)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StoreCorrupted(str(path), f"not readable as Parquet: {exc}") from exc

    def replace(
        self, parts: list[tuple[PartitionKey, pd.DataFrame | None]], spec_json: str
    ) -> list[str]:
        written: list[str] = []
        for key, part in parts:
            path = self.series_dir / partition_relpath(key)
            if part is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                make_dirs(path.parent)
                atomic_write(path, functools.partial(pq.write_table, _to_table(part, spec_json)))
            written.append(str(path))
        return written


class _ObjectFiles:
    """The files of one manifest version; :meth:`replace` commits conditionally on it."""

    def __init__(self, series: ObjectSeries) -> None:
        self.series = series
        self.manifest = series.load()

    def find(self) -> dict[PartitionKey, StorePath]:
        return {k: self.series.path(e.file) for k, e in self.manifest.partitions.items()}

    def _file(self, path: StorePath) -> str:
        assert isinstance(path, ObjectPath)
        return path.relative_to(self.series.prefix).as_posix()

    def read_table(self, path: StorePath, columns: list[str] | None) -> pa.Table:
        try:
            (table,) = self.series.read_tables([self._file(path)], columns)
        except FileNotFoundError as exc:
            # Collected under a reader slower than the grace period: the manifest has moved on,
            # which the caller handles as a lost race (read again, or start the update over).
            raise PreconditionFailed(str(path)) from exc
        return table

    def read_schema(self, path: StorePath) -> pa.Schema:
        return self.series.read_schema(self._file(path))

    def replace(
        self, parts: list[tuple[PartitionKey, pd.DataFrame | None]], spec_json: str
    ) -> list[str]:
        tables = {k: _to_table(p, spec_json) for k, p in parts if p is not None}
        removed = {k for k, p in parts if p is None}
        files = self.series.upload(tables, self.manifest.version + 1)
        entries = {k: PartitionEntry(files[k], tables[k].num_rows) for k in sorted(files)}
        try:
            self.manifest = self.series.commit(self.manifest, entries, removed)
        except PreconditionFailed:
            # Lost for certain; any other failure may have committed, so the sweep decides.
            self.series.discard(list(files.values()))
            raise
        paths = {k: str(self.series.path(f)) for k, f in files.items()}
        return [
            paths.get(k, str(self.series.prefix / partition_relpath(k).as_posix()))
            for k, _ in parts
        ]


def _read_table(files: _Files, path: StorePath, columns: list[str] | None = None) -> pa.Table:
    return files.read_table(path, columns)


def _read_partition(
    files: _Files, path: StorePath, columns: list[str] | None = None
) -> pd.DataFrame:
    table = _read_table(files, path, None if columns is None else [INDEX_NAME, *columns])
    if INDEX_NAME not in table.column_names:
        raise StoreCorrupted(str(path), f"missing column {INDEX_NAME}")
    ts_type = table.schema.field(INDEX_NAME).type
    if not pa.types.is_timestamp(ts_type) or ts_type.tz not in ("UTC", "+00:00", "Etc/UTC"):
        raise StoreCorrupted(str(path), f"column {INDEX_NAME} is {ts_type}, expected UTC times")
    ts = table.column(INDEX_NAME).cast(pa.timestamp("ns", tz="UTC"))
    index = pd.DatetimeIndex(ts.to_pandas(), name=INDEX_NAME).tz_convert("UTC").as_unit("ns")
    if index.hasnans or not index.is_monotonic_increasing or index.has_duplicates:
        raise StoreCorrupted(str(path), "timestamps are missing, unsorted or duplicated")
    data = {c: table.column(c).to_numpy() for c in table.column_names if c != INDEX_NAME}
    return pd.DataFrame(data, index=index)


def _file_spec(files: _Files, path: StorePath) -> tuple[str, int, tuple[str, ...]]:
    """(spec JSON, format version, column names) from a partition's footer alone."""
    schema = files.read_schema(path)
    meta = schema.metadata or {}
    try:
        version = int(meta.get(_META_VERSION, b"0"))
    except ValueError:
        version = 0
    return meta.get(_META_SPEC, b"").decode("utf-8", "replace"), version, tuple(schema.names)


def _to_table(frame: pd.DataFrame, spec_json: str) -> pa.Table:
    arrays = [pa.array(frame.index, type=pa.timestamp("ns", tz="UTC"))]
    fields = [pa.field(INDEX_NAME, pa.timestamp("ns", tz="UTC"), nullable=False)]
    for col in frame.columns:
        dtype = pa.uint64() if col == HASH_COLUMN else pa.float64()
        arrays.append(pa.array(frame[col].to_numpy(), type=dtype))
        fields.append(pa.field(str(col), dtype))
    metadata = {_META_SPEC: spec_json.encode(), _META_VERSION: str(FORMAT_VERSION).encode()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


@dataclass(frozen=True, slots=True)
class _Stored:
    """What is stored for a series: partition files, row timestamps, fingerprints, offsets."""

    paths: dict[PartitionKey, StorePath]
    ts: np.ndarray[Any, np.dtype[np.int64]]
    hashes: np.ndarray[Any, np.dtype[np.uint64]]
    offsets: dict[PartitionKey, int]  # global row position of each partition's first row


def _load_stored(files: _Files, paths: dict[PartitionKey, StorePath]) -> _Stored:
    ts: list[np.ndarray[Any, np.dtype[np.int64]]] = []
    hashes: list[np.ndarray[Any, np.dtype[np.uint64]]] = []
    offsets: dict[PartitionKey, int] = {}
    position = 0
    for key, path in paths.items():
        part = _read_partition(files, path, [HASH_COLUMN])
        offsets[key] = position
        position += len(part)
        ts.append(pd.DatetimeIndex(part.index).asi8)
        hashes.append(part[HASH_COLUMN].to_numpy(dtype=np.uint64))
    return _Stored(
        paths,
        np.concatenate(ts) if ts else np.zeros(0, dtype=np.int64),
        np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64),
        offsets,
    )


def _first_difference(
    stored: _Stored, ts: np.ndarray[Any, np.dtype[np.int64]], hashes: np.ndarray[Any, Any]
) -> int:
    k = min(len(stored.ts), len(ts))
    differs = (stored.ts[:k] != ts[:k]) | (stored.hashes[:k] != hashes[:k])
    return int(np.argmax(differs)) if differs.any() else k


def _state_at(files: _Files, stored: _Stored, row: int, spec: FeatureSpec) -> dict[str, float]:
    key = max(k for k, off in stored.offsets.items() if off <= row)
    columns = list(dict.fromkeys(c for f in spec.features for c in f.state_columns))
    if not columns:
        return {}
    part = _read_partition(files, stored.paths[key], columns)
    values = part.iloc[row - stored.offsets[key]]
    return {c: float(values[c]) for c in columns}


def update_features(
    store: BarStore,
    feature_store: FeatureStore,
    source: str,
    symbol: str,
    timeframe: str | Timeframe,
    spec: object = "default",
    span: Span | None = None,
) -> UpdateResult:
    """Bring the series' stored features up to date with its bars; return what was done.

    Recomputes only from the first row whose bar is new or differs from the one the stored row
    was computed from (everything when nothing usable is stored); values equal a full
    recomputation exactly. Holds the series lock throughout. ``spec`` is anything
    :func:`~candleflow.features.catalogue.parse_feature_spec` takes; ``span`` gets ``Feature i/N``
    progress and its tracker's cancel token is checked between features (nothing is written
    when cancelled). No stored bars: :class:`NoData`.
    """
    parsed = parse_feature_spec(spec)
    tf = parse_timeframe(timeframe)
    series = f"{source}/{symbol}/{tf.name}"
    if feature_store.root != store.root:
        raise InvalidRequest(
            f"{series}: the feature store {feature_store.root} is not beside the bar store "
            f"{store.root}; use FeatureStore(store)"
        )
    spec_json = json.dumps(parsed.to_dict(), sort_keys=True)
    series_dir = feature_store.series_dir(source, symbol, tf)
    with store.lock(source, symbol, tf):
        if isinstance(series_dir, Path):
            result = _update(
                store, feature_store, series, source, symbol, tf, parsed, spec_json, span
            )
        else:
            # Object roots: an update that lost the race to another one starts over on its files.
            result = retry_commits(
                lambda: _update(
                    store, feature_store, series, source, symbol, tf, parsed, spec_json, span
                ),
                timeout=store.lock_timeout,
                what=series,
                where=str(series_dir),
            )
        store.update_meta(
            source,
            symbol,
            tf,
            feature_count=parsed.feature_count,
            feature_spec=parsed.to_dict(),
            features_updated_at=pd.Timestamp.now(tz="UTC"),
        )
    logger.info(
        "%s: features %s (%s), %d of %d rows computed, %d partition(s) written",
        series,
        result.mode,
        result.reason,
        result.rows_recomputed,
        result.rows,
        len(result.partitions),
    )
    return result


def _update(
    store: BarStore,
    feature_store: FeatureStore,
    series: str,
    source: str,
    symbol: str,
    tf: Timeframe,
    parsed: FeatureSpec,
    spec_json: str,
    span: Span | None,
) -> UpdateResult:
    """One try of :func:`update_features` (the caller holds the lock and updates the meta)."""
    bars = store.read(source, symbol, tf)
    if bars.empty:
        raise NoData(f"{series}: no bars stored; load them before computing features")
    ts = pd.DatetimeIndex(bars.index).asi8
    hashes = bar_fingerprints(bars)
    series_dir = feature_store.series_dir(source, symbol, tf)
    if isinstance(series_dir, Path):
        for stale in clean_temp_files(series_dir):
            logger.info("removed stale temp file %s", stale)
    files = feature_store.files(source, symbol, tf)
    paths = files.find()
    reason = _full_reason(files, paths, spec_json, parsed)
    stored = _load_stored(files, paths if reason is None else {})
    start = 0 if reason is not None else _first_difference(stored, ts, hashes)
    if reason is None:
        if start == len(ts) == len(stored.ts):
            reason = "up to date"
        elif start == len(stored.ts):
            reason = f"{len(ts) - start:,} new bar(s) from {bars.index[start]}"
        else:
            reason = f"bars changed from {pd.Timestamp(stored.ts[start], tz='UTC')}"
    if start == 0:
        mode = "full"
    elif start == len(ts) == len(stored.ts):
        mode = "unchanged"
    else:
        mode = "incremental"
    # With the state of the row before, even an up-to-date series costs only a few rows.
    state = _state_at(files, stored, start - 1, parsed) if start > 0 else None
    rows = compute_feature_rows(bars, parsed, start=start, state=state, span=span)
    rows[HASH_COLUMN] = hashes[start:]
    with write_refusals(store.root, series_dir):
        written = _write_partitions(files, tf, paths, stored, start, rows, spec_json)
    return UpdateResult(
        series=series,
        mode=mode,
        reason=reason,
        rows=len(ts),
        rows_recomputed=len(ts) - start,
        feature_count=parsed.feature_count,
        first_recomputed=bars.index[start] if start < len(ts) else None,
        partitions=tuple(written),
    )


def _full_reason(
    files: _Files, paths: dict[PartitionKey, StorePath], spec_json: str, spec: FeatureSpec
) -> str | None:
    """Why stored features cannot be continued (None: they can)."""
    if not paths:
        return "no stored features"
    expected = (INDEX_NAME, *spec.columns, *spec.state_columns, HASH_COLUMN)
    for path in paths.values():
        file_spec, version, names = _file_spec(files, path)
        if version != FORMAT_VERSION:
            return f"stored format version {version} is not {FORMAT_VERSION}"
        if file_spec != spec_json:
            return "feature spec changed"
        if names != expected:
            return f"{path.name} has other columns than the spec"
    return None


def _write_partitions(
    files: _Files,
    tf: Timeframe,
    paths: dict[PartitionKey, StorePath],
    stored: _Stored,
    start: int,
    rows: pd.DataFrame,
    spec_json: str,
) -> list[str]:
    """Rewrite the partitions holding rows from ``start`` on: stored rows before it + ``rows``.

    ``paths`` are the partitions on disk, ``stored`` what was loaded of them (nothing for a full
    recomputation); partitions left without rows are removed.
    """
    groups = partition_groups(pd.DatetimeIndex(rows.index), tf)
    affected = set(groups)
    if start == 0:
        affected.update(paths)
    else:
        # Stored rows from `start` on are replaced too (bars inserted before them shift them).
        affected.update(k for k, off in stored.offsets.items() if off + _count(stored, k) > start)
    parts: list[tuple[PartitionKey, pd.DataFrame | None]] = []
    # Newest first: a writer killed midway leaves the partition of `start` old, so the next
    # update sees the same first difference and recomputes everything after it again.
    for key in sorted(affected, reverse=True):
        pieces: list[pd.DataFrame] = []
        if key in stored.offsets and stored.offsets[key] < start:
            old = _read_partition(files, stored.paths[key])
            pieces.append(old.iloc[: start - stored.offsets[key]].loc[:, list(rows.columns)])
        if key in groups:
            pieces.append(rows.iloc[groups[key]])
        part = pd.concat(pieces) if len(pieces) > 1 else (pieces[0] if pieces else None)
        parts.append((key, None if part is None or part.empty else part))
    return sorted(files.replace(parts, spec_json))


def _count(stored: _Stored, key: PartitionKey) -> int:
    keys = list(stored.offsets)
    i = keys.index(key)
    end = stored.offsets[keys[i + 1]] if i + 1 < len(keys) else len(stored.ts)
    return end - stored.offsets[key]
