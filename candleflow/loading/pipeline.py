"""The data-loading stages as plain functions (DESIGN §2), and a direct runner composing them.

Each stage is one function so a Prefect task can wrap it in a few lines: validate the symbol,
find the head timestamp, read the store, analyse gaps, plan segments, fetch them (pacing,
retries, cancellation and batched flushing live here), merge, save. :func:`run_load` runs the
whole pipeline without an orchestrator — for the demo, the benchmark baseline and scripts.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd

from candleflow.errors import (
    Cancelled,
    CandleflowError,
    InvalidRequest,
    NoData,
    PacingViolation,
    SourceUnavailable,
)
from candleflow.loading.calendars import (
    Alignment,
    detect_alignment,
    expected_bars,
    get_calendar,
    parse_alignment,
    to_utc,
)
from candleflow.loading.gaps import GapReport, bars_in_gaps
from candleflow.loading.gaps import analyze_gaps as _analyze
from candleflow.loading.segments import gaps_for_mode
from candleflow.loading.segments import plan_segments as _plan
from candleflow.models import FetchStats, GapClass, Instrument, LoadMode, Segment
from candleflow.progress import CancelToken, ProgressTracker, Span
from candleflow.sources.base import Source
from candleflow.store.bar_store import BarStore, WriteResult
from candleflow.store.frames import drop_invalid_bars, empty_bars
from candleflow.timeframes import Timeframe, parse_timeframe

logger = logging.getLogger(__name__)

#: (stage, default weight) in pipeline order — DESIGN §2.
STAGES: tuple[tuple[str, float], ...] = (
    ("validate_symbol", 2),
    ("check_head_timestamp", 2),
    ("load_local", 5),
    ("analyze_gaps", 3),
    ("plan_segments", 1),
    ("fetch_segments", 75),
    ("merge_bars", 4),
    ("save_bars", 8),
)
_SOURCE_STAGES = {
    "validate_symbol",
    "check_head_timestamp",
    "fetch_segments",
    "merge_bars",
    "save_bars",
}

#: How far back a load reaches when no start is given and nothing is stored yet.
DEFAULT_LOOKBACK: dict[str, pd.Timedelta] = {
    "1m": pd.Timedelta(days=7),
    "2m": pd.Timedelta(days=14),
    "3m": pd.Timedelta(days=30),
    "5m": pd.Timedelta(days=30),
    "10m": pd.Timedelta(days=60),
    "15m": pd.Timedelta(days=60),
    "20m": pd.Timedelta(days=90),
    "30m": pd.Timedelta(days=180),
}
_LONG_LOOKBACK = pd.Timedelta(days=365)
_DAILY_LOOKBACK = pd.Timedelta(days=5 * 365)
_RETRYABLE = (SourceUnavailable, PacingViolation, NoData)


def stage_plan(mode: LoadMode | str) -> list[tuple[str, float]]:
    """The stages a load in ``mode`` runs, with their weights (``local`` makes no source calls)."""
    if LoadMode.parse(mode) is LoadMode.LOCAL:
        return [(name, w) for name, w in STAGES if name not in _SOURCE_STAGES]
    return list(STAGES)


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """A validated load request. Build it with :meth:`parse` from user input."""

    symbol: str
    timeframe: Timeframe
    mode: LoadMode = LoadMode.TAIL
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    calendar: str = "XNYS"
    #: Intraday bar alignment; ``None`` means "auto" until :func:`resolve_alignment` decides.
    align: Alignment | None = "clock"

    @classmethod
    def parse(
        cls,
        symbol: str,
        timeframe: str | Timeframe = "1h",
        *,
        start: object = None,
        end: object = None,
        mode: str | LoadMode = "tail",
        calendar: str = "XNYS",
        align: str = "auto",
    ) -> LoadRequest:
        """Validate user input; naive dates are exchange-local, a date-only ``end`` is inclusive."""
        if not isinstance(symbol, str) or not symbol.strip():
            raise InvalidRequest(f"symbol must be a non-empty string, got {symbol!r}")
        tf = parse_timeframe(timeframe)
        load_mode = LoadMode.parse(mode)
        get_calendar(calendar)
        lo = None if start in (None, "") else to_utc(start, calendar)
        hi = None if end in (None, "") else to_utc(end, calendar)
        if hi is not None and _is_date_only(end):
            hi = to_utc(pd.Timestamp(str(end)) + pd.Timedelta(days=1), calendar)
        if lo is not None and hi is not None and lo >= hi:
            raise InvalidRequest(
                f"start {start} is not before end {end}: swap them or widen the range"
            )
        alignment = None if align == "auto" else parse_alignment(align)
        return cls(symbol.strip().upper(), tf, load_mode, lo, hi, calendar, alignment)

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.timeframe.name}"

    @property
    def grid_align(self) -> Alignment:
        """The alignment the calendar grid uses (``clock`` while still undecided)."""
        return self.align or "clock"


def resolve_alignment(
    request: LoadRequest, source: Source | None, stored: pd.DatetimeIndex
) -> LoadRequest:
    """Decide an ``auto`` alignment: from the file a ``files`` source reads, else from the bars
    already stored, else IB's ``clock`` grid. A file whose grid is unclear raises
    ``InvalidRequest`` asking for ``--align``; stored bars that are unclear fall back to clock.
    """
    if request.align is not None or request.timeframe.is_daily:
        return replace(request, align=request.grid_align)
    detect = getattr(source, "detect_alignment", None)
    if callable(detect):
        found: Alignment = detect(request.symbol, request.timeframe, request.calendar)
        return replace(request, align=found)
    if len(stored):
        try:
            return replace(
                request, align=detect_alignment(stored, request.calendar, request.timeframe)
            )
        except InvalidRequest:
            pass
    return replace(request, align="clock")


def _is_date_only(value: object) -> bool:
    """True for a calendar date without a time of day (``"2024-03-01"``, ``datetime.date``)."""
    if isinstance(value, str):
        return re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", value) is not None
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What a load will fetch: the analysed range, its gap report, and the segments."""

    start: pd.Timestamp
    end: pd.Timestamp
    report: GapReport
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Fetched bars not yet flushed, and counted statistics of the fetch stage."""

    bars: pd.DataFrame
    stats: FetchStats
    errors: tuple[str, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------- stages 1-2


def validate_symbol(source: Source, request: LoadRequest) -> Instrument:
    """Stage 1: the source resolves the instrument (``UnknownSymbol`` names the symbol)."""
    return source.validate(request.symbol, request.calendar)


def check_head_timestamp(
    source: Source, instrument: Instrument, timeframe: Timeframe
) -> pd.Timestamp:
    """Stage 2: the earliest bar the source has."""
    return source.head_timestamp(instrument, timeframe)


# ----------------------------------------------------------------------------- stages 3-5


def load_local(store: BarStore, source_name: str, request: LoadRequest) -> pd.DataFrame:
    """Stage 3: what the store already holds for the series."""
    return store.read(source_name, request.symbol, request.timeframe)


def resolve_range(
    request: LoadRequest,
    stored: pd.DatetimeIndex,
    head: pd.Timestamp | None,
    now: pd.Timestamp,
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The range to analyse: explicit bounds, else the stored range or a default lookback."""
    end = min(request.end, now) if request.end is not None else now
    if request.start is not None:
        start = request.start
    elif request.mode in (LoadMode.BACKFILL, LoadMode.FULL) and head is not None:
        start = head
    elif len(stored):
        start = stored[0]
    else:
        tf = request.timeframe
        lookback = _DAILY_LOOKBACK if tf.is_daily else DEFAULT_LOOKBACK.get(tf.name, _LONG_LOOKBACK)
        start = end - lookback
    if head is not None:
        start = max(start, head)
    return start, max(start, end)


def analyze_gaps(
    request: LoadRequest,
    stored: pd.DatetimeIndex,
    head: pd.Timestamp | None,
    now: pd.Timestamp,
) -> LoadPlan:
    """Stage 4: expected bars from the calendar vs. stored bars, over the resolved range."""
    start, end = resolve_range(request, stored, head, now)
    report = _analyze(
        stored,
        request.calendar,
        request.timeframe,
        start,
        end,
        head=head,
        now=now,
        align=request.grid_align,
    )
    return LoadPlan(start, end, report, ())


@dataclass(frozen=True, slots=True)
class Completed:
    """The range ``[start, end)`` that earlier loads of a series finished cleanly.

    Recorded in the series metadata only by a load that ran every planned segment without a
    failure, so a cancelled or crashed load leaves it as it was and the next ``tail`` or
    ``backfill`` still sees the hole the interrupted load left (tail fetches newest first).
    """

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, object]) -> Completed:
        def ts(key: str) -> pd.Timestamp | None:
            value = meta.get(key)
            return None if value in (None, "") else pd.Timestamp(str(value)).tz_convert("UTC")

        return cls(ts("complete_from"), ts("complete_through"))

    def to_meta(self) -> dict[str, object]:
        return {
            "complete_from": None if self.start is None else self.start.isoformat(),
            "complete_through": None if self.end is None else self.end.isoformat(),
        }

    def after(self, plan: LoadPlan) -> Completed:
        """This range extended by a clean load of ``plan`` (bars not yet finished excluded)."""
        future = [g.start for g in plan.report.gaps if g.kind is GapClass.FUTURE]
        start, end = plan.start, min([plan.end, *future])
        if self.start is None or self.end is None or start > self.end or end < self.start:
            # Disjoint from what was complete: keep whichever reaches further, so an explicit
            # load of old history never moves the tail anchor back.
            return self if self.end is not None and self.end > end else Completed(start, end)
        return Completed(min(start, self.start), max(end, self.end))


def read_completed(store: BarStore, source_name: str, request: LoadRequest) -> Completed:
    """The series' completed range from its metadata (empty when no load has finished)."""
    return Completed.from_meta(store.read_meta(source_name, request.symbol, request.timeframe))


def plan_segments(
    request: LoadRequest, plan: LoadPlan, completed: Completed | None = None
) -> LoadPlan:
    """Stage 5: IB-compliant requests for the gaps this mode fills, in the mode's order.

    ``completed`` is the series' cleanly loaded range (:func:`read_completed`); without it
    every missing gap is planned.
    """
    done = completed or Completed()
    gaps = gaps_for_mode(plan.report.gaps, request.mode, done.start, done.end)
    grid = expected_bars(
        request.calendar, request.timeframe, plan.start, plan.end, align=request.grid_align
    )
    segments = _plan(bars_in_gaps(grid, gaps), request.timeframe, request.mode)
    return replace(plan, segments=tuple(segments))


# ----------------------------------------------------------------------------- stage 6


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for transient source errors."""

    retries: int = 2
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2**attempt))


def fetch_segments(
    source: Source,
    instrument: Instrument,
    timeframe: Timeframe,
    segments: Sequence[Segment],
    *,
    span: Span | None = None,
    token: CancelToken | None = None,
    retry: RetryPolicy = RetryPolicy(),
    flush: Callable[[pd.DataFrame], None] | None = None,
    flush_every: int = 1,
) -> FetchResult:
    """Stage 6: fetch each segment, retrying transient errors; never stop for one bad segment.

    A segment that still fails after its retries is reported and skipped — except when the
    source itself stays unreachable (``SourceUnavailable``), which ends the stage.

    With ``flush``, fetched bars are handed over every ``flush_every`` segments (so a crash or a
    cancel loses at most the segments in flight) and the result holds only unflushed bars. On
    cancellation the pending bars are flushed before ``Cancelled`` propagates.
    """
    token = token or CancelToken()
    started = time.monotonic()
    pending: list[pd.DataFrame] = []
    failed: list[Segment] = []
    errors: list[str] = []
    rows = done = 0
    calls_before = source.api_calls

    def hand_over() -> None:
        if flush is not None and pending:
            flush(pd.concat(pending))
            pending.clear()

    try:
        for i, segment in enumerate(segments, start=1):
            token.raise_if_cancelled()
            detail = f"Segment {i}/{len(segments)}: {segment.label()}"
            if span is not None:
                span.update(detail=detail)
            try:
                frame = _fetch_with_retry(source, instrument, timeframe, segment, retry, token)
            except (Cancelled, KeyboardInterrupt):
                raise
            except SourceUnavailable:
                # The source is gone, not one segment: stop, keep what was fetched (finally),
                # and let the run fail so the rerun resumes from the store.
                raise
            except CandleflowError as exc:
                logger.warning("%s %s failed: %s", instrument.symbol, detail, exc)
                failed.append(segment)
                errors.append(f"{segment.label()}: {exc}")
                frame = None
            if frame is not None:
                pending.append(frame)
                rows += len(frame)
                if span is not None:
                    span.tracker.count("rows", len(frame))
            done += 1
            if span is not None:
                span.tracker.set_counter("api_calls", source.api_calls)
                span.tracker.set_counter("failed_segments", len(failed))
                span.advance(1, detail=detail)
            if len(pending) >= flush_every:
                hand_over()
    finally:
        # Whatever ends the loop — completion, cancellation, a crash — keeps what was fetched.
        hand_over()
    bars = pd.concat(pending) if pending else empty_bars()
    stats = FetchStats(
        segments=len(segments),
        segments_done=done,
        rows=rows,
        api_calls=source.api_calls - calls_before,
        duration_s=time.monotonic() - started,
        failed=tuple(failed),
    )
    return FetchResult(bars, stats, tuple(errors))


def _fetch_with_retry(
    source: Source,
    instrument: Instrument,
    timeframe: Timeframe,
    segment: Segment,
    retry: RetryPolicy,
    token: CancelToken,
) -> pd.DataFrame:
    attempt = 0
    while True:
        try:
            return source.fetch(instrument, timeframe, segment)
        except _RETRYABLE as exc:
            if attempt >= retry.retries:
                raise
            wait = retry.delay(attempt)
            logger.info("retrying %s after %s (in %.1fs)", segment.label(), exc, wait)
            if token.wait(wait):
                token.raise_if_cancelled()
            attempt += 1


# ----------------------------------------------------------------------------- stages 7-8


def merge_bars(existing: pd.DataFrame, fetched: pd.DataFrame) -> pd.DataFrame:
    """Stage 7: union, dedup by timestamp (fetched wins), sort; drop OHLC-invalid fetched rows."""
    clean = drop_invalid_bars(fetched)
    if existing.empty:
        merged = clean
    elif clean.empty:
        merged = existing
    else:
        merged = pd.concat([existing, clean])
    merged = merged[~merged.index.duplicated(keep="last")]
    return merged.sort_index()


def save_bars(
    store: BarStore,
    source_name: str,
    request: LoadRequest,
    bars: pd.DataFrame,
    meta: dict[str, object] | None = None,
) -> WriteResult:
    """Stage 8: atomic write of the touched partitions, plus series metadata."""
    return store.write(source_name, request.symbol, request.timeframe, bars, meta=meta)


# ----------------------------------------------------------------------------- direct runner


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What a load did, for people and for metadata."""

    symbol: str
    timeframe: str
    mode: str
    start: pd.Timestamp
    end: pd.Timestamp
    rows_before: int
    rows_after: int
    rows_added: int
    segments: int
    api_calls: int
    duration_s: float
    gaps_left: int
    missing_bars_left: int
    failed_segments: tuple[str, ...] = ()
    cancelled: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "mode": self.mode,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "rows_added": self.rows_added,
            "segments": self.segments,
            "api_calls": self.api_calls,
            "duration_s": round(self.duration_s, 3),
            "gaps_left": self.gaps_left,
            "missing_bars_left": self.missing_bars_left,
            "failed_segments": list(self.failed_segments),
            "cancelled": self.cancelled,
        }


def run_load(
    request: LoadRequest,
    source: Source,
    store: BarStore,
    *,
    tracker: ProgressTracker | None = None,
    now: pd.Timestamp | None = None,
    retry: RetryPolicy = RetryPolicy(),
) -> LoadSummary:
    """All stages in order without an orchestrator; returns what it did.

    Raises ``Cancelled`` (after saving what was fetched) when the tracker's token is cancelled.
    """
    started = time.monotonic()
    tracker = tracker or ProgressTracker(f"load {request.label}", stages=stage_plan(request.mode))
    token = tracker.cancel_token
    now = now or pd.Timestamp.now(tz="UTC")
    local_only = request.mode is LoadMode.LOCAL
    head: pd.Timestamp | None = None
    rows_added = 0

    def flush(frame: pd.DataFrame) -> None:
        nonlocal rows_added
        rows_added += save_bars(store, source.name, request, drop_invalid_bars(frame)).rows_added

    if not local_only:
        with tracker.stage("validate_symbol"):
            instrument = validate_symbol(source, request)
        with tracker.stage("check_head_timestamp"):
            head = check_head_timestamp(source, instrument, request.timeframe)
    with tracker.stage("load_local"):
        existing = load_local(store, source.name, request)
        completed = read_completed(store, source.name, request)
    stored = pd.DatetimeIndex(existing.index)
    request = resolve_alignment(request, None if local_only else source, stored)
    tracker.set_counter("rows", 0)
    with tracker.stage("analyze_gaps"):
        plan = analyze_gaps(request, stored, head, now)
    with tracker.stage("plan_segments"):
        plan = plan_segments(request, plan, completed)
    result = FetchResult(empty_bars(), FetchStats())
    cancelled = False
    if not local_only:
        try:
            with tracker.stage("fetch_segments", total=len(plan.segments), unit="Segment") as span:
                result = fetch_segments(
                    source, instrument, request.timeframe, plan.segments,
                    span=span, token=token, retry=retry, flush=flush,
                )  # fmt: skip
        except Cancelled:
            cancelled = True
        with tracker.stage("merge_bars"):
            merged = merge_bars(
                existing, store.read(source.name, request.symbol, request.timeframe)
            )
        with tracker.stage("save_bars"):
            meta: dict[str, object] = {
                "align": request.grid_align,
                "head_timestamp": head.isoformat() if head is not None else None,
                "last_fetch": now.isoformat(),
                "api_calls": result.stats.api_calls,
                "fetch_duration_s": round(result.stats.duration_s, 3),
            }
            if not cancelled and not result.errors:
                meta.update(completed.after(plan).to_meta())
            store.update_meta(source.name, request.symbol, request.timeframe, **meta)
    else:
        merged = existing
    final = _analyze(
        pd.DatetimeIndex(merged.index), request.calendar, request.timeframe, plan.start, plan.end,
        head=head, now=now, align=request.grid_align,
    )  # fmt: skip
    summary = LoadSummary(
        symbol=request.symbol,
        timeframe=request.timeframe.name,
        mode=request.mode.value,
        start=plan.start,
        end=plan.end,
        rows_before=len(existing),
        rows_after=len(merged),
        rows_added=rows_added,
        segments=len(plan.segments),
        api_calls=result.stats.api_calls,
        duration_s=time.monotonic() - started,
        gaps_left=len(final.missing),
        missing_bars_left=final.bars(GapClass.MISSING),
        failed_segments=result.errors,
        cancelled=cancelled,
    )
    if cancelled:
        raise Cancelled(
            f"load {request.label} cancelled; {rows_added} new bars were saved", partial=summary
        )
    tracker.complete()
    return summary
