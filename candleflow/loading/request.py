"""What a load is asked to do and what it did: the request, its plan, the completed range, and
the summary (DESIGN §2).

:class:`LoadRequest` is parsed once from user input; :class:`LoadPlan` is what the gap analysis
and the segment planner made of it; :class:`Completed` is the range earlier clean loads finished
(kept in the series metadata); :class:`LoadSummary` is what the pipeline
(:mod:`candleflow.loading.pipeline`) reports — the same record, with the same wording, whether the
stages ran directly or as an orchestrator's tasks.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import pandas as pd

from candleflow.errors import Cancelled, CandleflowError, InvalidRequest
from candleflow.loading.calendars import (
    Alignment,
    calendar_tz,
    detect_alignment,
    get_calendar,
    parse_alignment,
    to_utc,
)
from candleflow.loading.gaps import GapReport
from candleflow.models import GapClass, LoadMode, Segment, parse_symbol
from candleflow.sources.base import Source
from candleflow.store.bar_store import BarStore
from candleflow.timeframes import Timeframe, parse_timeframe

__all__ = [
    "Completed",
    "LoadPlan",
    "LoadRequest",
    "LoadSummary",
    "bar_end",
    "range_notice",
    "read_completed",
    "resolve_alignment",
]


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
    #: The longest span one source request may cover (``None``: the timeframe's IB maximum);
    #: a finite source is read in one pass (:meth:`within`).
    max_span: pd.Timedelta | None = None
    #: Bounded to what a finite source holds (:meth:`within`): every gap in it is filled,
    #: whatever the mode (an import of older bars than those stored is not a "tail").
    finite: bool = False

    @classmethod
    def parse(
        cls,
        symbol: str,
        timeframe: str | Timeframe = "1h",
        *,
        start: object = None,
        end: object = None,
        mode: str | LoadMode = "tail",
        calendar: str | None = None,
        align: str = "auto",
    ) -> LoadRequest:
        """Validate user input; naive dates are exchange-local, a date-only ``end`` is inclusive.

        ``calendar`` ``None`` (or empty) takes the instrument's own: ``XNYS`` for US stocks,
        ``FX`` for forex, ``GLOBEX`` for futures (:func:`candleflow.instruments.default_calendar`).
        """
        if not isinstance(symbol, str) or not symbol.strip():
            raise InvalidRequest(f"symbol must be a non-empty string, got {symbol!r}")
        name = parse_symbol(symbol)  # the canonical key: eurusd:fx and EUR.USD are one series
        tf = parse_timeframe(timeframe)
        load_mode = LoadMode.parse(mode)
        if not calendar:
            from candleflow.instruments import default_calendar

            calendar = default_calendar(name)
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
        return cls(name, tf, load_mode, lo, hi, calendar, alignment)

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.timeframe.name}"

    @property
    def grid_align(self) -> Alignment:
        """The alignment the calendar grid uses (``clock`` while still undecided)."""
        return self.align or "clock"

    def within(self, first: pd.Timestamp, end: pd.Timestamp) -> LoadRequest:
        """This request for a finite source holding the bars of ``[first, end)``: the range is
        clipped to it (an unset bound takes the source's own), one request covers it all, and
        every gap in it is filled whatever the mode."""
        lo = first if self.start is None else max(self.start, first)
        hi = end if self.end is None else min(self.end, end)
        span = max(end - first, _DAY)
        return replace(self, start=lo, end=max(lo, hi), max_span=span, finite=True)


_DAY = pd.Timedelta(days=1)


def bar_end(timeframe: Timeframe, start: pd.Timestamp) -> pd.Timestamp:
    """When the bar starting at ``start`` ends (a daily bar: the next midnight UTC)."""
    return start + (_DAY if timeframe.is_daily else timeframe.delta)


def range_notice(
    request: LoadRequest,
    source_name: str,
    head: pd.Timestamp | None,
    tail_end: pd.Timestamp | None,
    now: pd.Timestamp,
) -> str:
    """One line saying why the requested range holds nothing to load — it ends before the
    source's first bar, starts after its last one, or starts in the future — naming the range
    the source holds; ``""`` when the range overlaps it (or leaves a bound to the source)."""
    holds_end = now if tail_end is None else min(tail_end, now)
    lo, hi = request.start, request.end
    last = None if tail_end is None else tail_end - _last_bar(request)
    reason = ""
    if hi is not None and head is not None and hi <= head:
        reason = "ends before the first bar"
    elif lo is not None and lo >= now:
        reason = "starts in the future"
    elif lo is not None and last is not None and lo >= holds_end:
        reason = "starts after the last bar"
    if not reason:
        return ""
    wanted = "…" if lo is None else _when(lo, request)
    wanted += " → " + ("…" if hi is None else _when(hi - pd.Timedelta(1), request))
    first = "…" if head is None else _when(head, request, bar=True)
    held = f"{first} → {'now' if last is None else _when(last, request, bar=True)}"
    zone = "" if request.timeframe.is_daily else f" ({calendar_tz(request.calendar)})"
    return (
        f"nothing to load for {request.label}: {wanted} {reason}; source {source_name!r} "
        f"holds {held}{zone}"
    )


def _last_bar(request: LoadRequest) -> pd.Timedelta:
    return _DAY if request.timeframe.is_daily else request.timeframe.delta


def _when(ts: pd.Timestamp, request: LoadRequest, *, bar: bool = False) -> str:
    """``ts`` on the exchange's clock: a date for daily bars (a daily ``bar``'s label is its
    session date at midnight UTC), else date and time."""
    if request.timeframe.is_daily and bar:
        return f"{ts.tz_convert('UTC'):%Y-%m-%d}"
    local = ts.tz_convert(calendar_tz(request.calendar))
    return f"{local:%Y-%m-%d}" if request.timeframe.is_daily else f"{local:%Y-%m-%d %H:%M}"


def resolve_alignment(
    request: LoadRequest, source: Source | None, stored: pd.DatetimeIndex
) -> LoadRequest:
    """Decide an ``auto`` alignment: from the file a ``files`` source reads, else from the bars
    already stored, else IB's ``clock`` grid. A file whose grid is unclear raises
    ``InvalidRequest`` asking for an ``align``; stored bars that are unclear fall back to clock.
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
class Completed:
    """The range ``[start, end)`` that earlier loads of a series finished cleanly.

    Recorded in the series metadata only by a load that ran every planned segment without a
    failure, so a cancelled or crashed load leaves it as it was and the next ``tail`` or
    ``backfill`` still sees the hole the interrupted load left (tail fetches newest first).
    """

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, object]) -> Completed:
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
    #: Bars the source returned in this run (the progress events' "rows" counter).
    rows_fetched: int = 0
    #: Seconds spent fetching (the metadata's ``fetch_duration_s``; a cancelled fetch too).
    fetch_duration_s: float = 0.0
    #: Why nothing was loaded, when the range lies outside what the source holds (one line).
    notice: str = ""

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.timeframe}"

    @property
    def nothing_fetched(self) -> bool:
        """Every planned segment failed: the load got nothing, which is a failure, not a result."""
        return bool(self.segments) and len(self.failed_segments) == self.segments

    @property
    def outcome(self) -> str:
        """What a stopped load kept: "1,234 new bars saved, 56 bars still missing"."""
        return f"{self.rows_added:,} new bars saved, {self.missing_bars_left:,} bars still missing"

    def raise_for_outcome(self) -> None:
        """Raise ``Cancelled`` (with this summary as ``partial``) for a cancelled load, and a
        ``CandleflowError`` naming the first error when nothing could be fetched."""
        if self.cancelled:
            raise Cancelled(f"load {self.label} cancelled: {self.outcome}", partial=self)
        if self.nothing_fetched:
            raise CandleflowError(
                f"load {self.label}: none of the {self.segments} segments could be fetched "
                f"(first error: {self.failed_segments[0]})"
            )

    def report(self) -> tuple[str, list[tuple[str, object]]]:
        """A title and (name, value) rows of this summary, as a run report shows it."""
        state = "cancelled" if self.cancelled else "completed"
        rows: list[tuple[str, object]] = [
            ("range", f"{self.start.isoformat()} → {self.end.isoformat()}"),
            ("bars fetched", f"{self.rows_fetched:,}"),
            ("rows added", f"{self.rows_added:,}"),
            ("rows stored", f"{self.rows_after:,}"),
            ("segments", self.segments),
            ("API calls", self.api_calls),
            ("gaps left", f"{self.gaps_left} ({self.missing_bars_left:,} bars missing)"),
            ("failed segments", "; ".join(self.failed_segments) or "none"),
            ("fetch duration", f"{self.fetch_duration_s:.2f} s"),
            ("duration", f"{self.duration_s:.2f} s"),
        ]
        if self.notice:
            rows.insert(0, ("notice", self.notice))
        return f"load {self.label} ({self.mode}) {state}", rows

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
            "rows_fetched": self.rows_fetched,
            "fetch_duration_s": round(self.fetch_duration_s, 3),
            "notice": self.notice,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LoadSummary:
        """A summary back from :meth:`to_dict` (a flow run's plain-dict result)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["start"] = pd.Timestamp(str(values["start"]))
        values["end"] = pd.Timestamp(str(values["end"]))
        failed = values.get("failed_segments") or []
        values["failed_segments"] = (
            tuple(str(f) for f in failed) if isinstance(failed, list | tuple) else ()
        )
        return cls(**values)  # type: ignore[arg-type]
