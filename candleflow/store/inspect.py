"""What the store holds for one series: rows, range, partitions, metadata and the gaps left.

:func:`describe_series` reads a series (``source``/``symbol``/``timeframe``) and checks its bars
against the exchange calendar over ``[first bar, end of last bar)``, so only interior gaps are
reported — what lies before the first or after the last stored bar is a matter for a load, not
for a description. Gaps carry their class (``missing``, ``before_head``, ``future``); bars that
are not on the calendar's grid are counted as ``unexpected``. :meth:`SeriesReport.to_dict` is the
JSON form for scripts (``candleflow show --json``) and :func:`render_text` the form for people.
An absent series is described as empty (0 rows, no range, no gaps); an unreadable file raises
``StoreCorrupted`` naming it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import pandas as pd

from candleflow.errors import InvalidRequest, StoreCorrupted
from candleflow.loading.calendars import (
    Alignment,
    calendar_tz,
    detect_alignment,
    expected_bars,
    get_calendar,
    parse_alignment,
)
from candleflow.loading.gaps import analyze_gaps
from candleflow.models import Gap, GapClass, parse_symbol
from candleflow.store.bar_store import BarStore, validate_source_name
from candleflow.timeframes import Timeframe, parse_timeframe

logger = logging.getLogger(__name__)

__all__ = ["PartitionInfo", "SeriesReport", "describe_series", "render_text"]

_SHOWN_GAPS = 20


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition file: its path relative to the store root (``/``-separated) and row count."""

    path: str
    rows: int

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "rows": self.rows}


@dataclass(frozen=True, slots=True)
class SeriesReport:
    """A stored series at a glance; timestamps are tz-aware UTC, ``first``/``last`` bar starts.

    ``expected`` counts the calendar's bars in ``[first, end of last)``, ``present`` the stored
    bars on that grid, ``unexpected`` the stored bars off it (another alignment, closed hours).
    ``align`` is the grid used; ``meta`` is the series' ``_meta.json`` as stored.
    """

    source: str
    symbol: str
    timeframe: str
    calendar: str
    align: Alignment
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    partitions: tuple[PartitionInfo, ...] = ()
    meta: dict[str, object] = field(default_factory=dict)
    expected: int = 0
    present: int = 0
    unexpected: int = 0
    gaps: tuple[Gap, ...] = ()

    def bars(self, kind: GapClass | None = None) -> int:
        """Absent bars in the gaps of class ``kind`` (all classes when ``None``)."""
        return sum(g.bars for g in self.gaps if kind is None or g.kind == kind)

    @property
    def missing_bars(self) -> int:
        return self.bars(GapClass.MISSING)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ISO-8601 UTC strings (or ``None``) for times, plain lists and numbers."""
        return {
            "source": self.source,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "calendar": self.calendar,
            "align": self.align,
            "rows": self.rows,
            "first": _iso(self.first),
            "last": _iso(self.last),
            "partitions": [p.to_dict() for p in self.partitions],
            "expected": self.expected,
            "present": self.present,
            "unexpected": self.unexpected,
            "missing_bars": self.missing_bars,
            "gaps": [g.to_dict() for g in self.gaps],
            "meta": dict(self.meta),
        }


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None else ts.isoformat()


def describe_series(
    store: BarStore,
    source: str,
    symbol: str,
    timeframe: Timeframe | str,
    *,
    calendar: str = "XNYS",
    align: str | None = None,
    head: pd.Timestamp | None = None,
    now: pd.Timestamp | None = None,
) -> SeriesReport:
    """Describe the stored series ``source``/``symbol``/``timeframe`` (see the module docstring).

    ``align`` is ``"clock"`` or ``"session"``; ``None`` takes the ``align`` recorded in the
    series' metadata, else the grid the stored bars follow (:func:`detect_alignment`), else
    ``"clock"``. ``head`` (the source's earliest bar; bars before it are ``before_head``)
    defaults to the metadata's ``head_timestamp``; ``now`` (bars ending after it are ``future``)
    defaults to the current time. Bad names raise ``InvalidRequest``; an unreadable partition or
    metadata file raises ``StoreCorrupted``.
    """
    validate_source_name(source)
    symbol = parse_symbol(symbol)
    tf = parse_timeframe(timeframe)
    get_calendar(calendar)  # an unknown calendar is bad input even for an empty series
    chosen = parse_alignment(align) if align is not None else None
    head = _utc_or_none(head, "head")
    now = _utc_or_none(now, "now") or pd.Timestamp.now(tz="UTC")

    bars = store.read(source, symbol, tf)
    meta = store.read_meta(source, symbol, tf)
    partitions = tuple(
        PartitionInfo(path, rows) for path, rows in store.partition_rows(source, symbol, tf)
    )
    index = pd.DatetimeIndex(bars.index)
    if chosen is None:
        chosen = _stored_alignment(store, source, symbol, tf, meta, index, calendar)
    if head is None:
        head = _meta_head(store, source, symbol, tf, meta)
    report = SeriesReport(
        source=source,
        symbol=symbol,
        timeframe=tf.name,
        calendar=calendar,
        align=chosen,
        rows=len(index),
        first=None,
        last=None,
        partitions=partitions,
        meta=meta,
    )
    if len(index) == 0:
        return report

    first, last = pd.Timestamp(index[0]), pd.Timestamp(index[-1])
    end = _bar_end(calendar, tf, first, last, chosen)
    gaps = analyze_gaps(index, calendar, tf, first, end, head=head, now=now, align=chosen)
    return dataclasses.replace(
        report,
        first=first,
        last=last,
        expected=gaps.expected,
        present=gaps.present,
        # Every stored bar lies in [first, last], so whatever is not on the grid is unexpected
        # (the gap report alone would miss off-grid bars before the first expected bar).
        unexpected=len(index) - gaps.present,
        gaps=gaps.gaps,
    )


def _utc_or_none(value: pd.Timestamp | None, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise InvalidRequest(f"{name}={value!r} is tz-naive; pass a tz-aware timestamp")
    return ts.tz_convert("UTC")


def _bar_end(
    calendar: str, tf: Timeframe, first: pd.Timestamp, last: pd.Timestamp, align: Alignment
) -> pd.Timestamp:
    """The end of the calendar's bar that starts at ``last`` (bars may be cut short at a close).

    ``last + bar length`` would reach into the next bar when the last one is short — a 09:30
    clock bar ends at 10:00 — and report that next bar as missing.
    """
    grid = expected_bars(calendar, tf, first, last + tf.delta, align=align)
    k = int(grid.starts.searchsorted(last, side="right"))
    end = pd.Timestamp(grid.ends[k - 1]) if k else last
    # An off-grid ``last`` is still covered, without expecting any bar after it.
    return max(end, last + pd.Timedelta(1, "ns"))


def _stored_alignment(
    store: BarStore,
    source: str,
    symbol: str,
    tf: Timeframe,
    meta: dict[str, object],
    index: pd.DatetimeIndex,
    calendar: str,
) -> Alignment:
    recorded = meta.get("align")
    if recorded is not None:
        try:
            return parse_alignment(str(recorded))
        except InvalidRequest as exc:
            path = store.meta_path(source, symbol, tf)
            raise StoreCorrupted(str(path), f"align is {recorded!r}, not clock or session") from exc
    try:
        return detect_alignment(index, calendar, tf)
    except InvalidRequest as exc:
        # A mixed series is still described; its off-grid bars show up as unexpected.
        logger.debug("%s/%s/%s: %s; using clock alignment", source, symbol, tf, exc)
        return "clock"


def _meta_head(
    store: BarStore, source: str, symbol: str, tf: Timeframe, meta: dict[str, object]
) -> pd.Timestamp | None:
    recorded = meta.get("head_timestamp")
    if recorded is None:
        return None
    path = store.meta_path(source, symbol, tf)
    try:
        ts = pd.Timestamp(recorded)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise StoreCorrupted(str(path), f"head_timestamp {recorded!r} is not a time") from exc
    if pd.isna(ts) or ts.tzinfo is None:
        raise StoreCorrupted(str(path), f"head_timestamp {recorded!r} has no UTC offset")
    return ts.tz_convert("UTC")


# -- text for people ------------------------------------------------------------------------


def render_text(report: SeriesReport, *, max_gaps: int = _SHOWN_GAPS) -> str:
    """A few aligned lines for a terminal; times in the exchange's zone, daily bars as dates."""
    tz = calendar_tz(report.calendar)
    daily = parse_timeframe(report.timeframe).is_daily

    def when(ts: pd.Timestamp) -> str:
        if daily:
            return ts.strftime("%Y-%m-%d")
        return ts.tz_convert(tz).strftime("%Y-%m-%d %H:%M %Z")

    title = f"{report.source}/{report.symbol}/{report.timeframe}"
    lines = [f"{title}  ({report.calendar}, {report.align}-aligned bars)"]
    if report.rows == 0 or report.first is None or report.last is None:
        lines.append("rows        0 (nothing stored)")
        return "\n".join(lines)
    lines.append(f"rows        {report.rows:,}")
    lines.append(f"range       {when(report.first)} → {when(report.last)}")
    parts = ", ".join(f"{p.path.rsplit('/', 1)[-1]} ({p.rows:,})" for p in report.partitions)
    lines.append(f"partitions  {len(report.partitions)}: {parts}")
    lines.append(
        f"calendar    {report.expected:,} bars expected, {report.present:,} present, "
        f"{report.unexpected:,} off the calendar grid"
    )
    if not report.gaps:
        lines.append("gaps        none")
        return "\n".join(lines)
    by_class = ", ".join(
        f"{report.bars(kind):,} {kind.value}" for kind in GapClass if report.bars(kind)
    )
    lines.append(f"gaps        {len(report.gaps):,} ({by_class} bars)")
    width = max(len(g.kind.value) for g in report.gaps)
    for gap in report.gaps[:max_gaps]:
        lines.append(
            f"  {gap.kind.value:<{width}}  {when(gap.start)} → {when(gap.end)}  "
            f"{gap.bars:,} bar{'s' if gap.bars != 1 else ''}"
        )
    if len(report.gaps) > max_gaps:
        lines.append(f"  … and {len(report.gaps) - max_gaps:,} more (--json lists them all)")
    return "\n".join(lines)
