"""The live queue of a backfill: one row per symbol × timeframe (status, progress, micro-stage,
rows, API calls, duration), updated from any thread by the child runs' progress events and
published through a callable the caller gives (the Prefect layer publishes a table artifact)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from candleflow.progress.events import ProgressEvent
from candleflow.progress.tracker import Span
from candleflow.progress.wording import STAGE_VERBS, feature_position

__all__ = ["FINAL_STATUSES", "QUEUE_STATUSES", "QueueRow", "QueueTable", "RowProgress"]

logger = logging.getLogger(__name__)

#: Row statuses in the order a series goes through them (the last three are final).
QUEUE_STATUSES: tuple[str, ...] = (
    "queued", "validating", "fetching", "engineering", "storing", "done", "failed", "cancelled",
)  # fmt: skip
FINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
#: Load stage → the row status shown while it runs.
_STAGE_STATUS: dict[str, str] = {
    "validate_symbol": "validating",
    "check_head_timestamp": "validating",
    "load_local": "fetching",
    "analyze_gaps": "fetching",
    "plan_segments": "fetching",
    "fetch_segments": "fetching",
    "merge_bars": "storing",
    "save_bars": "storing",
    "compute_features": "engineering",
}


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One symbol × timeframe of a backfill, as its queue table shows it."""

    symbol: str
    timeframe: str
    status: str = "queued"
    progress: float = 0.0
    detail: str = ""
    rows: int = 0
    api_calls: int = 0
    duration: float = 0.0
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.timeframe)

    def record(self) -> dict[str, object]:
        """The row as the table artifact stores it (plain JSON values)."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "status": self.status,
            "progress": f"{self.progress:.2f}%",
            "micro-stage": self.detail,
            "rows": self.rows,
            "API calls": self.api_calls,
            "duration": f"{self.duration:.2f} s",
            "reason": self.reason,
        }


class QueueTable:
    """The live queue of a backfill: rows updated from any thread, published as a table artifact.

    :meth:`update` changes a row and tells the ``listeners`` (e.g. a terminal display) at once;
    publishing is separate because an artifact belongs to the flow run whose context creates it,
    and rows change inside child runs: the backfill's own thread calls :meth:`publish` (throttled:
    at most every ``min_interval`` seconds, and only when something changed) while it waits, and
    :meth:`flush` at the end. The publisher decides what a publication is (the Prefect layer
    updates one table artifact in place, so the run shows one live card).
    """

    def __init__(
        self,
        key: str,
        series: Sequence[tuple[str, str]],
        *,
        title: str = "backfill queue",
        min_interval: float = 1.0,
        listeners: Sequence[Callable[[QueueRow], None]] = (),
        publish: Callable[[str, str, Sequence[Mapping[str, object]]], Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.title = title
        self.publications = 0
        self._rows: dict[tuple[str, str], QueueRow] = {
            (symbol, tf): QueueRow(symbol, tf) for symbol, tf in series
        }
        self._min_interval = min_interval
        self._listeners = tuple(listeners)
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()
        self._dirty = True
        self._sent_at = -float("inf")

    def rows(self) -> list[QueueRow]:
        with self._lock:
            return list(self._rows.values())

    def row(self, symbol: str, timeframe: str) -> QueueRow:
        with self._lock:
            return self._rows[(symbol, timeframe)]

    def update(self, symbol: str, timeframe: str, **changes: Any) -> QueueRow:
        """Change fields of a row (a final status is never overwritten by a later event)."""
        with self._lock:
            old = self._rows[(symbol, timeframe)]
            if old.status in FINAL_STATUSES:
                return old
            status = changes.get("status", old.status)
            if status not in QUEUE_STATUSES:
                raise ValueError(f"unknown queue status {status!r}: use one of {QUEUE_STATUSES}")
            if "progress" in changes:  # never backwards
                changes["progress"] = max(old.progress, float(changes["progress"]))
            new = dataclasses.replace(old, **changes)
            if new == old:
                return old
            self._rows[(symbol, timeframe)] = new
            self._dirty = True
        for listener in self._listeners:
            try:
                listener(new)
            except Exception:
                logger.exception("queue row listener %r failed", listener)
        return new

    def counts(self) -> dict[str, int]:
        """How many rows are in each status."""
        counts = dict.fromkeys(QUEUE_STATUSES, 0)
        for row in self.rows():
            counts[row.status] += 1
        return counts

    def publish(self) -> bool:
        """Publish the rows if they changed and ``min_interval`` passed; True if sent."""
        now = self._clock()
        with self._lock:
            if not self._dirty or now - self._sent_at < self._min_interval:
                return False
        return self.flush()

    def flush(self) -> bool:
        """Publish the rows now if anything changed since the last one."""
        with self._lock:
            if not self._dirty:
                return False
            records = [row.record() for row in self._rows.values()]
            self._dirty, self._sent_at = False, self._clock()
        counts = self.counts()
        summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        self._publish(self.key, f"{self.title}: {summary}", records)
        self.publications += 1
        return True


class RowProgress:
    """A sink for a child run's progress events that keeps one queue row (and the backfill's
    aggregate span) up to date.

    The child's 0–100 % maps onto ``[low, high]`` of the row (the load on 0–80, features on
    80–100); ``span`` (a child span of the backfill's stage with ``total=1000``) follows the row.
    """

    def __init__(
        self,
        queue: QueueTable,
        symbol: str,
        timeframe: str,
        *,
        low: float = 0.0,
        high: float = 100.0,
        span: Span | None = None,
        started: float | None = None,
        base: QueueRow | None = None,
    ) -> None:
        self.queue, self.symbol, self.timeframe = queue, symbol, timeframe
        self.low, self.high, self.span = low, high, span
        self.started = time.monotonic() if started is None else started
        self.base = base

    def __call__(self, event: ProgressEvent) -> None:
        progress = self.low + (self.high - self.low) * event.percentage / 100.0
        changes: dict[str, Any] = {
            "progress": round(progress, 2),
            "duration": time.monotonic() - self.started,
        }
        status = _STAGE_STATUS.get(event.stage)
        if status is not None and not (event.done or event.cancelled):
            changes["status"] = status
        if event.stage == "compute_features" and event.items_total:
            position = feature_position(event)
            changes["detail"] = f"{position}: {event.detail}" if event.detail else position
        elif event.stage:
            changes["detail"] = event.detail or STAGE_VERBS.get(event.stage, event.stage)
        base_rows = self.base.rows if self.base is not None else 0
        base_calls = self.base.api_calls if self.base is not None else 0
        if "rows" in event.counters:
            changes["rows"] = base_rows + event.counters["rows"]
        if "api_calls" in event.counters:
            changes["api_calls"] = base_calls + event.counters["api_calls"]
        row = self.queue.update(self.symbol, self.timeframe, **changes)
        if self.span is not None:
            self.span.update(done=int(row.progress * 10))
