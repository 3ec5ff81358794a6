"""Progress reporting and cooperative cancellation for the core (DESIGN §3).

A :class:`ProgressTracker` follows one operation (e.g. "load AAPL 1h") as a plan of weighted
top-level stages; each stage is a :class:`Span` that counts items and may open child spans (an
optimisation iteration → its candles), several at once from different threads. The tracker turns
that tree into :class:`ProgressEvent` records — a monotonic percentage with two decimals, stage and
positions, counters, a smoothed rate and an ETA — and hands them to *sinks* (plain callables:
:class:`ListSink`, :class:`LoggingSink`, the Rich display in :mod:`candleflow.progress.display`, the
Prefect adapter in ``tasks/progress.py``). Emission is throttled by time so a hot loop may call
:meth:`Span.advance` as often as it likes; stage boundaries, completion and cancellation always
emit. A :class:`CancelToken` carries cancellation from the outside (Ctrl+C, the Prefect UI) to
loops that poll it at segment or chunk boundaries. The event record, sinks, formatting helpers and
the token are defined in :mod:`candleflow.progress.events` and re-exported here. Nothing here
knows about Prefect.

Why one module of ~700 lines: spans and the tracker are one state machine under one lock — a
span's advance, a child span's close and the tracker's throttled emission read and write the same
counters — so splitting them would only spread that lock's invariants over two files.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import MappingProxyType, TracebackType
from typing import Final

from candleflow.errors import Cancelled, InvalidRequest
from candleflow.progress.eta import EtaEstimator
from candleflow.progress.events import (
    CancelToken,
    ListSink,
    LoggingSink,
    ProgressEvent,
    Sink,
    format_counter,
    format_duration,
)

__all__ = [
    "CancelToken",
    "ListSink",
    "LoggingSink",
    "ProgressEvent",
    "ProgressTracker",
    "Sink",
    "Span",
    "format_counter",
    "format_duration",
]

# Named for the package, where users select it (and where the tracker lived before the split).
logger = logging.getLogger("candleflow.progress")

# Rates are smoothed with a time constant rather than a per-event factor, so the ETA does not
# depend on how often events happen to be built (0.25 s throttled, or every call in tests).
_RATE_TIME_CONSTANT: Final = 5.0
# Below this the measured rate is mostly timer noise; keep accumulating until the gap is larger.
_RATE_MIN_DT: Final = 0.01

# States of a planned stage.
_PENDING: Final = 0
_ACTIVE: Final = 1
_DONE: Final = 2
_STOPPED: Final = 3  # left by an exception: counts as unfinished until a later stage starts
# States of a span.
_NEW: Final = 0
_RUNNING: Final = 1
_CLOSED: Final = 2


class _PlannedStage:
    __slots__ = ("name", "span", "state", "weight")

    def __init__(self, name: str, weight: float) -> None:
        self.name = name
        self.weight = weight
        self.state = _PENDING
        self.span: Span | None = None


def _check_weight(weight: float, what: str) -> float:
    if not (math.isfinite(weight) and weight >= 0):
        raise InvalidRequest(f"{what} weight {weight!r} is invalid: use a finite number ≥ 0")
    return float(weight)


def _check_total(total: int | None, what: str) -> int | None:
    if total is not None and total < 0:
        raise InvalidRequest(f"{what} total {total!r} is negative: use a count ≥ 0 or None")
    return total


class Span:
    """A counted piece of work: a top-level stage (from ``tracker.stage``) or a child span.

    Use it as a context manager; it joins the progress tree on ``__enter__`` and leaves it on
    ``__exit__`` (exactly once). ``advance`` is the hot path and may be called from many threads.
    """

    __slots__ = (
        "_children",
        "_detail",
        "_done",
        "_entry",
        "_lock",
        "_name",
        "_parent",
        "_state",
        "_total",
        "_tracker",
        "_unit",
        "_weight",
    )

    def __init__(
        self,
        tracker: ProgressTracker,
        name: str,
        *,
        parent: Span | None,
        weight: float | None,
        total: int | None,
        unit: str,
    ) -> None:
        self._tracker = tracker
        self._lock = tracker._lock  # one lock per tracker: the percentage reads the whole tree
        self._name = name
        self._unit = unit
        self._parent = parent
        self._weight = weight
        self._total = total
        self._done: float = 0
        self._detail = ""
        self._children: list[Span] = []
        self._entry: _PlannedStage | None = None
        self._state = _NEW

    # -- hot path ------------------------------------------------------------------------------

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        """Count ``n`` more items done (``detail``, if given, becomes the micro-stage text)."""
        # Not validated (n ≥ 0 is the caller's job): this runs once per item in hot loops. The
        # throttle check reads the deadline without the lock; a stale read only delays an event.
        tracker = self._tracker
        with self._lock:
            self._done += n
            tracker._focus = self
            if detail is not None:
                self._detail = detail
        if tracker._clock() >= tracker._deadline:
            tracker._emit(False)

    # -- the rest ------------------------------------------------------------------------------

    def update(
        self, done: int | None = None, *, detail: str | None = None, total: int | None = None
    ) -> None:
        """Set the absolute items done, the detail text and/or the total."""
        if done is not None and done < 0:
            raise InvalidRequest(f"span {self._name!r}: done {done!r} is negative; use ≥ 0")
        _check_total(total, f"span {self._name!r}")
        tracker = self._tracker
        with self._lock:
            if done is not None:
                self._done = done
            if total is not None:
                self._total = total
            if detail is not None:
                self._detail = detail
            tracker._focus = self
        if tracker._clock() >= tracker._deadline:
            tracker._emit(False)

    def set_total(self, total: int) -> None:
        """Set (or correct) the number of items, e.g. once the segment plan is known."""
        _check_total(total, f"span {self._name!r}")
        with self._lock:
            self._total = total

    def child(
        self, name: str, *, total: int | None = None, weight: float = 1.0, unit: str = ""
    ) -> Span:
        """A child span covering ``weight`` of this span's items; enter it with ``with``."""
        return Span(
            self._tracker,
            name,
            parent=self,
            weight=_check_weight(weight, f"child span {name!r}"),
            total=_check_total(total, f"child span {name!r}"),
            unit=unit,
        )

    @property
    def tracker(self) -> ProgressTracker:
        """The tracker this span reports to (for its counters and cancel token)."""
        return self._tracker

    @property
    def name(self) -> str:
        return self._name

    @property
    def unit(self) -> str:
        return self._unit

    @property
    def total(self) -> int | None:
        return self._total

    @property
    def done(self) -> int:
        """Items done so far, including the weights of children that have exited."""
        with self._lock:
            return int(self._done)

    @property
    def fraction(self) -> float:
        """0..1: done plus running children's share, over the total (0 while the total is None)."""
        with self._lock:
            return self._fraction()

    def __enter__(self) -> Span:
        if self._parent is None:
            self._tracker._enter_stage(self)
        else:
            self._tracker._enter_child(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tracker._exit_span(self, exc)

    def __repr__(self) -> str:
        return f"Span({self._name!r}, done={self._done!r}, total={self._total!r})"

    # -- called with the tracker lock held -----------------------------------------------------

    def _items_progress(self) -> float:
        progress = self._done
        for child in self._children:
            progress += child._weight_or_zero() * child._fraction()
        return progress

    def _weight_or_zero(self) -> float:
        return self._weight if self._weight is not None else 0.0

    def _fraction(self) -> float:
        total = self._total
        if not total:
            return 0.0
        return min(max(self._items_progress() / total, 0.0), 1.0)

    def _position(self) -> str:
        label = self._unit or self._name
        position = int(self._done) + len(self._children)
        if self._total is None:
            return f"{label} {position:,}"
        return f"{label} {min(position, self._total):,}/{self._total:,}"


class ProgressTracker:
    """Follows one operation through its planned, weighted stages and emits throttled events.

    ``stages`` plans the operation as ``(name, weight)`` pairs; the overall percentage is
    (finished weights + current weight × current fraction) / planned weights. Plan only the stages
    that will run; entering a later planned stage counts the skipped ones as finished, and an
    unplanned stage adds its weight (default: 1) without the percentage ever going back.
    ``min_interval`` is the throttle in seconds; ``clock`` is injectable for tests. All methods,
    and those of its spans, may be called from any thread.

    Conventions, so every sink shows the same thing:

    * **Positions** ("Iteration 2/4", "Candle 7,300/10,000") are
      ``{unit or name} {p:,}/{total:,}`` with ``p = items done + children in flight``, capped at
      the total. A span not running children shows what is finished ("Candle 5/10" after five
      candles); a span whose child runs shows the item in flight ("Iteration 2/4" while the second
      iteration runs). ``parent_position`` is the top-level stage's position and
      ``child_position`` the deepest active span's, both only while a child span is active;
      otherwise both are "".
    * **Detail** is the text given with the last ``advance``/``update`` of the deepest active
      span, falling back to the nearest ancestor that has one.
    * **Exceptions** leaving a span keep the percentage where it was. ``Cancelled`` emits an event
      with ``cancelled=True`` (and sets the token). Any other exception still emits an event for a
      top-level stage, whose weight is then not counted as finished (it is once a later stage
      starts). A child span gives its parent its weight when it exits, except on ``Cancelled``,
      because a failed item (a segment that gave up after retries) is still an item processed.
    * **Throttling**: at most one event per ``min_interval`` from ``advance``, ``update``,
      ``count``, ``set_counter`` and child spans; forced events are one on entering each top-level
      stage (a boundary: the previous stage's end is the next one's start), one when a stage
      fails, one on :meth:`complete` and one per :meth:`cancel`; so n ``advance`` calls over
      ``elapsed`` seconds emit at most ``elapsed / min_interval + stages + 2`` events. After the
      final (``done=True``) event nothing more is emitted.
    """

    __slots__ = (
        "_clock",
        "_completed",
        "_counters",
        "_current",
        "_deadline",
        "_dispatching",
        "_emit_lock",
        "_eta",
        "_final_sent",
        "_focus",
        "_item_rate",
        "_item_rate_progress",
        "_item_rate_t",
        "_last_event",
        "_lock",
        "_max_raw",
        "_min_interval",
        "_operation",
        "_pct_rate",
        "_pct_rate_t",
        "_pct_rate_value",
        "_plan",
        "_redo",
        "_sink_failed",
        "_sinks",
        "_start",
        "_token",
    )

    def __init__(
        self,
        operation: str,
        sinks: Iterable[Sink] = (),
        *,
        stages: Sequence[tuple[str, float]] = (),
        min_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        cancel_token: CancelToken | None = None,
    ) -> None:
        if not (math.isfinite(min_interval) and min_interval >= 0):
            raise InvalidRequest(
                f"min_interval {min_interval!r} is invalid: use a number of seconds ≥ 0"
            )
        self._operation = operation
        self._sinks: tuple[Sink, ...] = tuple(sinks)
        self._sink_failed: set[int] = set()
        self._plan = [
            _PlannedStage(name, _check_weight(weight, f"stage {name!r}")) for name, weight in stages
        ]
        self._min_interval = float(min_interval)
        self._clock = clock
        self._token = cancel_token if cancel_token is not None else CancelToken()
        self._lock = threading.Lock()
        # Re-entrant so that a sink calling back into the tracker (cancel, complete) cannot
        # deadlock; such calls are queued through _redo rather than dispatched mid-dispatch.
        self._emit_lock = threading.RLock()
        self._dispatching = False
        self._redo = False
        self._counters: dict[str, int] = {}
        self._current: _PlannedStage | None = None
        self._focus: Span | None = None
        self._completed = False
        self._final_sent = False
        self._last_event: ProgressEvent | None = None
        self._max_raw = 0.0
        self._start = clock()
        self._deadline = self._start + self._min_interval if self._sinks else math.inf
        self._pct_rate: float | None = None
        self._pct_rate_t = self._start
        self._pct_rate_value = 0.0
        self._item_rate: float | None = None
        self._item_rate_t: float | None = None
        self._item_rate_progress = 0.0
        self._eta = EtaEstimator()

    @classmethod
    def null(cls, operation: str = "") -> ProgressTracker:
        """A tracker with no sinks, for callers that do not care about progress."""
        return cls(operation)

    # -- public --------------------------------------------------------------------------------

    @property
    def operation(self) -> str:
        return self._operation

    @property
    def cancel_token(self) -> CancelToken:
        return self._token

    @property
    def last_event(self) -> ProgressEvent | None:
        return self._last_event

    @property
    def percentage(self) -> float:
        """The current overall percentage (two decimals, never below what was emitted)."""
        with self._lock:
            if self._completed:
                return 100.0
            return round(min(max(self._raw_percentage(), self._max_raw), 100.0), 2)

    def add_sink(self, sink: Sink) -> None:
        with self._emit_lock:
            self._sinks = (*self._sinks, sink)
            if self._deadline == math.inf and not self._final_sent:
                self._deadline = self._clock() + self._min_interval

    def stage(
        self, name: str, *, weight: float | None = None, total: int | None = None, unit: str = ""
    ) -> Span:
        """A top-level stage; its weight comes from the plan unless ``weight`` overrides it."""
        return Span(
            self,
            name,
            parent=None,
            weight=None if weight is None else _check_weight(weight, f"stage {name!r}"),
            total=_check_total(total, f"stage {name!r}"),
            unit=unit,
        )

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to a counter (rows, api_calls, failed_segments, …)."""
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + n
        if self._clock() >= self._deadline:
            self._emit(False)

    def set_counter(self, counter: str, value: int) -> None:
        with self._lock:
            self._counters[counter] = value
        if self._clock() >= self._deadline:
            self._emit(False)

    def complete(self) -> None:
        """Emit the final event (100.00 %, ``done=True``); later calls do nothing."""
        with self._lock:
            if self._completed:
                return
            self._completed = True
        self._emit(True)

    def cancel(self, reason: str = "cancelled") -> None:
        """Set the cancel token and emit an event with ``cancelled=True``."""
        self._token.cancel(reason)
        self._emit(True)

    def __repr__(self) -> str:
        return f"ProgressTracker({self._operation!r}, {self.percentage:.2f}%)"

    # -- span callbacks ------------------------------------------------------------------------

    def _enter_stage(self, span: Span) -> None:
        with self._lock:
            self._check_enterable(span)
            plan = self._plan
            index = next(
                (i for i, e in enumerate(plan) if e.name == span._name and e.state == _PENDING),
                None,
            )
            if index is None:
                # Unplanned (or repeated) stage: insert it where the operation is now, so that
                # the stages still pending are not taken for skipped ones.
                known = next((e.weight for e in plan if e.name == span._name), 1.0)
                entry = _PlannedStage(span._name, known)
                index = next(
                    (i for i in range(len(plan), 0, -1) if plan[i - 1].state != _PENDING), 0
                )
                plan.insert(index, entry)
            else:
                entry = plan[index]
            for earlier in plan[:index]:
                if earlier.state in (_PENDING, _STOPPED):
                    earlier.state = _DONE
            if span._weight is not None:
                entry.weight = span._weight
            span._weight = entry.weight
            entry.state = _ACTIVE
            entry.span = span
            span._entry = entry
            span._state = _RUNNING
            self._current = entry
            self._focus = span
            self._item_rate = None
            self._item_rate_t = None
            self._eta.enter_stage(entry.weight, self._clock())
        self._emit(True)

    def _enter_child(self, span: Span) -> None:
        with self._lock:
            self._check_enterable(span)
            span._state = _RUNNING
            if span._parent is not None:
                span._parent._children.append(span)
            self._focus = span
        if self._clock() >= self._deadline:
            self._emit(False)

    def _check_enterable(self, span: Span) -> None:
        if span._state != _NEW:
            raise InvalidRequest(
                f"span {span._name!r} was already entered: create a new one with stage()/child()"
            )

    def _exit_span(self, span: Span, exc: BaseException | None) -> None:
        cancelled = isinstance(exc, Cancelled)
        parent = span._parent
        with self._lock:
            if span._state != _RUNNING:
                return
            span._state = _CLOSED
            if exc is not None:
                # What was done before the exception stays shown even though the span's
                # partial share is about to leave the sum.
                self._max_raw = max(self._max_raw, min(self._raw_percentage(), 100.0))
            if parent is None:
                if span._entry is not None:
                    span._entry.state = _DONE if exc is None else _STOPPED
            else:
                parent._children.remove(span)
                if not cancelled:
                    parent._done += span._weight_or_zero()
                if self._focus is span:
                    self._focus = parent
        if cancelled:
            self._token.cancel(str(exc) or "cancelled")
        # A boundary is one moment: the next stage's enter event (or complete()) reports it, so
        # a clean exit is throttled like an advance; that keeps forced events to one per stage.
        if cancelled or (parent is None and exc is not None):
            self._emit(True)
        elif self._clock() >= self._deadline:
            self._emit(False)

    # -- emission ------------------------------------------------------------------------------

    def _emit(self, forced: bool) -> None:
        lock = self._emit_lock
        if forced:
            lock.acquire()
        elif not lock.acquire(blocking=False):
            return  # another thread is emitting right now; a throttled event can be dropped
        try:
            if self._dispatching:
                # Called back from a sink on this thread: dispatching now would hand the later
                # sinks this event before the one they are still waiting for.
                self._redo = self._redo or forced
                return
            self._dispatching = True
            try:
                while not self._final_sent:
                    now = self._clock()
                    if not forced and now < self._deadline:
                        return
                    with self._lock:
                        event = self._build_event(now)
                        self._last_event = event
                    self._final_sent = event.done
                    # An infinite deadline keeps stragglers after the end (and null trackers)
                    # off the slow path entirely.
                    quiet = event.done or not self._sinks
                    self._deadline = math.inf if quiet else now + self._min_interval
                    self._dispatch(event)
                    if not self._redo:
                        return
                    self._redo = False
                    forced = True
            finally:
                self._dispatching = False
        finally:
            lock.release()

    def _dispatch(self, event: ProgressEvent) -> None:
        for index, sink in enumerate(self._sinks):
            try:
                sink(event)
            except Exception:
                if index not in self._sink_failed:
                    self._sink_failed.add(index)
                    logger.exception(
                        "progress sink %r failed on %r; it is still called, "
                        "but further errors from it are not logged",
                        sink,
                        self._operation,
                    )

    def _raw_percentage(self) -> float:
        finished = 0.0
        planned = 0.0
        all_done = bool(self._plan)
        for entry in self._plan:
            planned += entry.weight
            if entry.state == _DONE:
                finished += entry.weight
            else:
                all_done = False
                if entry.state == _ACTIVE and entry.span is not None:
                    finished += entry.weight * entry.span._fraction()
        if planned <= 0:
            return 100.0 if all_done else 0.0
        return finished / planned * 100.0

    def _build_event(self, now: float) -> ProgressEvent:
        done = self._completed
        cancelled = self._token.cancelled
        raw = 100.0 if done else min(max(self._raw_percentage(), self._max_raw), 100.0)
        self._max_raw = raw
        pct_rate = self._smooth_percentage_rate(now, raw)

        stage = ""
        stage_index = 0
        items_done = 0
        items_total: int | None = None
        item_rate: float | None = None
        current = self._current
        if current is not None and current.span is not None:
            stage = current.name
            stage_index = self._plan.index(current) + 1
            items_done = int(current.span._done)
            items_total = current.span._total
            progress = current.span._items_progress()
            item_rate = self._smooth_item_rate(now, progress)
            self._eta.observe(now, progress)

        detail = parent_position = child_position = ""
        deepest = self._focus
        if deepest is not None:
            while deepest._children:
                deepest = deepest._children[-1]
            if deepest._parent is not None:
                top = deepest._parent
                while top._parent is not None:
                    top = top._parent
                parent_position = top._position()
                child_position = deepest._position()
            holder: Span | None = deepest
            while holder is not None and not holder._detail:
                holder = holder._parent
            detail = holder._detail if holder is not None else ""

        eta: float | None = None
        if done:
            eta = 0.0
        elif not cancelled:
            eta = self._estimate_eta(now, raw, pct_rate, current, items_total)

        return ProgressEvent(
            operation=self._operation,
            percentage=100.0 if done else round(raw, 2),
            stage=stage,
            stage_index=stage_index,
            stage_total=len(self._plan),
            items_done=items_done,
            items_total=items_total,
            detail=detail,
            parent_position=parent_position,
            child_position=child_position,
            counters=MappingProxyType(dict(self._counters)),
            elapsed=max(now - self._start, 0.0),
            eta=eta,
            rate=item_rate,
            cancelled=cancelled,
            done=done,
        )

    def _estimate_eta(
        self,
        now: float,
        raw: float,
        pct_rate: float | None,
        current: _PlannedStage | None,
        items_total: int | None,
    ) -> float | None:
        """From the dominant work unit (the current stage's items, see :mod:`.eta`); in a stage
        without items, at the pace of the short stages done once only such stages are left;
        before any stage, from the smoothed overall rate once a second of it has been seen."""
        if current is not None:
            index = self._plan.index(current)
            rest = sum(e.weight for e in self._plan[index + 1 :] if e.state != _DONE)
            planned = sum(e.weight for e in self._plan)
            if items_total:
                return self._eta.estimate(now, items_total, rest, planned)
            fraction = current.span._fraction() if current.span is not None else 0.0
            return self._eta.estimate_short(now, fraction, rest, planned)
        if pct_rate is None or pct_rate <= 0 or now - self._start < 1.0:
            return None
        eta = (100.0 - raw) / pct_rate
        return eta if math.isfinite(eta) and eta >= 0 else None

    def _smooth_percentage_rate(self, now: float, raw: float) -> float | None:
        dt = now - self._pct_rate_t
        if dt < 0:  # a clock that went backwards (fake clocks in tests): restart the estimate
            self._pct_rate_t, self._pct_rate_value = now, raw
        elif dt >= _RATE_MIN_DT:
            instant = (raw - self._pct_rate_value) / dt
            self._pct_rate = _smooth(self._pct_rate, instant, dt)
            self._pct_rate_t, self._pct_rate_value = now, raw
        return self._pct_rate

    def _smooth_item_rate(self, now: float, progress: float) -> float | None:
        if self._item_rate_t is None or now < self._item_rate_t:
            self._item_rate_t, self._item_rate_progress = now, progress
            return self._item_rate
        dt = now - self._item_rate_t
        if dt >= _RATE_MIN_DT:
            instant = max(progress - self._item_rate_progress, 0.0) / dt
            self._item_rate = _smooth(self._item_rate, instant, dt)
            self._item_rate_t, self._item_rate_progress = now, progress
        return self._item_rate


def _smooth(previous: float | None, instant: float, dt: float) -> float | None:
    if not math.isfinite(instant):
        return previous
    if previous is None:
        return instant
    alpha = 1.0 - math.exp(-dt / _RATE_TIME_CONSTANT)
    return previous + alpha * (instant - previous)
