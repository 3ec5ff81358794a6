"""The commit protocol of object-store roots: immutable partition files plus one manifest per
series, replaced only by a conditional put.

S3 has neither an atomic rename nor file locks, so a series on an object store is the set of
files its manifest (``_manifest.json`` in the series prefix) names. A writer reads the manifest
and its ETag, uploads every partition it changes as a new, uniquely named file
(``year=2024/year=2024.v00000007-<random>.parquet``), then puts the new manifest with
``If-Match: <the ETag it read>`` (``If-None-Match: *`` for a new series). Exactly one of two
racing writers wins; the loser gets ``412 Precondition Failed``, deletes its uploads and starts
over from the new manifest, so no commit is lost and none is applied twice. A writer killed at any
point leaves the previous manifest, and so the previous version, intact; its uploads are orphans.

Readers get the manifest, then the files it names. Files a commit replaces are kept in the
manifest's ``retired`` list for a grace period (readers holding the old manifest still find
them), then deleted by a later commit; orphans older than the grace period are swept the same
way. The manifest carries the series' metadata too, so bars and ``_meta`` change in one commit.
Every manifest has a new ``commit`` id, so an ETag (the MD5 of its bytes) is never reused.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from candleflow.errors import StoreBusy, StoreCorrupted
from candleflow.store.atomic import json_default
from candleflow.store.frames import write_parquet
from candleflow.store.objects import ObjectClient, ObjectPath, PreconditionFailed
from candleflow.store.partitions import (
    PartitionKey,
    parse_partition_label,
    partition_label,
    partition_stem,
)

__all__ = ["MANIFEST_FILE", "Manifest", "ObjectSeries", "PartitionEntry", "retry_commits"]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "_manifest.json"
FORMAT = 1
_WORKERS = 8
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PartitionEntry:
    """One current partition: its file (relative to the series prefix) and what it holds."""

    file: str
    rows: int
    first: str | None = None
    last: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "rows": self.rows, "first": self.first, "last": self.last}


@dataclass(slots=True)
class Manifest:
    """A series' manifest as read (``etag`` ``None``: there is none yet)."""

    version: int = 0
    commit: str = ""
    partitions: dict[PartitionKey, PartitionEntry] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    retired: list[tuple[str, str]] = field(default_factory=list)  # (file, retired at ISO)
    swept_at: str | None = None
    etag: str | None = None

    def files(self) -> set[str]:
        return {e.file for e in self.partitions.values()} | {f for f, _ in self.retired}

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT,
            "version": self.version,
            "commit": self.commit,
            "updated_at": _now().isoformat(),
            "partitions": {
                partition_label(k): e.to_dict() for k, e in sorted(self.partitions.items())
            },
            "meta": self.meta,
            "retired": [{"file": f, "at": at} for f, at in self.retired],
            "swept_at": self.swept_at,
        }
        text = json.dumps(data, default=json_default, indent=1, sort_keys=True, allow_nan=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, etag: str, where: str) -> Manifest:
        try:
            raw = json.loads(data.decode("utf-8"))
            if not isinstance(raw, dict) or int(raw.get("format", 0)) != FORMAT:
                raise ValueError(f"not a format-{FORMAT} manifest")
            partitions: dict[PartitionKey, PartitionEntry] = {}
            for label, entry in dict(raw["partitions"]).items():
                key = parse_partition_label(str(label))
                if key is None:
                    raise ValueError(f"partition label {label!r}")
                partitions[key] = PartitionEntry(
                    str(entry["file"]), int(entry["rows"]), entry.get("first"), entry.get("last")
                )
            meta = raw.get("meta") or {}
            if not isinstance(meta, dict):
                raise ValueError("meta is not an object")
            return cls(
                version=int(raw["version"]),
                commit=str(raw.get("commit", "")),
                partitions=dict(sorted(partitions.items())),
                meta=meta,
                retired=[(str(r["file"]), str(r["at"])) for r in raw.get("retired", [])],
                swept_at=raw.get("swept_at"),
                etag=etag,
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise StoreCorrupted(where, f"not a valid manifest: {exc}") from exc


def _now() -> datetime:
    return datetime.now(UTC)


def retry_commits(attempt: Callable[[], T], *, timeout: float, what: str, where: str) -> T:
    """Run ``attempt`` until it does not lose a race (:class:`PreconditionFailed`).

    Backs off with jitter between tries; after ``timeout`` seconds of losing (negative:
    never give up) raises :class:`~candleflow.errors.StoreBusy`.
    """
    started = time.monotonic()
    delay = 0.005
    while True:
        try:
            return attempt()
        except PreconditionFailed:
            if 0 <= timeout < time.monotonic() - started:
                raise StoreBusy(where, what, timeout) from None
            logger.debug("%s: lost a commit race, retrying on the new manifest", what)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)


class ObjectSeries:
    """One series' files under ``prefix`` (``…/bars/source=…/symbol=…/timeframe=…``)."""

    def __init__(self, client: ObjectClient, prefix: ObjectPath, grace: float) -> None:
        self.client = client
        self.prefix = prefix
        self.grace = grace

    def __repr__(self) -> str:
        return f"ObjectSeries({str(self.prefix)!r})"

    @property
    def manifest_path(self) -> ObjectPath:
        return self.prefix / MANIFEST_FILE

    def path(self, file: str) -> ObjectPath:
        return self.prefix / file

    def load(self) -> Manifest:
        """The current manifest (an empty one, without ETag, when the series does not exist)."""
        found = self.client.get(self.manifest_path.key)
        if found is None:
            return Manifest()
        data, etag = found
        return Manifest.from_json(data, etag, str(self.manifest_path))

    # -- files -------------------------------------------------------------------------------

    def read_tables(self, files: list[str], columns: list[str] | None = None) -> list[pa.Table]:
        """The Parquet tables of ``files`` (relative to the prefix), fetched in parallel.

        A file that is gone raises ``FileNotFoundError`` (the caller reloads the manifest: a
        slow reader may outlive the grace period); one that is not Parquet, StoreCorrupted.
        """

        def fetch(file: str) -> pa.Table:
            found = self.client.get(self.path(file).key)
            if found is None:
                raise FileNotFoundError(str(self.path(file)))
            try:
                return pq.read_table(pa.BufferReader(found[0]), columns=columns)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise StoreCorrupted(
                    str(self.path(file)), f"not readable as Parquet: {exc}"
                ) from exc

        if len(files) <= 1:
            return [fetch(f) for f in files]
        with ThreadPoolExecutor(min(_WORKERS, len(files))) as pool:
            return list(pool.map(fetch, files))

    def read_schema(self, file: str) -> pa.Schema:
        found = self.client.get(self.path(file).key)
        if found is None:
            raise FileNotFoundError(str(self.path(file)))
        try:
            return pq.read_schema(pa.BufferReader(found[0]))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StoreCorrupted(str(self.path(file)), f"not readable as Parquet: {exc}") from exc

    def upload(
        self, tables: Mapping[PartitionKey, pa.Table], version: int
    ) -> dict[PartitionKey, str]:
        """Put each table as a new immutable file; return their names relative to the prefix."""
        tag = f"v{version:08d}-{uuid.uuid4().hex[:12]}"

        def put(item: tuple[PartitionKey, pa.Table]) -> tuple[PartitionKey, str]:
            key, table = item
            file = f"year={key[0]:04d}/{partition_stem(key)}.{tag}.parquet"
            buffer = io.BytesIO()
            write_parquet(table, buffer)
            self.client.put(self.path(file).key, buffer.getvalue(), if_absent=True)
            return key, file

        items = list(tables.items())
        if len(items) <= 1:
            return dict(put(i) for i in items)
        with ThreadPoolExecutor(min(_WORKERS, len(items))) as pool:
            return dict(pool.map(put, items))

    def discard(self, files: list[str]) -> None:
        """Delete uploads of a commit that lost (best effort: the sweep gets the rest)."""
        try:
            self.client.delete([self.path(f).key for f in files])
        except Exception as exc:
            logger.debug("%s: could not delete %d upload(s): %s", self, len(files), exc)

    # -- commit ------------------------------------------------------------------------------

    def commit(
        self,
        old: Manifest,
        partitions: Mapping[PartitionKey, PartitionEntry],
        removed: Collection[PartitionKey] = (),
        meta: Mapping[str, object] | None = None,
    ) -> Manifest:
        """Replace ``old`` by a manifest with ``partitions`` set, ``removed`` dropped and
        ``meta`` as the metadata (``None``: unchanged), conditionally on ``old`` being current.

        Raises :class:`PreconditionFailed` when another commit came first (nothing is changed;
        the caller discards its uploads and starts over); any other error leaves it open whether
        the commit happened (the caller must not delete what it uploaded). Afterwards deletes
        the files retired longer than the grace period ago.
        """
        now = _now()
        new = Manifest(
            version=old.version + 1,
            commit=uuid.uuid4().hex,
            partitions=dict(old.partitions),
            meta=dict(old.meta if meta is None else meta),
            retired=list(old.retired),
            swept_at=old.swept_at,
        )
        for key in removed:
            new.partitions.pop(key, None)
        new.partitions.update(partitions)
        new.partitions = dict(sorted(new.partitions.items()))
        current = {e.file for e in new.partitions.values()}
        stamp = now.isoformat()
        new.retired += [(e.file, stamp) for e in old.partitions.values() if e.file not in current]
        cutoff = now - timedelta(seconds=self.grace)
        expired = [f for f, at in new.retired if _parse_time(at) <= cutoff]
        new.retired = [(f, at) for f, at in new.retired if _parse_time(at) > cutoff]
        sweep = old.swept_at is None or _parse_time(old.swept_at) <= cutoff
        orphans: list[str] = []
        if sweep:
            orphans = self._orphans(new, cutoff)
            new.swept_at = stamp
        data = new.to_json()
        try:
            new.etag = self.client.put(
                self.manifest_path.key,
                data,
                if_match=old.etag,
                if_absent=old.etag is None,
                content_type="application/json",
            )
        except PreconditionFailed:
            # The client retries a put whose answer got lost; if the first try went through,
            # the retry fails its condition on our own manifest: that is a win, not a loss.
            # Another writer may have committed on top of ours since: our files, named (or
            # retired) by the latest manifest, tell that ours went through all the same.
            latest = self.load()
            ours = {e.file for e in partitions.values()}
            if latest.commit == new.commit:
                new.etag = latest.etag
            elif not (ours and ours & latest.files()):
                raise
        garbage = expired + orphans
        if garbage:
            logger.debug("%s: deleting %d old file(s)", self, len(garbage))
            self.discard(garbage)
        return new

    def _orphans(self, new: Manifest, cutoff: datetime) -> list[str]:
        """Parquet files under the prefix that no manifest names, written before ``cutoff``."""
        keep = new.files()
        base = f"{self.prefix.key}/"
        out: list[str] = []
        for info in self.client.list(base):
            name = info.key[len(base) :]
            if name.endswith(".parquet") and name not in keep and info.modified <= cutoff:
                out.append(name)
        return out


def _parse_time(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def table_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    write_parquet(table, buffer)
    return buffer.getvalue()


def json_meta(meta: Mapping[str, object]) -> dict[str, Any]:
    """``meta`` as stored (timestamps as ISO strings…): what a reader will get back."""
    loaded: dict[str, Any] = json.loads(
        json.dumps(dict(meta), default=json_default, allow_nan=False)
    )
    return loaded
