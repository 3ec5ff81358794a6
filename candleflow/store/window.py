"""Bars out of the store: which sources hold a series, the bars of a date window, and those bars
as CSV or JSON records in exchange time.

``candleflow show SYMBOL --start … --end …`` and ``--csv``/``--json`` are built on these, so bars
can be handed to another tool. The written form reads back through the files source to the same
bars: intraday times carry their UTC offset (``2024-02-01T09:30:00-05:00``), daily bars are
written as their session date (``2018-12-03``), the label the store keeps for them.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import tzinfo

import pandas as pd

from candleflow.errors import InvalidRequest
from candleflow.models import BAR_COLUMNS, INDEX_NAME, parse_symbol, parse_timestamp
from candleflow.store.bar_store import BarStore
from candleflow.timeframes import Timeframe, parse_timeframe

__all__ = ["Window", "bar_records", "bars_csv", "find_sources", "parse_window", "read_window"]


def find_sources(store: BarStore, symbol: str, timeframe: Timeframe | str) -> list[str]:
    """The sources that hold ``symbol`` at ``timeframe`` in ``store``, sorted."""
    wanted, tf = parse_symbol(symbol), parse_timeframe(timeframe)
    return [src for src, sym, name in store.series() if sym == wanted and name == tf.name]


@dataclass(frozen=True, slots=True)
class Window:
    """Bars starting in ``[start, end)`` (either bound open), tz-aware UTC."""

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None


def parse_window(
    start: object, end: object, timeframe: Timeframe | str, tz: str | tzinfo
) -> Window:
    """The window of ``--start``/``--end`` as a user means it.

    Naive values are exchange time (``tz``); a date-only ``end`` is inclusive. For daily bars the
    window is a range of session dates: the store labels a session by midnight UTC of its date,
    so dates are compared as dates, not as exchange-time instants.
    """
    tf = parse_timeframe(timeframe)
    lo = None if start in (None, "") else parse_timestamp(start, what="start", naive_tz=tz)
    hi = None if end in (None, "") else parse_timestamp(end, what="end", naive_tz=tz)
    end_is_date = hi is not None and _is_date_only(end)
    if tf.is_daily:
        lo = None if lo is None else _session_label(lo, tz)
        if hi is not None:
            hi = _session_label(hi, tz) + (pd.Timedelta(days=1) if end_is_date else pd.Timedelta(0))
    elif hi is not None and end_is_date:
        hi = parse_timestamp(pd.Timestamp(str(end)) + pd.Timedelta(days=1), naive_tz=tz)
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidRequest(f"start {start} is not before end {end}: swap them or widen the range")
    return Window(lo, hi)


def _is_date_only(value: object) -> bool:
    text = str(value).strip()
    return len(text) == 10 and text[4] == "-" and text[7] == "-"


def _session_label(ts: pd.Timestamp, tz: str | tzinfo) -> pd.Timestamp:
    return pd.Timestamp(ts.tz_convert(tz).date(), tz="UTC")


def read_window(
    store: BarStore, source: str, symbol: str, timeframe: Timeframe | str, window: Window
) -> pd.DataFrame:
    """The stored bars of ``window`` (an empty bar frame when none)."""
    return store.read(source, symbol, timeframe, window.start, window.end)


def _times(index: pd.DatetimeIndex, daily: bool, tz: str | tzinfo) -> list[str]:
    if daily:
        return [ts.strftime("%Y-%m-%d") for ts in index]
    return [ts.isoformat() for ts in index.tz_convert(tz)]


def _number(value: object) -> float | int | None:
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        return None
    return int(number) if number.is_integer() else number


def bar_records(
    bars: pd.DataFrame, timeframe: Timeframe | str, tz: str | tzinfo
) -> list[dict[str, object]]:
    """One JSON-ready object per bar: ``timestamp`` (exchange time) then OHLCV."""
    daily = parse_timeframe(timeframe).is_daily
    times = _times(pd.DatetimeIndex(bars.index), daily, tz)
    columns = [bars[c].to_numpy() for c in BAR_COLUMNS]
    records: list[dict[str, object]] = []
    for i, when in enumerate(times):
        record: dict[str, object] = {INDEX_NAME: when}
        for name, values in zip(BAR_COLUMNS, columns, strict=True):
            record[name] = _number(values[i])
        records.append(record)
    return records


def bars_csv(bars: pd.DataFrame, timeframe: Timeframe | str, tz: str | tzinfo) -> str:
    """``timestamp,open,high,low,close,volume`` with a header; times in exchange time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([INDEX_NAME, *BAR_COLUMNS])
    for record in bar_records(bars, timeframe, tz):
        writer.writerow(["" if v is None else v for v in record.values()])
    return buffer.getvalue()
