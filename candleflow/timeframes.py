"""Bar timeframes: names, pandas offsets, IB bar-size strings and IB request limits.

A ``Timeframe`` is looked up by its short name (``"1m"`` … ``"1d"``) with :func:`parse_timeframe`.
The IB maximum span per historical request follows IB's step-size table (DESIGN §4.3):
1 min → 1 D · 2 mins → 2 D · 3–20 mins → 1 W · 30 mins–8 hours → 1 M · 1 day → 1 Y.
IB's calendar units are read here as fixed lengths — D = 1 day, W = 7 days, M = 30 days,
Y = 365 days — and requests are always phrased in whole days (:func:`ib_duration`), so the planner,
the IB adapter and the simulator share one unambiguous definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from candleflow.errors import InvalidRequest

_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One bar size. ``minutes`` is 1440 for daily bars."""

    name: str
    minutes: int
    ib_bar_size: str
    ib_max_duration: str
    max_span: pd.Timedelta

    @property
    def is_daily(self) -> bool:
        return self.minutes >= 1440

    @property
    def is_intraday(self) -> bool:
        return not self.is_daily

    @property
    def delta(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.minutes)

    @property
    def pandas_freq(self) -> str:
        if self.is_daily:
            return "1D"
        if self.minutes % 60 == 0:
            return f"{self.minutes // 60}h"
        return f"{self.minutes}min"

    @property
    def partition(self) -> str:
        """Store partition granularity: ``"month"`` for ≤5-minute bars, else ``"year"``."""
        return "month" if self.minutes <= 5 else "year"

    def __str__(self) -> str:
        return self.name


def _tf(name: str, minutes: int, bar_size: str, duration: str, span_days: int) -> Timeframe:
    return Timeframe(name, minutes, bar_size, duration, pd.Timedelta(days=span_days))


TIMEFRAMES: dict[str, Timeframe] = {
    tf.name: tf
    for tf in (
        _tf("1m", 1, "1 min", "1 D", 1),
        _tf("2m", 2, "2 mins", "2 D", 2),
        _tf("3m", 3, "3 mins", "1 W", 7),
        _tf("5m", 5, "5 mins", "1 W", 7),
        _tf("10m", 10, "10 mins", "1 W", 7),
        _tf("15m", 15, "15 mins", "1 W", 7),
        _tf("20m", 20, "20 mins", "1 W", 7),
        _tf("30m", 30, "30 mins", "1 M", 30),
        _tf("1h", 60, "1 hour", "1 M", 30),
        _tf("2h", 120, "2 hours", "1 M", 30),
        _tf("3h", 180, "3 hours", "1 M", 30),
        _tf("4h", 240, "4 hours", "1 M", 30),
        _tf("8h", 480, "8 hours", "1 M", 30),
        _tf("1d", 1440, "1 day", "1 Y", 365),
    )
}

_BY_BAR_SIZE = {tf.ib_bar_size: tf for tf in TIMEFRAMES.values()}


def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """Return the ``Timeframe`` called ``value`` (case-insensitive; ``"60m"`` is not an alias)."""
    if isinstance(value, Timeframe):
        return value
    key = str(value).strip().lower()
    if key in TIMEFRAMES:
        return TIMEFRAMES[key]
    raise InvalidRequest(f"unsupported timeframe {value!r}: use one of {', '.join(TIMEFRAMES)}")


def from_ib_bar_size(bar_size: str) -> Timeframe:
    """The ``Timeframe`` for an IB bar-size string such as ``"1 hour"``; exact spelling required."""
    try:
        return _BY_BAR_SIZE[bar_size]
    except KeyError:
        raise InvalidRequest(
            f"unsupported IB bar size {bar_size!r}: use one of {', '.join(_BY_BAR_SIZE)}"
        ) from None


def ib_duration(span: pd.Timedelta, timeframe: Timeframe) -> str:
    """The IB duration string (whole days, ``"N D"``) covering ``span`` for ``timeframe``.

    Raises ``InvalidRequest`` when ``span`` exceeds the IB maximum for the timeframe.
    """
    if span <= pd.Timedelta(0):
        raise InvalidRequest(f"request span must be positive, got {span}")
    if span > timeframe.max_span:
        raise InvalidRequest(
            f"request span {span} exceeds IB's maximum {timeframe.ib_max_duration} "
            f"for {timeframe.ib_bar_size} bars; split it into segments"
        )
    return f"{math.ceil(span / _DAY)} D"


def parse_ib_duration(duration: str) -> pd.Timedelta:
    """Read an IB duration string (``"3600 S"``, ``"2 D"``, ``"1 W"``, ``"1 M"``, ``"1 Y"``)."""
    parts = duration.strip().split()
    units = {
        "S": pd.Timedelta(seconds=1),
        "D": _DAY,
        "W": 7 * _DAY,
        "M": 30 * _DAY,
        "Y": 365 * _DAY,
    }
    if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in units or int(parts[0]) < 1:
        raise InvalidRequest(
            f"malformed IB duration {duration!r}: expected '<positive int> <S|D|W|M|Y>'"
        )
    return int(parts[0]) * units[parts[1]]
