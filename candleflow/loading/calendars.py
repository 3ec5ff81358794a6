"""Expected bar timestamps from real exchange calendars (``exchange_calendars``).

The expected index of a timeframe is the calendar's trading minutes grouped into that timeframe's
bars, so closed periods (nights, weekends, holidays, lunch breaks) never produce bars and early
closes give short days. Two alignments of intraday bars are supported:

* ``clock`` (IB's): bars start on multiples of the bar length from local midnight in the exchange's
  time zone, and the first bar of a trading period starts at the open — hourly XNYS bars are
  09:30, 10:00, 11:00, …, 15:00 (7 on a normal day, 4 on an early close);
* ``session`` (many vendors'): bars start every bar length from the open — 09:30, 10:30, ….

Daily bars are labelled with the session date at midnight UTC; a session belongs to a range
``[start, end)`` when its close falls in ``(start, end]`` (so "from 2024-01-02" includes the CME
session of that date that opened the evening before).

Two calendars exchange_calendars lacks are registered here, beside its own:

* ``FX`` — the interbank forex week (IB's IDEALPRO): sessions from 17:00 New York the evening
  before to 17:00 New York, Monday to Friday, so the week runs Sunday 17:00 to Friday 17:00 and
  nothing trades on Saturday; no holidays (the market trades through them, thinly).
* ``GLOBEX`` — CME Globex for futures: exchange_calendars' ``CMES`` (holidays, and the 12:00 CT
  early closes of US holidays) with the session ending at 16:00 Chicago instead of 17:00, which
  leaves the daily maintenance break 16:00–17:00 CT when nothing trades. (``CMES`` itself runs
  each session into the next one without a break.)
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import numpy as np
import pandas as pd
from exchange_calendars.exchange_calendar import HolidayCalendar
from exchange_calendars.exchange_calendar_cmes import CMESExchangeCalendar

from candleflow.errors import InvalidRequest
from candleflow.instruments import FX_CALENDAR, GLOBEX_CALENDAR
from candleflow.models import INDEX_NAME, parse_timestamp
from candleflow.timeframes import Timeframe, parse_timeframe

Alignment = Literal["clock", "session"]
ALIGNMENTS: tuple[str, ...] = ("clock", "session")
DEFAULT_CALENDAR = "XNYS"
_EARLIEST = pd.Timestamp("1990-01-01")
_MINUTE = pd.Timedelta(minutes=1)


class FXCalendar(xcals.ExchangeCalendar):  # type: ignore[misc]
    """The forex week: sessions 17:00 to 17:00 New York, opening the evening before, Mon–Fri."""

    name = FX_CALENDAR
    tz = ZoneInfo("America/New_York")
    open_times = ((None, dt.time(17)),)
    close_times = ((None, dt.time(17)),)

    @property
    def open_offset(self) -> int:
        return -1

    @property
    def regular_holidays(self) -> HolidayCalendar:
        return HolidayCalendar([])


class GlobexCalendar(CMESExchangeCalendar):  # type: ignore[misc]
    """CME Globex: ``CMES`` with sessions ending at 16:00 CT (the daily maintenance break)."""

    name = GLOBEX_CALENDAR
    close_times = ((None, dt.time(16)),)


for _calendar in (FXCalendar, GlobexCalendar):
    xcals.register_calendar_type(_calendar.name, _calendar, force=True)


@dataclass(frozen=True, slots=True)
class BarGrid:
    """Expected bars: ``starts[i]`` to ``ends[i]`` (UTC); ends are clipped at the period close."""

    starts: pd.DatetimeIndex
    ends: pd.DatetimeIndex

    def __len__(self) -> int:
        return len(self.starts)


def calendar_names() -> list[str]:
    return sorted(xcals.get_calendar_names(include_aliases=True))


@functools.lru_cache(maxsize=64)
def _load_calendar(name: str, first_year: int) -> Any:
    start = pd.Timestamp(year=first_year, month=1, day=1)
    try:
        return xcals.get_calendar(name, start=start, side="left")
    except xcals.errors.InvalidCalendarName:
        raise InvalidRequest(
            f"unknown calendar {name!r}: use an exchange_calendars name such as XNYS, XLON, "
            "CMES, or GLOBEX (CME futures) or FX (forex 24/5) (`candleflow calendars` lists them)"
        ) from None
    except ValueError:
        # Some calendars cannot start as early as asked; their own default bounds will do.
        return xcals.get_calendar(name, side="left")


def get_calendar(name: str = DEFAULT_CALENDAR, start: pd.Timestamp | None = None) -> Any:
    """The ``exchange_calendars`` calendar ``name`` covering ``start`` onwards (cached)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(f"calendar name must be a non-empty string, got {name!r}")
    year = _EARLIEST.year if start is None else min(_EARLIEST.year, pd.Timestamp(start).year)
    return _load_calendar(name.strip(), year)


def calendar_tz(name: str) -> tzinfo:
    tz: tzinfo = get_calendar(name).tz
    return tz


def parse_alignment(value: str) -> Alignment:
    if value == "clock":
        return "clock"
    if value == "session":
        return "session"
    raise InvalidRequest(f"unknown bar alignment {value!r}: use 'clock' or 'session'")


def to_utc(value: object, calendar: str = DEFAULT_CALENDAR) -> pd.Timestamp:
    """A timestamp as tz-aware UTC; naive values are read in the calendar's time zone."""
    return parse_timestamp(value, what="date/time", naive_tz=calendar_tz(calendar))


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    if ts.tzinfo is None:
        raise InvalidRequest(f"timestamp {ts} has no time zone; candleflow works in UTC")
    return ts.tz_convert("UTC")


def expected_bars(
    calendar: str,
    timeframe: Timeframe | str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    align: Alignment = "clock",
) -> BarGrid:
    """The bars ``calendar`` expects for ``timeframe`` in ``[start, end)`` (tz-aware bounds).

    The last few grids are kept (a load asks for its window's grid at each stage; 2 million
    1-minute bars take a tenth of a second each time); a grid is immutable, so sharing is safe.
    """
    tf = parse_timeframe(timeframe)
    start, end = _utc(start), _utc(end)
    if end <= start:
        return _empty_grid()
    return _cached_grid(calendar, tf, start, end, align)


@functools.lru_cache(maxsize=4)
def _cached_grid(
    calendar: str, tf: Timeframe, start: pd.Timestamp, end: pd.Timestamp, align: Alignment
) -> BarGrid:
    cal = get_calendar(calendar, start.tz_convert(None))
    if tf.is_daily:
        return _daily_grid(cal, start, end)
    return _intraday_grid(cal, tf, start, end, align)


def _empty_grid() -> BarGrid:
    empty = pd.DatetimeIndex([], tz="UTC", name=INDEX_NAME).as_unit("ns")
    return BarGrid(empty, empty)


def _daily_grid(cal: Any, start: pd.Timestamp, end: pd.Timestamp) -> BarGrid:
    schedule = cal.schedule
    closes = pd.DatetimeIndex(schedule["close"]).tz_convert("UTC")
    keep = (closes > start) & (closes <= end)
    labels = pd.DatetimeIndex(schedule.index[keep]).as_unit("ns")
    starts = labels.tz_localize("UTC").rename(INDEX_NAME)
    return BarGrid(starts, (starts + pd.Timedelta(days=1)).rename(INDEX_NAME))


def _intraday_grid(
    cal: Any, tf: Timeframe, start: pd.Timestamp, end: pd.Timestamp, align: Alignment
) -> BarGrid:
    first, last = cal.first_minute, cal.last_minute
    lo, hi = max(start, first), min(end - _MINUTE, last)
    if hi < lo:
        return _empty_grid()
    minutes = pd.DatetimeIndex(cal.minutes_in_range(lo, hi)).as_unit("ns")
    if len(minutes) == 0:
        return _empty_grid()
    period_start = _period_starts(cal, minutes)
    step = np.int64(tf.minutes * 60 * 1_000_000_000)
    m = minutes.asi8
    if align == "clock":
        # Floor on the exchange's wall clock, then back to UTC with each minute's own offset.
        local = minutes.tz_convert(cal.tz).tz_localize(None).asi8
        floored = m - (local % step)
    else:
        floored = period_start + ((m - period_start) // step) * step
    bar_start = np.maximum(floored, period_start)
    # Minutes are sorted, so bar starts are non-decreasing: runs of equal values are one bar.
    boundary = np.empty(len(bar_start), dtype=bool)
    boundary[0] = True
    np.not_equal(bar_start[1:], bar_start[:-1], out=boundary[1:])
    first_idx = np.flatnonzero(boundary)
    last_idx = np.append(first_idx[1:] - 1, len(m) - 1)
    starts = pd.DatetimeIndex(bar_start[first_idx], tz="UTC", name=INDEX_NAME).as_unit("ns")
    ends = pd.DatetimeIndex(m[last_idx] + 60_000_000_000, tz="UTC", name=INDEX_NAME).as_unit("ns")
    return BarGrid(starts, ends)


def _period_starts(cal: Any, minutes: pd.DatetimeIndex) -> np.ndarray[Any, np.dtype[np.int64]]:
    """For each trading minute, when its trading period began (the open, or the break's end)."""
    sessions = cal.minutes_to_sessions(minutes)
    schedule = cal.schedule.loc[sessions]
    opens = pd.DatetimeIndex(schedule["open"]).tz_convert("UTC").as_unit("ns").asi8
    out: np.ndarray[Any, np.dtype[np.int64]] = opens.copy()
    break_end = pd.DatetimeIndex(schedule["break_end"])
    if break_end.notna().any():
        be = break_end.tz_convert("UTC").as_unit("ns")
        has_break = np.asarray(be.notna())
        be_i8 = np.where(has_break, be.asi8, np.iinfo(np.int64).max)
        after_break = minutes.asi8 >= be_i8
        out = np.where(after_break, be_i8, out)
    return out


# A file's alignment is the grid holding more than half of its bars and at least this share of the
# bars on which the two grids disagree; anything less is a mixed or mis-zoned file, not a guess.
_ALIGNMENT_CLEAR_SHARE = 0.9
_ALIGNMENT_EXAMPLES = 3


def detect_alignment(
    index: pd.DatetimeIndex, calendar: str, timeframe: Timeframe | str
) -> Alignment:
    """Whether intraday bar starts in ``index`` follow the ``clock`` or the ``session`` grid.

    IB stamps hourly XNYS bars 09:30, 10:00, 11:00, … (``clock``); many vendors stamp them 09:30,
    10:30, … (``session``). The grid that explains more than half of the bars, and at least 90 %
    of the bars on which the two grids disagree, wins. Daily bars, an empty index, and bars that
    sit on both grids alike (e.g. 30-minute XNYS bars, where the grids coincide) give ``clock``.
    Raises ``InvalidRequest`` when neither grid explains a clear majority, saying what was found
    and naming the ``align`` parameter to set. ``index`` must be tz-aware.
    """
    tf = parse_timeframe(timeframe)
    if not isinstance(index, pd.DatetimeIndex):
        raise InvalidRequest(
            f"bar alignment needs a DatetimeIndex of bar starts, got {type(index).__name__}"
        )
    if index.tz is None:
        raise InvalidRequest(
            "bar alignment needs tz-aware bar starts; localise the index first, e.g. "
            "index.tz_localize('America/New_York').tz_convert('UTC')"
        )
    cal = get_calendar(calendar)
    starts = pd.DatetimeIndex(index.dropna().unique()).tz_convert("UTC").as_unit("ns")
    if tf.is_daily or len(starts) == 0:
        return "clock"
    lo, hi = starts.min(), starts.max() + tf.delta
    clock = expected_bars(calendar, tf, lo, hi, align="clock").starts
    session = expected_bars(calendar, tf, lo, hi, align="session").starts
    on_clock = np.asarray(starts.isin(clock))
    on_session = np.asarray(starts.isin(session))
    n_clock, n_session = int(on_clock.sum()), int(on_session.sum())
    clock_only = int((on_clock & ~on_session).sum())
    session_only = int((on_session & ~on_clock).sum())
    disputed = clock_only + session_only
    total = len(starts)
    if n_clock >= n_session:
        best: Alignment = "clock"
        n_best, best_only = n_clock, clock_only
    else:
        best, n_best, best_only = "session", n_session, session_only
    if 2 * n_best > total and best_only >= _ALIGNMENT_CLEAR_SHARE * disputed:
        return best
    raise InvalidRequest(
        f"cannot tell the alignment of these {tf} bars on {calendar}: of {total:,} bars, "
        f"{n_clock:,} start on the clock grid ({_grid_example(clock, cal.tz)}, …) and "
        f"{n_session:,} on the session grid ({_grid_example(session, cal.tz)}, …); "
        f"most common start times ({cal.tz}): {_common_times(starts, cal.tz)}. "
        "Choose the alignment, clock or session, or check the file's time zone",
        "align",
    )


def _grid_example(grid: pd.DatetimeIndex, tz: tzinfo) -> str:
    if len(grid) == 0:
        return "no bars"
    local = grid[:_ALIGNMENT_EXAMPLES].tz_convert(tz)
    return ", ".join(f"{ts.hour:02d}:{ts.minute:02d}" for ts in local)


def _common_times(starts: pd.DatetimeIndex, tz: tzinfo) -> str:
    local = starts.tz_convert(tz)
    # Minutes after local midnight: cheap to count even for millions of bars, unlike strftime.
    minutes = np.asarray(local.hour, dtype=np.int64) * 60 + np.asarray(local.minute)
    values, counts = np.unique(minutes, return_counts=True)
    # Most frequent first; a stable sort keeps ties in time-of-day order.
    top = np.argsort(-counts, kind="stable")[:_ALIGNMENT_EXAMPLES]
    return ", ".join(
        f"{int(values[i]) // 60:02d}:{int(values[i]) % 60:02d} ({int(counts[i]):,})" for i in top
    )
