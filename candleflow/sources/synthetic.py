"""A deterministic, calendar-aware generator of market-like bars: the offline default source.

``SyntheticSource`` serves bars of any instrument spec (:mod:`candleflow.instruments`: stocks,
forex pairs — quoted near 1 with five decimals and no volume, as IB's MIDPOINT bars — futures,
indices), each on its own calendar unless told another, and only where that calendar expects them
(no nights, weekends or holidays; short early-close days), from a configurable head timestamp up to
``now``. Every value is a pure function of (seed, symbol, timeframe, bar start), computed with a
splitmix64 integer hash in vectorised numpy, so a range gives the same bars however it is split
into requests, in whatever order, in whatever process. Prices follow one continuous log-price path
per symbol — a daily random walk with drift, cumulated over a fixed 1970–2100 table, plus hashed
hourly, five-minute and minute wiggles — so a bar opens where the previous one closed and the
timeframes agree with each other. Delays, failures and the clock can be injected for tests.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from candleflow.errors import Cancelled, NoData, UnknownSymbol
from candleflow.instruments import parse_instrument
from candleflow.loading.calendars import expected_bars, get_calendar, to_utc
from candleflow.models import INDEX_NAME, Instrument, Segment, parse_symbol, parse_timestamp
from candleflow.sources.base import normalize_bars
from candleflow.sources.options import SyntheticOptions
from candleflow.timeframes import Timeframe, parse_timeframe

logger = logging.getLogger(__name__)

__all__ = ["SyntheticSource"]

_DEFAULT_HEAD = "2015-01-02"

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_NS_PER_MINUTE = 60 * 1_000_000_000
_NS_PER_DAY = 1440 * _NS_PER_MINUTE
# The daily level table spans 1970-01-01 (the Unix epoch, so day numbers need no offset) to
# 2100-01-01. A fixed table — never one sized to the request — keeps the cumulated walk
# bit-identical for every request; days outside it repeat the edge level.
_TABLE_DAYS = (pd.Timestamp("2100-01-01") - pd.Timestamp("1970-01-01")).days + 1
_ANCHOR_DAY = (pd.Timestamp("2015-01-01") - pd.Timestamp("1970-01-01")).days
_DAILY_VOL = 0.012  # log-price standard deviation per calendar day
_DAILY_DRIFT = 0.0002  # about 7 % a year
_SESSION_MINUTES = 390
# (bar length in minutes, amplitude) of the hashed wiggles added to the daily path; amplitudes grow
# like sqrt(scale) so the path looks roughly self-similar from one minute to one hour.
_WIGGLES: tuple[tuple[int, float], ...] = (
    (60, _DAILY_VOL * (60 / _SESSION_MINUTES) ** 0.5 / 2**0.5),
    (5, _DAILY_VOL * (5 / _SESSION_MINUTES) ** 0.5 / 2**0.5),
    (1, _DAILY_VOL * (1 / _SESSION_MINUTES) ** 0.5 / 2**0.5),
)
# Independent hash streams, one per use of randomness.
_STREAM_DAILY, _STREAM_BASE, _STREAM_HIGH, _STREAM_LOW, _STREAM_VOLUME = 1, 2, 3, 4, 5
_STREAM_WIGGLE = 16


def _mix(value: int) -> int:
    """splitmix64's finaliser on one Python int (for keys)."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _mix_array(values: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic is the point)."""
    z = values.astype(np.uint64, copy=True)
    z += _U64(0x9E3779B97F4A7C15)
    z ^= z >> _U64(30)
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


def _hash(key: int, points: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """A 64-bit hash of each integer in ``points`` under ``key``."""
    with np.errstate(over="ignore"):
        raw = np.asarray(points, dtype=np.int64).view(np.uint64)
        return _mix_array(_mix_array(raw) ^ _U64(key))


def _normal(key: int, points: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Standard normal deviates, one per point (Box–Muller on the two halves of one hash)."""
    h = _hash(key, points)
    u1 = ((h >> _U64(32)).astype(np.float64) + 0.5) / 2.0**32
    u2 = (h & _U64(0xFFFFFFFF)).astype(np.float64) / 2.0**32
    out: np.ndarray[Any, np.dtype[np.float64]] = np.sqrt(-2.0 * np.log(u1)) * np.cos(
        2.0 * np.pi * u2
    )
    return out


def _unit(key: int) -> float:
    """A uniform number in [0, 1) derived from ``key``."""
    return (_mix(key) >> 11) / float(1 << 53)


def _series_key(seed: int, symbol: str) -> int:
    # blake2b, not hash(): Python's string hash changes from process to process.
    digest = hashlib.blake2b(symbol.encode("utf-8"), digest_size=8).digest()
    return _mix((seed & _MASK64) ^ _mix(int.from_bytes(digest, "little")))


def _stream(key: int, stream: int, minutes: int = 0) -> int:
    return _mix(_mix(key ^ (stream * 0xD1B54A32D192ED03 & _MASK64)) ^ minutes)


@functools.lru_cache(maxsize=256)
def _level_table(key: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Log price at midnight UTC of each day of the fixed table, for one (seed, symbol)."""
    shocks = _normal(_stream(key, _STREAM_DAILY), np.arange(_TABLE_DAYS, dtype=np.int64))
    walk = np.cumsum(shocks)
    base_price = np.log(10.0) + _unit(_stream(key, _STREAM_BASE)) * np.log(50.0)  # 10 … 500
    days = np.arange(_TABLE_DAYS, dtype=np.float64) - _ANCHOR_DAY
    table: np.ndarray[Any, np.dtype[np.float64]] = (
        base_price + _DAILY_DRIFT * days + _DAILY_VOL * (walk - walk[_ANCHOR_DAY])
    )
    table.flags.writeable = False
    return table


def _log_price(
    key: int, ns: np.ndarray[Any, np.dtype[np.int64]]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The symbol's log-price path at the instants ``ns`` (UTC nanoseconds since the epoch)."""
    table = _level_table(key)
    day = ns // _NS_PER_DAY
    frac = (ns - day * _NS_PER_DAY) / _NS_PER_DAY
    lo = np.clip(day, 0, _TABLE_DAYS - 1)
    hi = np.clip(day + 1, 0, _TABLE_DAYS - 1)
    out: np.ndarray[Any, np.dtype[np.float64]] = table[lo] * (1.0 - frac) + table[hi] * frac
    for minutes, amplitude in _WIGGLES:
        step = minutes * _NS_PER_MINUTE
        knot = ns // step
        f = (ns - knot * step) / step
        stream = _stream(key, _STREAM_WIGGLE + minutes)
        out += amplitude * (_normal(stream, knot) * (1.0 - f) + _normal(stream, knot + 1) * f)
    return out


def _to_ticks(values: np.ndarray[Any, Any], scale: float, decimals: int) -> np.ndarray[Any, Any]:
    # Scaling, rounding and clipping are monotone, so high ≥ max(open, close) ≥ … survives them.
    return np.maximum(np.round(values * scale, decimals), 10.0**-decimals)


@dataclass(frozen=True, slots=True)
class _Quoting:
    """How an asset class's prices look: scale of the 10–500 path, decimals, volume or none."""

    scale: float = 1.0
    decimals: int = 2
    volume: bool = True


_STOCK_QUOTING = _Quoting()
# Forex pairs trade near 1 with five decimals (yen pairs near 100 with three) and, as IB's
# MIDPOINT bars, have no volume.
_FX_QUOTING = _Quoting(scale=0.01, decimals=5, volume=False)
_JPY_QUOTING = _Quoting(scale=1.0, decimals=3, volume=False)


def _quoting(instrument: Instrument) -> _Quoting:
    if instrument.sec_type == "CASH":
        return _JPY_QUOTING if instrument.currency == "JPY" else _FX_QUOTING
    return _STOCK_QUOTING


def _generate(
    key: int,
    timeframe: Timeframe,
    starts: pd.DatetimeIndex,
    open_at: np.ndarray[Any, np.dtype[np.int64]],
    close_at: np.ndarray[Any, np.dtype[np.int64]],
    quoting: _Quoting = _STOCK_QUOTING,
) -> pd.DataFrame:
    """Bars starting at ``starts`` that open at instants ``open_at`` and close at ``close_at``."""
    minutes = min(timeframe.minutes, _SESSION_MINUTES)
    label = starts.asi8
    open_raw = np.exp(_log_price(key, open_at))
    close_raw = np.exp(_log_price(key, close_at))
    excursion = 0.35 * _DAILY_VOL * (minutes / _SESSION_MINUTES) ** 0.5
    z_high = np.abs(_normal(_stream(key, _STREAM_HIGH, timeframe.minutes), label))
    z_low = np.abs(_normal(_stream(key, _STREAM_LOW, timeframe.minutes), label))
    high_raw = np.maximum(open_raw, close_raw) * np.exp(z_high * excursion)
    low_raw = np.minimum(open_raw, close_raw) * np.exp(-z_low * excursion)
    daily_volume = 10.0 ** (5.0 + 2.0 * _unit(_stream(key, _STREAM_VOLUME)))
    z_volume = _normal(_stream(key, _STREAM_VOLUME, timeframe.minutes), label)
    volume = np.maximum(
        np.round(daily_volume * minutes / _SESSION_MINUTES * np.exp(0.5 * z_volume)), 1
    )
    scale, decimals = quoting.scale, quoting.decimals
    frame = pd.DataFrame(
        {
            "open": _to_ticks(open_raw, scale, decimals),
            "high": _to_ticks(high_raw, scale, decimals),
            "low": _to_ticks(low_raw, scale, decimals),
            "close": _to_ticks(close_raw, scale, decimals),
            "volume": volume if quoting.volume else np.full(len(starts), np.nan),
        },
        index=starts,
    )
    return normalize_bars(frame, origin="synthetic")


class SyntheticSource:
    """Seeded, calendar-aware synthetic bars (see the module docstring).

    ``head`` is the earliest instant with data: one timestamp for every symbol, or a mapping from
    symbol to timestamp (symbols it does not list start at 2015-01-02); naive values are UTC.
    ``symbols`` restricts the known symbols; ``unknown`` lists symbols reported as unknown.
    ``delay`` seconds are spent in every ``fetch``, through ``cancel_wait(delay)`` when given (it
    returns True when the wait was cancelled, and the fetch then raises ``Cancelled``).
    ``fail(segment)`` may return an exception for ``fetch`` to raise, after its delay.
    ``now()`` is the clock: bars that end after it are not served yet.
    """

    name = "synthetic"

    def __init__(
        self,
        seed: int = 0,
        *,
        head: pd.Timestamp | str | Mapping[str, pd.Timestamp | str] = _DEFAULT_HEAD,
        symbols: Collection[str] | None = None,
        unknown: Collection[str] = (),
        delay: float = 0.0,
        fail: Callable[[Segment], BaseException | None] | None = None,
        now: Callable[[], pd.Timestamp] | None = None,
        cancel_wait: Callable[[float], bool] | None = None,
    ) -> None:
        options = SyntheticOptions.parse(seed=seed, delay=delay)  # the one check of each value
        self.seed = options.seed
        self._default_head = parse_timestamp(_DEFAULT_HEAD, what="head")
        self._heads: dict[str, pd.Timestamp] = {}
        if isinstance(head, Mapping):
            self._heads = {
                parse_symbol(sym): parse_timestamp(ts, what=f"head of {sym}")
                for sym, ts in head.items()
            }
        else:
            self._default_head = parse_timestamp(head, what="head")
        self._symbols = None if symbols is None else {parse_symbol(s) for s in symbols}
        self._unknown = {parse_symbol(s) for s in unknown}
        self._delay = options.delay
        self._fail = fail
        self._now = now
        self._cancel_wait = cancel_wait
        self._lock = threading.Lock()
        self._api_calls = 0
        self._fetch_calls = 0

    def __repr__(self) -> str:
        return f"SyntheticSource(seed={self.seed})"

    @property
    def api_calls(self) -> int:
        """Calls of ``validate``, ``head_timestamp`` and ``fetch`` so far."""
        with self._lock:
            return self._api_calls

    @property
    def fetch_calls(self) -> int:
        """Calls of ``fetch`` so far."""
        with self._lock:
            return self._fetch_calls

    def _count(self, *, fetch: bool = False) -> None:
        with self._lock:
            self._api_calls += 1
            if fetch:
                self._fetch_calls += 1

    def _known(self, instrument: Instrument) -> Instrument:
        """``instrument`` with its symbol normalised, once it is known to this source."""
        symbol = parse_symbol(instrument.symbol)
        self._check_known(symbol)
        return instrument if symbol == instrument.symbol else replace(instrument, symbol=symbol)

    def _check_known(self, symbol: str) -> None:
        if symbol in self._unknown:
            raise UnknownSymbol(symbol, self.name, "listed as unknown")
        if self._symbols is not None and symbol not in self._symbols:
            known = ", ".join(sorted(self._symbols)[:5]) or "none"
            raise UnknownSymbol(symbol, self.name, f"known symbols: {known}")

    def validate(self, symbol: str, calendar: str | None = None) -> Instrument:
        """Resolve ``symbol`` — an instrument spec (``AAPL``, ``EUR.USD``, ``ES:fut``, ``ESZ6``,
        ``SPX:ind``; case-insensitive) — on ``calendar`` (default: the spec's own, e.g. ``FX``
        for a pair, ``GLOBEX`` for a future; see :func:`candleflow.instruments.default_calendar`).

        Raises ``InvalidRequest`` for a malformed spec or an unknown calendar and
        ``UnknownSymbol`` for a symbol this source was told not to know.
        """
        self._count()
        normalized = parse_symbol(symbol)
        self._check_known(normalized)
        return _instrument(normalized, calendar)

    def _head(self, symbol: str) -> pd.Timestamp:
        return self._heads.get(symbol, self._default_head)

    def head_of(self, symbol: str) -> pd.Timestamp:
        """The earliest instant with data for ``symbol`` (an instrument spec)."""
        return self._head(parse_symbol(symbol))

    def set_head(self, symbol: str, head: pd.Timestamp | str) -> None:
        """Make ``head`` the earliest instant with data for ``symbol`` from now on."""
        self._heads[parse_symbol(symbol)] = parse_timestamp(head, what=f"head of {symbol}")

    def _clock(self) -> pd.Timestamp:
        now = pd.Timestamp.now(tz="UTC") if self._now is None else pd.Timestamp(self._now())
        return now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")

    def _first_bar(self, instrument: Instrument, timeframe: Timeframe) -> pd.Timestamp:
        head = self._head(instrument.symbol)
        if timeframe.is_daily:
            labels = pd.DatetimeIndex(get_calendar(instrument.calendar, head).schedule.index)
            later = labels[labels >= head.tz_convert(None)]
            if len(later):
                return pd.Timestamp(later[0]).tz_localize("UTC")
        else:
            # Widening windows: a week covers any ordinary closure, the rest long holidays.
            for days in (7, 60, 3660):
                grid = _bar_grid(
                    instrument.calendar, timeframe, head, head + pd.Timedelta(days=days)
                )
                if len(grid[0]):
                    return pd.Timestamp(grid[0][0])
        raise NoData(
            f"synthetic: calendar {instrument.calendar} has no {timeframe} bars after the head "
            f"{head} of {instrument.symbol}; choose an earlier head"
        )

    def head_timestamp(self, instrument: Instrument, timeframe: Timeframe | str) -> pd.Timestamp:
        """The first expected bar at or after the symbol's head (tz-aware UTC)."""
        self._count()
        return self._first_bar(self._known(instrument), parse_timeframe(timeframe))

    def fetch(
        self, instrument: Instrument, timeframe: Timeframe | str, segment: Segment
    ) -> pd.DataFrame:
        """Bars starting in ``[segment.start, segment.end)``, from the head, ended before now.

        Raises ``NoData`` when none qualify, ``Cancelled`` when the delay was cancelled, and
        whatever ``fail(segment)`` returns.
        """
        self._count(fetch=True)
        tf = parse_timeframe(timeframe)
        instrument = self._known(instrument)
        if self._delay > 0:
            if self._cancel_wait is not None:
                if self._cancel_wait(self._delay):
                    raise Cancelled(
                        f"synthetic fetch of {instrument.symbol} {tf} {segment.label()} cancelled"
                    )
            else:
                time.sleep(self._delay)
        if self._fail is not None:
            error = self._fail(segment)
            if error is not None:
                raise error
        start, end = (
            parse_timestamp(segment.start, what="start"),
            parse_timestamp(segment.end, what="end"),
        )
        starts, ends = _bar_grid(instrument.calendar, tf, start, end)
        keep = (starts >= self._first_bar(instrument, tf)) & (ends <= self._clock())
        if not keep.any():
            raise NoData(
                f"synthetic: no {tf} bars for {instrument.symbol} in {segment.label()} "
                f"(calendar {instrument.calendar} closed, before the head "
                f"{self._head(instrument.symbol)}, or not yet ended)"
            )
        logger.debug("synthetic fetch %s %s %s", instrument.symbol, tf, segment.label())
        return self._frame(instrument, tf, starts[keep], ends[keep])

    def bars(
        self,
        instrument_or_symbol: Instrument | str,
        timeframe: Timeframe | str,
        start: pd.Timestamp | str,
        end: pd.Timestamp | str,
    ) -> pd.DataFrame:
        """Every expected bar starting in ``[start, end)``, generated without counting or delay.

        Unlike ``fetch`` it ignores the head, the clock and the known-symbol lists, and returns
        an empty frame when the calendar expects nothing. Naive bounds are in the exchange's zone.
        """
        if isinstance(instrument_or_symbol, Instrument):
            symbol = parse_symbol(instrument_or_symbol.symbol)
            instrument = replace(instrument_or_symbol, symbol=symbol)
        else:
            instrument = _instrument(parse_symbol(instrument_or_symbol), None)
        tf = parse_timeframe(timeframe)
        lo, hi = to_utc(start, instrument.calendar), to_utc(end, instrument.calendar)
        starts, ends = _bar_grid(instrument.calendar, tf, lo, hi)
        return self._frame(instrument, tf, starts, ends)

    def _frame(
        self,
        instrument: Instrument,
        tf: Timeframe,
        starts: pd.DatetimeIndex,
        ends: pd.DatetimeIndex,
    ) -> pd.DataFrame:
        key = _series_key(self.seed, instrument.symbol)
        quoting = _quoting(instrument)
        starts = pd.DatetimeIndex(starts, name=INDEX_NAME).as_unit("ns")
        if tf.is_daily:
            # A daily bar opens at the session's open and closes at its close, on the same path
            # as the intraday bars, so daily and intraday series of a symbol agree.
            if len(starts) == 0:
                return _generate(key, tf, starts, starts.asi8, starts.asi8, quoting)
            labels = starts.tz_convert(None)
            schedule = get_calendar(instrument.calendar, labels[0]).schedule.loc[labels]
            open_at = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8
            close_at = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8
            return _generate(key, tf, starts, open_at, close_at, quoting)
        return _generate(key, tf, starts, starts.asi8, ends.as_unit("ns").asi8, quoting)

    def close(self) -> None:
        """Nothing to release; present for the ``Source`` protocol."""


def _instrument(symbol: str, calendar: str | None) -> Instrument:
    """The synthetic instrument of the canonical spec ``symbol`` on ``calendar`` (default: the
    spec's calendar)."""
    spec = parse_instrument(symbol)
    cal = spec.calendar if calendar is None else calendar.strip()
    get_calendar(cal)  # an unknown calendar is the caller's error
    return Instrument(
        symbol,
        calendar=cal,
        sec_type=spec.sec_type,
        exchange=spec.exchange,
        currency=spec.currency,
        expiry=spec.expiry,
        long_name=f"synthetic {symbol}",
    )


def _bar_grid(
    calendar: str, tf: Timeframe, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """Expected bars starting in ``[start, end)`` with their full, unclipped ends.

    ``expected_bars`` clips a bar's end at the range end and labels a bar cut by the range start
    with its true start; widening the range by one bar on each side and filtering the starts keeps
    every bar identical whatever range it is requested in.
    """
    if tf.is_daily:
        grid = expected_bars(calendar, tf, start, end)
        return grid.starts, grid.ends
    grid = expected_bars(calendar, tf, start - tf.delta, end + tf.delta)
    mask = (grid.starts >= start) & (grid.starts < end)
    return grid.starts[mask], grid.ends[mask]
