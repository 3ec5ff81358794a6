"""The data-loading stages as plain functions (DESIGN §2), and the ONE pipeline composing them.

Each stage is one function so a Prefect task can wrap it in a few lines: validate the symbol,
find the head timestamp, read the store, analyse gaps, plan segments, fetch them (pacing,
retries, cancellation and batched flushing live here), merge, save. The stages declare their
labels and weights in :data:`STAGES`. :func:`load_series` is the only composition of them: it
runs each stage through a stage runner — :class:`DirectStages` (each stage a span of a tracker,
called right here) by default, the flow's runner (each stage its ``@task``) in a Prefect run —
and assembles the flush, the series metadata and the :class:`LoadSummary` itself, so the direct
path (:func:`run_load`: the demo's ``--direct``, the benchmark baseline, scripts) and the flow
cannot promise different results.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import pandas as pd

from candleflow.errors import (
    Cancelled,
    CandleflowError,
    NoData,
    PacingViolation,
    SourceUnavailable,
)
from candleflow.loading.calendars import expected_bars
from candleflow.loading.gaps import analyze_gaps as _analyze
from candleflow.loading.gaps import bars_in_gaps
from candleflow.loading.request import (
    Completed,
    LoadPlan,
    LoadRequest,
    LoadSummary,
    bar_end,
    range_notice,
    read_completed,
    resolve_alignment,
)
from candleflow.loading.segments import gaps_for_mode
from candleflow.loading.segments import plan_segments as _plan
from candleflow.models import FetchStats, GapClass, Instrument, LoadMode, Segment
from candleflow.progress import CancelToken, ProgressTracker, Span
from candleflow.sources.base import Source, is_finite, series_meta, source_tail
from candleflow.store.bar_store import BarStore, WriteResult
from candleflow.store.frames import drop_invalid_bars, empty_bars
from candleflow.timeframes import Timeframe, parse_timeframe

__all__ = [
    "STAGES",
    "Completed",
    "DirectStages",
    "FetchResult",
    "LoadPlan",
    "LoadRequest",
    "LoadSummary",
    "RetryPolicy",
    "RunStage",
    "Stage",
    "StoreFlush",
    "analyze_gaps",
    "check_head_timestamp",
    "fetch_segments",
    "load_local",
    "load_series",
    "merge_bars",
    "open_stage",
    "plan_segments",
    "read_completed",
    "record_backfill",
    "resolve_alignment",
    "resolve_range",
    "run_load",
    "save_bars",
    "stage_plan",
    "validate_symbol",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Stage:
    """One loading stage as the plan declares it: its name (what progress shows), its default
    weight, whether a ``local`` load runs it (no source calls), and — for a stage that counts
    items — the argument holding them and their unit ("Segment 3/8")."""

    name: str
    weight: float
    local: bool = False
    counts: str = ""
    unit: str = ""


#: The eight stages in pipeline order — DESIGN §2.
STAGES: tuple[Stage, ...] = (
    Stage("validate_symbol", 2),
    Stage("check_head_timestamp", 2),
    Stage("load_local", 5, local=True),
    Stage("analyze_gaps", 3, local=True),
    Stage("plan_segments", 1, local=True),
    Stage("fetch_segments", 75, counts="segments", unit="Segment"),
    Stage("merge_bars", 4),
    Stage("save_bars", 8),
)
_STAGE_BY_NAME: Mapping[str, Stage] = {stage.name: stage for stage in STAGES}

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
    local = LoadMode.parse(mode) is LoadMode.LOCAL
    return [(s.name, s.weight) for s in STAGES if s.local or not local]


def open_stage(tracker: ProgressTracker, name: str, total: int | None = None) -> Span:
    """Stage ``name`` as a span of ``tracker``, with the unit the plan declares for it."""
    return tracker.stage(name, total=total, unit=_STAGE_BY_NAME[name].unit)


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
    """Stage 3: what the store already holds for the series — with the bars of loads that died
    before their save folded into the partitions first (:meth:`BarStore.recover`)."""
    store.recover(source_name, request.symbol, request.timeframe)
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


def plan_segments(
    request: LoadRequest, plan: LoadPlan, completed: Completed | None = None
) -> LoadPlan:
    """Stage 5: IB-compliant requests for the gaps this mode fills, in the mode's order.

    ``completed`` is the series' cleanly loaded range (:func:`read_completed`); without it
    every missing gap is planned. A request bounded to a finite source fills every gap in it,
    whatever the mode: importing a file of older bars than those stored is not a "tail".
    """
    done = completed or Completed()
    mode = LoadMode.FULL if request.finite else request.mode
    gaps = gaps_for_mode(plan.report.gaps, mode, done.start, done.end)
    grid = expected_bars(
        request.calendar, request.timeframe, plan.start, plan.end, align=request.grid_align
    )
    segments = _plan(
        bars_in_gaps(grid, gaps), request.timeframe, request.mode, max_span=request.max_span
    )
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
    source itself stays unreachable (``SourceUnavailable``), which ends the stage. A finite
    source (a file) that has no bars in a segment simply holds none there: not a failure (the
    bars stay missing in the gap report).

    With ``flush``, fetched bars are handed over every ``flush_every`` segments (so a crash or a
    cancel loses at most the segments in flight) and the result holds only unflushed bars. On
    cancellation the pending bars are flushed before ``Cancelled`` propagates.

    A source with ``lanes`` > 1 (IB with several connections) gets that many requests in flight;
    answers are still handled in segment order, and whatever ends the stage waits for the
    requests in flight and keeps their bars.
    """
    token = token or CancelToken()
    started = time.monotonic()
    pending: list[pd.DataFrame] = []
    failed: list[Segment] = []
    errors: list[str] = []
    rows = done = 0
    calls_before = counted = source.api_calls
    finite = is_finite(source)
    if finite:
        retry = replace(retry, retries=0)  # a file answers the same way every time

    def hand_over() -> None:
        if flush is not None and pending:
            flush(pd.concat(pending))
            pending.clear()

    fetch = functools.partial(_fetch_with_retry, source, instrument, timeframe, retry=retry,
                              token=token)  # fmt: skip
    lanes = 1 if finite else max(1, int(getattr(source, "lanes", 1)))
    answers = _InOrder(fetch, segments, lanes, token)
    try:
        for i, (segment, answer) in enumerate(answers, start=1):
            detail = f"Segment {i}/{len(segments)}: {segment.label()}"
            if span is not None:
                span.update(detail=detail)
            try:
                frame = answer()
            except (Cancelled, KeyboardInterrupt):
                raise
            except SourceUnavailable:
                # The source is gone, not one segment: stop, keep what was fetched (finally),
                # and let the run fail so the rerun resumes from the store.
                raise
            except NoData as exc:
                if not finite:
                    logger.warning("%s %s failed: %s", instrument.symbol, detail, exc)
                    failed.append(segment)
                    errors.append(f"{segment.label()}: {exc}")
                frame = None
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
                # Added, not set: the tracker's count is the load's (validate and head
                # timestamp included), the one the summary and the metadata give.
                span.tracker.count("api_calls", source.api_calls - counted)
                counted = source.api_calls
                span.tracker.set_counter("failed_segments", len(failed))
                span.advance(1, detail=detail)
            if len(pending) >= flush_every:
                hand_over()
    finally:
        # Whatever ends the loop — completion, cancellation, a crash — keeps what was fetched,
        # requests still in flight included.
        for late in answers.close_and_collect():
            pending.append(late)
            rows += len(late)
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


class _InOrder:
    """Answers to ``fetch(segment)`` in segment order, with up to ``lanes`` requests in flight
    (threads); one lane fetches each segment when its answer is asked for. Iterating yields
    ``(segment, answer)``; ``answer()`` returns the bars or raises what the fetch raised. No new
    request starts once ``token`` is cancelled or iteration stops."""

    def __init__(
        self,
        fetch: Callable[[Segment], pd.DataFrame],
        segments: Sequence[Segment],
        lanes: int,
        token: CancelToken,
    ) -> None:
        self.fetch, self.segments, self.token = fetch, list(segments), token
        self.pool = ThreadPoolExecutor(lanes, thread_name_prefix="fetch") if lanes > 1 else None
        self.lanes = lanes
        self.inflight: deque[tuple[Segment, Future[pd.DataFrame]]] = deque()
        self.next = 0

    def _submit(self, pool: ThreadPoolExecutor) -> None:
        while len(self.inflight) < self.lanes and self.next < len(self.segments):
            if self.token.cancelled:
                return
            segment = self.segments[self.next]
            self.inflight.append((segment, pool.submit(self.fetch, segment)))
            self.next += 1

    def __iter__(self) -> Iterator[tuple[Segment, Callable[[], pd.DataFrame]]]:
        if self.pool is None:
            for segment in self.segments:
                self.token.raise_if_cancelled()
                yield segment, functools.partial(self.fetch, segment)
            return
        while True:
            self.token.raise_if_cancelled()
            self._submit(self.pool)
            if not self.inflight:
                return
            segment, future = self.inflight.popleft()
            yield segment, future.result

    def close_and_collect(self) -> list[pd.DataFrame]:
        """Stop: wait for the requests in flight and return the bars of those that succeeded."""
        if self.pool is None:
            return []
        frames: list[pd.DataFrame] = []
        self.next = len(self.segments)
        for _, future in self.inflight:
            try:
                frames.append(future.result())
            except BaseException:  # its segment was not fetched: nothing to keep
                continue
        self.inflight.clear()
        self.pool.shutdown(wait=True)
        return frames


def _fetch_with_retry(
    source: Source,
    instrument: Instrument,
    timeframe: Timeframe,
    segment: Segment,
    *,
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
    """Stage 8: atomic write of the touched partitions, plus series metadata — recorded even when
    every bar was flushed while fetching and only the metadata is left."""
    if len(bars) or not meta:
        return store.write(source_name, request.symbol, request.timeframe, bars, meta=meta)
    stored = store.update_meta(source_name, request.symbol, request.timeframe, **meta)
    rows = stored.get("rows", 0)
    count = rows if isinstance(rows, int) else 0
    return WriteResult(count, count, 0, ())


# ----------------------------------------------------------------------------- the pipeline


class RunStage(Protocol):
    """How :func:`load_series` runs a stage: ``run_stage(name, fn, *args, **kwargs)`` returns
    what ``fn(*args, **kwargs)`` returns, ``fn`` being the core function of stage ``name``.
    :class:`DirectStages` calls it here; a flow runs it as its ``@task`` for ``name``. A stage
    stopped by a cancel raises :class:`~candleflow.errors.Cancelled`."""

    def __call__(self, name: str, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T: ...


class DirectStages:
    """The default :class:`RunStage`: each stage a span of ``tracker``, its function called here.

    A counting stage (fetch_segments) gets its span, sized by the argument the plan names, and
    the tracker's cancel token.
    """

    def __init__(self, tracker: ProgressTracker) -> None:
        self.tracker = tracker

    def __call__(self, name: str, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        stage = _STAGE_BY_NAME[name]
        if not stage.counts:
            with open_stage(self.tracker, name):
                return fn(*args, **kwargs)
        with open_stage(self.tracker, name, len(kwargs[stage.counts])) as span:
            return fn(*args, span=span, token=self.tracker.cancel_token, **kwargs)


class StoreFlush:
    """The fetch stage's ``flush``: keeps each batch of fetched bars for the merge and save stages
    and makes it safe at once — appended to the load's journal in the series directory
    (:mod:`candleflow.store.journal`; the save stage writes each partition once, then the journal
    goes), or, in a store without journals, written to the partitions. Either way a crash or a
    cancel loses at most the segment in flight.

    ``durable=False`` (a finite source: a file, which still holds every bar after a crash) keeps
    the batches in memory only, for the save stage to write once: journaling a whole file would
    write it twice."""

    def __init__(
        self, store: BarStore, source_name: str, request: LoadRequest, *, durable: bool = True
    ) -> None:
        self.store, self.source_name, self.request = store, source_name, request
        self.durable = durable
        self.journal = store.journal(source_name, request.symbol, request.timeframe)
        #: Each batch goes to the partitions as it comes (a durable load, a store without journals).
        self.writes_at_once = durable and self.journal is None
        self.frames: list[pd.DataFrame] = []
        self.rows_added = 0
        self.rows_fetched = 0  # as the source gave them (the progress events' "rows")

    def __call__(self, frame: pd.DataFrame) -> None:
        self.rows_fetched += len(frame)
        clean = drop_invalid_bars(frame)
        if self.writes_at_once:
            self.rows_added += save_bars(
                self.store, self.source_name, self.request, clean
            ).rows_added
        elif self.durable and self.journal is not None:
            self.journal.append(clean)
        self.frames.append(clean)

    def bars(self, rest: pd.DataFrame) -> pd.DataFrame:
        """Everything fetched in this run: the flushed batches plus ``rest``."""
        frames = [f for f in (*self.frames, rest) if len(f)]
        return pd.concat(frames) if frames else empty_bars()

    def unsaved(self, rest: pd.DataFrame) -> pd.DataFrame:
        """What the save stage writes: every bar fetched (journaled, or kept in memory), or only
        ``rest`` when the batches were written as they came."""
        return rest if self.writes_at_once else self.bars(rest)

    def saved(self) -> None:
        """The save stage wrote every fetched bar: the journal is not needed any more."""
        if self.journal is not None:
            self.journal.discard()

    def close(self) -> None:
        """Release the journal and keep it (the save did not happen): the next load folds it."""
        if self.journal is not None:
            self.journal.close()


def load_series(
    request: LoadRequest,
    source: Source,
    store: BarStore,
    *,
    tracker: ProgressTracker | None = None,
    run_stage: RunStage | None = None,
    now: pd.Timestamp | None = None,
    retry: RetryPolicy = RetryPolicy(),
) -> LoadSummary:
    """The eight stages in order, each through ``run_stage`` (default :class:`DirectStages` on
    ``tracker``); returns what the load did. The one composition of the stages.

    Fetched segments are journaled as they arrive (:class:`StoreFlush`), merged in memory with
    the stored bars, and written to the partitions once by the save stage. A cancel during the
    fetch still merges and saves what was fetched (``cancelled``); a segment that failed after
    its retries is reported (``failed_segments``); neither raises here —
    :meth:`LoadSummary.raise_for_outcome` does. The series metadata gets the alignment, head
    timestamp, last fetch, API calls (every source request of this load) and fetch duration, the
    instrument as the source resolved it, what the source records of the series (a file's name,
    layout and time zone), and after a clean load the completed range. The tracker completes
    unless the load was cancelled or fetched nothing.

    A finite source (a file: it has a ``tail_timestamp``) bounds the load to ``[head, tail]``:
    unset dates take its own range and one request covers it all. A range that ends before the
    source's first bar, starts after a finite source's last one, or starts in the future is not
    loaded: the summary's ``notice`` says so in one line, naming what the source holds, and
    nothing is written.
    """
    started = time.monotonic()
    tracker = tracker or ProgressTracker(f"load {request.label}", stages=stage_plan(request.mode))
    run: RunStage = run_stage or DirectStages(tracker)
    now = now or pd.Timestamp.now(tz="UTC")
    calls_before = source.api_calls
    instrument: Instrument | None = None
    head: pd.Timestamp | None = None
    notice = ""
    if request.mode is not LoadMode.LOCAL:
        instrument = run("validate_symbol", validate_symbol, source, request)
        head = run("check_head_timestamp", check_head_timestamp, source, instrument,
                   request.timeframe)  # fmt: skip
        # A finite source (a file) holds [head, tail]: plan nothing outside it, in one pass.
        tail = source_tail(source, instrument, request.timeframe)
        tail_end = None if tail is None else bar_end(request.timeframe, tail)
        notice = range_notice(request, source.name, head, tail_end, now)
        if tail_end is not None and head is not None and not notice:
            request = request.within(head, tail_end)
    existing = run("load_local", load_local, store, source.name, request)
    if notice:
        # Outside what the source holds: say so, write nothing.
        logger.info("%s", notice)
        tracker.complete()
        return _nothing_to_load(request, existing, source.api_calls - calls_before, notice,
                                time.monotonic() - started)  # fmt: skip
    completed = read_completed(store, source.name, request)
    stored = pd.DatetimeIndex(existing.index)
    request = resolve_alignment(request, None if instrument is None else source, stored)
    plan = run("analyze_gaps", analyze_gaps, request, stored, head, now)
    plan = run("plan_segments", plan_segments, request, plan, completed)
    fetched, cancelled, merged = FetchResult(empty_bars(), FetchStats()), False, existing
    flush = StoreFlush(store, source.name, request, durable=not is_finite(source))
    fetch_s = 0.0
    if instrument is not None:
        # One count of the load's API calls, rows and fetch time, read by the progress events,
        # the summary and the metadata alike (a cancel included: its fetch took time too).
        tracker.set_counter("api_calls", source.api_calls - calls_before)
        fetch_started = time.monotonic()
        try:
            try:
                fetched = run("fetch_segments", fetch_segments, source, instrument,
                              request.timeframe, segments=plan.segments, retry=retry,
                              flush=flush)  # fmt: skip
            except Cancelled:
                cancelled = True
            fetch_s = time.monotonic() - fetch_started
            tracker.set_counter("api_calls", source.api_calls - calls_before)
            tracker.set_counter("rows", flush.rows_fetched + len(fetched.bars))
            merged = run("merge_bars", merge_bars, existing, flush.bars(fetched.bars))
            meta: dict[str, object] = {
                "align": request.grid_align,
                "head_timestamp": head.isoformat() if head is not None else None,
                "last_fetch": now.isoformat(),
                "api_calls": source.api_calls - calls_before,
                "fetch_duration_s": round(fetch_s, 3),
            }
            meta["instrument"] = instrument.to_meta()  # the qualified contract, as resolved
            meta.update(series_meta(source, instrument, request.timeframe))
            if not cancelled and not fetched.errors:
                meta.update(completed.after(plan).to_meta())
            # Each touched partition written once, with every bar the journal holds.
            written = run("save_bars", save_bars, store, source.name, request,
                          flush.unsaved(fetched.bars), meta)  # fmt: skip
            flush.saved()
        finally:
            flush.close()  # after a failure the journal stays, for the next load to fold
        flush.rows_added += written.rows_added
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
        rows_added=flush.rows_added,
        segments=len(plan.segments),
        api_calls=source.api_calls - calls_before,
        duration_s=time.monotonic() - started,
        gaps_left=len(final.missing),
        missing_bars_left=final.bars(GapClass.MISSING),
        failed_segments=fetched.errors,
        cancelled=cancelled,
        rows_fetched=flush.rows_fetched + len(fetched.bars),
        fetch_duration_s=fetch_s,
    )
    if not summary.cancelled and not summary.nothing_fetched:
        tracker.complete()
    return summary


def _nothing_to_load(
    request: LoadRequest, existing: pd.DataFrame, api_calls: int, notice: str, duration_s: float
) -> LoadSummary:
    """The summary of a load whose range lies outside what the source holds."""
    bounds = [t for t in (request.start, request.end) if t is not None]
    start, end = bounds[0], bounds[-1]  # a range outside the source has at least one bound
    rows = len(existing)
    return LoadSummary(
        symbol=request.symbol, timeframe=request.timeframe.name, mode=request.mode.value,
        start=start, end=max(start, end), rows_before=rows, rows_after=rows, rows_added=0,
        segments=0, api_calls=api_calls, duration_s=duration_s, gaps_left=0,
        missing_bars_left=0, notice=notice,
    )  # fmt: skip


def run_load(
    request: LoadRequest,
    source: Source,
    store: BarStore,
    *,
    tracker: ProgressTracker | None = None,
    now: pd.Timestamp | None = None,
    retry: RetryPolicy = RetryPolicy(),
) -> LoadSummary:
    """All stages in order without an orchestrator (:func:`load_series`); returns what it did.

    Raises ``Cancelled`` (after saving what was fetched; the summary is its ``partial``) when
    the tracker's token is cancelled, and ``CandleflowError`` when no segment could be fetched.
    """
    summary = load_series(request, source, store, tracker=tracker, now=now, retry=retry)
    summary.raise_for_outcome()
    return summary


def record_backfill(
    store: BarStore, source_name: str, load: LoadSummary, now: pd.Timestamp | None = None
) -> dict[str, object]:
    """Record a series' successful backfill in its metadata, beside what its load recorded:
    ``history_rows``, ``api_calls_last_run``, ``api_calls_total`` (cumulative over runs),
    ``batch_size`` (the longest span one request may cover for the timeframe),
    ``segments_last_run`` and ``last_success``. Returns the metadata as stored."""
    meta = store.read_meta(source_name, load.symbol, load.timeframe)
    before = meta.get("api_calls_total", 0)
    return store.update_meta(
        source_name,
        load.symbol,
        load.timeframe,
        history_rows=load.rows_after,
        api_calls_last_run=load.api_calls,
        api_calls_total=int(str(before or 0)) + load.api_calls,
        batch_size=parse_timeframe(load.timeframe).ib_max_duration,
        segments_last_run=load.segments,
        last_success=now or pd.Timestamp.now(tz="UTC"),
    )
