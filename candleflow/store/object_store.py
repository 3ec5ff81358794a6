"""The bar store on an object store (``s3://bucket/prefix``): the :class:`BarStore` API over the
manifest commit protocol of :mod:`candleflow.store.manifest`.

``BarStore("s3://…")`` returns an :class:`ObjectBarStore`, so the load pipeline, the flows and
the CLI need no change. The layout is the local one (``bars/source=…/symbol=…/timeframe=…/
year=YYYY/``) with a commit id in each file name and a ``_manifest.json`` per series in place of
``_meta.json``. What differs from a local root:

- writes need no lock: each is one conditional manifest put, retried on the new manifest when
  another writer committed first (``lock_timeout`` bounds the retrying, then ``StoreBusy``);
  a write and its metadata are one commit;
- :meth:`ObjectBarStore.lock` excludes nothing (there is no file lock to take); it is there so
  code written for either kind of root runs unchanged, and everything it guarded commits
  conditionally anyway;
- replaced files stay ``gc_grace`` seconds for readers of the previous manifest, then go.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from candleflow.errors import InvalidRequest, StoreCorrupted
from candleflow.models import SYMBOL_RE, parse_timestamp
from candleflow.store.bar_store import (
    SOURCE_RE,
    BarStore,
    StorePath,
    WriteResult,
    bars_from_table,
    bars_in_window,
    validate_source_name,
    validate_symbol_name,
)
from candleflow.store.frames import bars_table, check_ohlc
from candleflow.store.journal import Journal
from candleflow.store.manifest import (
    MANIFEST_FILE,
    Manifest,
    ObjectSeries,
    PartitionEntry,
    json_meta,
    retry_commits,
)
from candleflow.store.objects import (
    ObjectClient,
    ObjectPath,
    PreconditionFailed,
    parse_object_root,
)
from candleflow.store.partitions import (
    PartitionKey,
    partition_bounds,
    partition_groups,
    series_relpath,
)
from candleflow.timeframes import TIMEFRAMES, Timeframe, parse_timeframe

__all__ = ["ObjectBarStore"]

logger = logging.getLogger(__name__)

_READ_TRIES = 3


class ObjectBarStore(BarStore):
    """Bars under ``s3://bucket/prefix``; see the module docstring for what differs locally."""

    def __init__(
        self,
        root: str | os.PathLike[str] | ObjectPath,
        *,
        lock_timeout: float = 120.0,
        gc_grace: float = 600.0,
    ) -> None:
        self.root: ObjectPath = (
            root if isinstance(root, ObjectPath) else parse_object_root(os.fspath(root))
        )
        self.client = ObjectClient(self.root)
        try:
            self.lock_timeout = float(lock_timeout)
            self.gc_grace = float(gc_grace)
        except (TypeError, ValueError):
            raise InvalidRequest(
                f"lock_timeout={lock_timeout!r}, gc_grace={gc_grace!r} must be seconds"
            ) from None
        if self.lock_timeout != self.lock_timeout or not self.gc_grace >= 0:
            raise InvalidRequest("lock_timeout and gc_grace must be numbers of seconds")

    def __repr__(self) -> str:
        return f"BarStore({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------

    def series_dir(self, source: str, symbol: str, timeframe: str | Timeframe) -> ObjectPath:
        validate_source_name(source)
        validate_symbol_name(symbol)
        tf = parse_timeframe(timeframe)
        return self.root / "bars" / str(series_relpath(source, symbol, tf.name))

    def meta_path(self, source: str, symbol: str, timeframe: str | Timeframe) -> ObjectPath:
        return self.object_series(source, symbol, timeframe).manifest_path

    def object_series(
        self, source: str, symbol: str, timeframe: str | Timeframe, kind: str = "bars"
    ) -> ObjectSeries:
        """The series' files and manifest under ``{root}/{kind}/`` (bars or features)."""
        tf = parse_timeframe(timeframe)
        validate_source_name(source)
        validate_symbol_name(symbol)
        prefix = self.root / kind / str(series_relpath(source, symbol, tf.name))
        return ObjectSeries(self.client, prefix, self.gc_grace)

    def partitions(
        self, source: str, symbol: str, timeframe: str | Timeframe
    ) -> Sequence[StorePath]:
        series = self.object_series(source, symbol, timeframe)
        return [series.path(e.file) for e in series.load().partitions.values()]

    def partition_rows(
        self, source: str, symbol: str, timeframe: str | Timeframe
    ) -> list[tuple[str, int]]:
        series = self.object_series(source, symbol, timeframe)
        return [
            (series.path(e.file).relative_to(self.root).as_posix(), e.rows)
            for e in series.load().partitions.values()
        ]

    def series(self) -> list[tuple[str, str, str]]:
        return sorted(self._listed_series("bars"))

    def _listed_series(self, kind: str) -> Iterator[tuple[str, str, str]]:
        base = f"{(self.root / kind).key}/"
        for info in self.client.list(base):
            parts = info.key[len(base) :].split("/")
            if len(parts) != 4 or parts[3] != MANIFEST_FILE:
                continue
            keys = [p.partition("=") for p in parts[:3]]
            if [k for k, _, _ in keys] != ["source", "symbol", "timeframe"]:
                continue
            source, symbol, name = (v for _, _, v in keys)
            symbol = symbol.replace("%3D", "=")
            if SOURCE_RE.fullmatch(source) and SYMBOL_RE.fullmatch(symbol) and name in TIMEFRAMES:
                yield source, symbol, name

    # -- locking -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, source: str, symbol: str, timeframe: str | Timeframe) -> Iterator[None]:
        """Excludes nothing on an object store (see the module docstring); validates the names."""
        self.series_dir(source, symbol, timeframe)
        yield

    # -- the fetch journal: none ---------------------------------------------------------------

    def journal(self, source: str, symbol: str, timeframe: str | Timeframe) -> Journal | None:
        """None: objects cannot be appended to, so a load writes each fetched batch at once."""
        self.series_dir(source, symbol, timeframe)
        return None

    def recover(self, source: str, symbol: str, timeframe: str | Timeframe) -> int:
        """0: an object store keeps no journals to fold."""
        self.series_dir(source, symbol, timeframe)
        return 0

    # -- reading -----------------------------------------------------------------------------

    def read(
        self,
        source: str,
        symbol: str,
        timeframe: str | Timeframe,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        series = self.object_series(source, symbol, timeframe)
        lo = None if start is None else parse_timestamp(start, what="start", naive_tz=None)
        hi = None if end is None else parse_timestamp(end, what="end", naive_tz=None)
        if lo is not None and hi is not None and lo > hi:
            raise InvalidRequest(f"start {lo} is after end {hi}; swap them")
        for attempt in range(_READ_TRIES):
            manifest = series.load()
            wanted: dict[PartitionKey, str] = {}
            for key, entry in manifest.partitions.items():
                p_lo, p_hi = partition_bounds(key)
                if (hi is not None and p_lo >= hi) or (lo is not None and p_hi <= lo):
                    continue
                wanted[key] = entry.file
            try:
                frames = self._read_files(series, wanted)
                break
            except FileNotFoundError:
                # Collected under a reader slower than the grace period: read the new version.
                if attempt + 1 == _READ_TRIES:
                    raise StoreCorrupted(
                        str(series.manifest_path), "names files that are gone"
                    ) from None
        return bars_in_window(frames, lo, hi)

    @staticmethod
    def _read_files(series: ObjectSeries, files: Mapping[PartitionKey, str]) -> list[pd.DataFrame]:
        tables = series.read_tables(list(files.values()))
        return [
            bars_from_table(table, series.path(file), key)
            for (key, file), table in zip(files.items(), tables, strict=True)
        ]

    # -- metadata ----------------------------------------------------------------------------

    def read_meta(self, source: str, symbol: str, timeframe: str | Timeframe) -> dict[str, object]:
        return dict(self.object_series(source, symbol, timeframe).load().meta)

    def update_meta(
        self, source: str, symbol: str, timeframe: str | Timeframe, **fields: object
    ) -> dict[str, object]:
        series = self.object_series(source, symbol, timeframe)
        stored = _checked_meta(fields, str(series.prefix))

        def attempt() -> dict[str, object]:
            old = series.load()
            return series.commit(old, {}, meta={**old.meta, **stored}).meta

        return retry_commits(
            attempt, timeout=self.lock_timeout, what=_name(series), where=str(series.prefix)
        )

    # -- writing -----------------------------------------------------------------------------

    def write(
        self,
        source: str,
        symbol: str,
        timeframe: str | Timeframe,
        bars: pd.DataFrame,
        *,
        meta: Mapping[str, object] | None = None,
    ) -> WriteResult:
        tf = parse_timeframe(timeframe)
        series = self.object_series(source, symbol, tf)
        name = f"{source}/{symbol}/{tf.name}"
        if isinstance(bars, pd.DataFrame) and len(bars) == 0:
            total = sum(e.rows for e in series.load().partitions.values())
            return WriteResult(total, total, 0, ())
        frame = self._prepare(bars, name)
        check_ohlc(frame, name)
        extra = _checked_meta(meta or {}, name)
        groups = {
            key: frame.iloc[rows]
            for key, rows in partition_groups(pd.DatetimeIndex(frame.index), tf).items()
        }

        def attempt() -> tuple[WriteResult, Manifest]:
            old = series.load()
            rows_before = sum(e.rows for e in old.partitions.values())
            rows_added = 0
            merged: dict[PartitionKey, pd.DataFrame] = {}
            stored = self._read_files(
                series, {k: old.partitions[k].file for k in groups if k in old.partitions}
            )
            previous = dict(zip([k for k in groups if k in old.partitions], stored, strict=True))
            for key, new in groups.items():
                prior = previous.get(key)
                if prior is None or not len(prior):
                    merged[key] = new
                    rows_added += len(new)
                    continue
                replaced = prior.index.isin(new.index)
                rows_added += len(new) - int(replaced.sum())
                kept = prior[~replaced]
                merged[key] = new if not len(kept) else pd.concat([kept, new]).sort_index()
            files = series.upload({k: bars_table(v) for k, v in merged.items()}, old.version + 1)
            entries = {
                key: PartitionEntry(
                    files[key],
                    len(part),
                    pd.Timestamp(part.index[0]).isoformat(),
                    pd.Timestamp(part.index[-1]).isoformat(),
                )
                for key, part in merged.items()
            }
            everything = {**old.partitions, **entries}
            first = everything[min(everything)].first
            last = everything[max(everything)].last
            rows_after = rows_before + rows_added
            new_meta = {
                **old.meta,
                **extra,
                "rows": rows_after,
                "first": first,
                "last": last,
                "updated_at": pd.Timestamp.now(tz="UTC").isoformat(),
            }
            try:
                committed = series.commit(old, entries, meta=new_meta)
            except PreconditionFailed:
                # Lost for certain (commit re-checks an ambiguous answer): the uploads are
                # nobody's. Any other failure may have committed: leave them to the sweep.
                series.discard(list(files.values()))
                raise
            written = tuple(str(series.path(files[k])) for k in sorted(files))
            return WriteResult(rows_before, rows_after, rows_added, written), committed

        result, _ = retry_commits(
            attempt, timeout=self.lock_timeout, what=name, where=str(series.prefix)
        )
        logger.info(
            "%s: stored %d bars (%d new, %d rows now) in %d partition(s)",
            name,
            len(frame),
            result.rows_added,
            result.rows_after,
            len(result.partitions),
        )
        return result


def _name(series: ObjectSeries) -> str:
    return "/".join(p.partition("=")[2] for p in series.prefix.key.split("/")[-3:])


def _checked_meta(meta: Mapping[str, object], where: str) -> dict[str, Any]:
    try:
        return json_meta(meta)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"metadata for {where} is not JSON serialisable ({exc}); "
            "pass numbers, strings, lists, dicts or timestamps"
        ) from exc
