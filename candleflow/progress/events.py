"""Progress events and what consumes them: the record, its formatting, sinks and cancellation.

:class:`ProgressEvent` is the snapshot a :class:`~candleflow.progress.ProgressTracker` hands to
every *sink* — any callable taking one event (:data:`Sink`), such as :class:`ListSink` (tests,
small tools), :class:`LoggingSink`, the Rich display in :mod:`candleflow.progress.display` or the
Prefect adapter in ``tasks/progress.py`` — with :func:`format_duration` and
:func:`format_counter` rendering its fields for people. :class:`CancelToken` carries the signal
the other way, from the outside (Ctrl+C, the Prefect UI) to loops that poll it. These are what
code on either side of a tracker needs without the tracker's machinery; everything is
re-exported from :mod:`candleflow.progress`, the usual import.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from candleflow.errors import Cancelled

__all__ = [
    "CancelToken",
    "ListSink",
    "LoggingSink",
    "ProgressEvent",
    "Sink",
    "format_counter",
    "format_duration",
]

# LoggingSink logs where it did when it lived in candleflow.progress, beside the tracker's own
# messages, so logging configuration that selects that logger keeps working.
_DEFAULT_LOGGER_NAME: Final = "candleflow.progress"

_COUNTER_LABELS: Final[Mapping[str, tuple[str, str]]] = {
    "rows": ("row", "rows"),
    "api_calls": ("API call", "API calls"),
    "failed_segments": ("failed segment", "failed segments"),
    "segments": ("segment", "segments"),
    "bars": ("bar", "bars"),
    "retries": ("retry", "retries"),
}


def format_duration(seconds: float) -> str:
    """Render seconds as ``m:ss`` or ``h:mm:ss`` ("0:12", "1:02:03"); negatives render as 0."""
    whole = round(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_counter(name: str, value: int) -> str:
    """Render a counter for people: ``rows=1250`` → "1,250 rows", ``api_calls=1`` → "1 API call"."""
    singular, plural = _COUNTER_LABELS.get(name, (name.replace("_", " "),) * 2)
    return f"{value:,} {singular if value == 1 else plural}"


def _empty_counters() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One snapshot of an operation's progress, as handed to every sink.

    ``percentage`` is 0–100 with two decimals and never decreases within one tracker; it is exactly
    100.0 on the final event (``done=True``). ``stage_index`` is 1-based (0 before the first stage).
    ``eta`` and ``rate`` are ``None`` when unknown, otherwise finite and non-negative.
    """

    operation: str
    percentage: float = 0.0
    stage: str = ""
    stage_index: int = 0
    stage_total: int = 0
    items_done: int = 0
    items_total: int | None = None
    detail: str = ""
    parent_position: str = ""
    child_position: str = ""
    counters: Mapping[str, int] = field(default_factory=_empty_counters)
    elapsed: float = 0.0
    eta: float | None = None
    rate: float | None = None
    cancelled: bool = False
    done: bool = False

    def summary(self) -> str:
        """One line with what is set, e.g. "load AAPL 1h · 62.50% · fetch_segments 6/8 · …"."""
        parts = [self.operation] if self.operation else []
        parts.append(f"{self.percentage:.2f}%")
        if self.stage:
            parts.append(f"{self.stage} {self.stage_index}/{self.stage_total}")
        if self.parent_position:
            parts.append(self.parent_position)
        if self.child_position:
            parts.append(self.child_position)
        elif not self.parent_position and self.items_total is not None:
            parts.append(f"{self.items_done:,}/{self.items_total:,}")
        if self.detail:
            parts.append(self.detail)
        parts.extend(format_counter(name, value) for name, value in self.counters.items())
        if self.cancelled:
            parts.append("cancelled")
        elif self.done:
            parts.append(f"done in {format_duration(self.elapsed)}")
        elif self.eta is not None:
            parts.append(f"ETA {format_duration(self.eta)}")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable copy (counters become a plain dict)."""
        return {
            "operation": self.operation,
            "percentage": self.percentage,
            "stage": self.stage,
            "stage_index": self.stage_index,
            "stage_total": self.stage_total,
            "items_done": self.items_done,
            "items_total": self.items_total,
            "detail": self.detail,
            "parent_position": self.parent_position,
            "child_position": self.child_position,
            "counters": dict(self.counters),
            "elapsed": self.elapsed,
            "eta": self.eta,
            "rate": self.rate,
            "cancelled": self.cancelled,
            "done": self.done,
        }


Sink = Callable[[ProgressEvent], None]


class CancelToken:
    """A thread-safe, one-way cancellation flag that loops poll at safe boundaries."""

    __slots__ = ("_event", "_lock", "_reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        """Request cancellation; the first reason given wins, later calls change nothing."""
        with self._lock:
            if not self._event.is_set():
                self._reason = reason
                self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        """Why it was cancelled ("" while not cancelled)."""
        return self._reason

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~candleflow.errors.Cancelled` with the reason if cancellation was asked."""
        if self._event.is_set():
            raise Cancelled(self._reason)

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; return True as soon as cancelled (back-off waits)."""
        return self._event.wait(max(timeout, 0.0))

    def __repr__(self) -> str:
        state = f"cancelled: {self._reason!r}" if self.cancelled else "active"
        return f"CancelToken({state})"


class ListSink:
    """Keeps every event in ``events`` (thread-safe); meant for tests and small tools."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def percentages(self) -> list[float]:
        with self._lock:
            return [event.percentage for event in self.events]


class LoggingSink:
    """Logs ``event.summary()`` at ``level`` to ``logger`` (default: ``candleflow.progress``)."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger if logger is not None else logging.getLogger(_DEFAULT_LOGGER_NAME)
        self.level = level

    def __call__(self, event: ProgressEvent) -> None:
        if self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, "%s", event.summary())
