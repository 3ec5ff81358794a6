"""Records shared across the core: instruments, gaps, segments, load modes, fetch statistics.

All records are frozen dataclasses; timestamps are tz-aware UTC ``pandas.Timestamp``s. A bar
frame is a ``DataFrame`` indexed by a UTC ``DatetimeIndex`` named ``timestamp`` (bar start) with
float64 columns :data:`BAR_COLUMNS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import StrEnum

import pandas as pd

from candleflow.errors import InvalidRequest

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
INDEX_NAME = "timestamp"

#: Legal symbols: letters, digits and ``. - _ ^ = :``, 1–32 characters, not starting with ``.``
#: or ``:`` (so ``.`` and ``..`` fail too); ``:`` separates an instrument spec's parts
#: (``ES:FUT``). Use ``fullmatch``: ``$`` would let a trailing newline in.
SYMBOL_RE = re.compile(r"[A-Za-z0-9_^=\-][A-Za-z0-9._^=:\-]{0,31}")


def parse_symbol(value: object) -> str:
    """A user-given symbol or instrument spec in its canonical form (``aapl`` → ``AAPL``,
    ``eurusd:fx`` → ``EUR.USD``, ``ESZ6`` → ``ES:FUT:202612``; see
    :mod:`candleflow.instruments`); ``InvalidRequest`` if it is malformed."""
    from candleflow.instruments import parse_instrument

    if not isinstance(value, str) or SYMBOL_RE.fullmatch(value.strip().upper()) is None:
        raise InvalidRequest(
            f"invalid symbol {value!r}: use 1-32 letters, digits or . - _ ^ = "
            "(not starting with '.'), e.g. 'AAPL', 'BRK.B', '^GSPC', 'EURUSD=X', or an "
            "instrument spec such as 'EUR.USD', 'ES:fut', 'ESZ6', 'SPX:ind'"
        )
    return parse_instrument(value).key


def parse_timestamp(
    value: object, *, what: str = "timestamp", naive_tz: str | tzinfo | None = "UTC"
) -> pd.Timestamp:
    """``value`` as a tz-aware UTC timestamp; the one parser at every boundary.

    Naive values are read in ``naive_tz``; with ``naive_tz=None`` they are rejected.
    """
    try:
        parsed = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"malformed {what} {value!r}: use YYYY-MM-DD[ HH:MM]") from exc
    if pd.isna(parsed):
        raise InvalidRequest(f"malformed {what} {value!r}: use YYYY-MM-DD[ HH:MM]")
    ts = pd.Timestamp(parsed)
    if ts.tzinfo is None:
        if naive_tz is None:
            raise InvalidRequest(
                f"{what}={value!r} is tz-naive; pass a tz-aware timestamp, e.g. "
                f"pd.Timestamp({str(ts)!r}, tz='UTC')"
            )
        ts = ts.tz_localize(naive_tz, ambiguous=True, nonexistent="shift_forward")
    return ts.tz_convert("UTC")


class LoadMode(StrEnum):
    """Which part of a series a load fetches (DESIGN §2)."""

    LOCAL = "local"  # no source calls: read and analyse what is stored
    TAIL = "tail"  # from the last stored bar to end/now
    BACKFILL = "backfill"  # from start (clipped to the head timestamp) to the first stored bar
    FULL = "full"  # backfill + tail + interior gaps

    @classmethod
    def parse(cls, value: str | LoadMode) -> LoadMode:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise InvalidRequest(
                f"unknown mode {value!r}: use one of {', '.join(m.value for m in cls)}"
            ) from None


class GapClass(StrEnum):
    """Why bars are absent: fetchable (``missing``), before the source's history, or not yet due."""

    MISSING = "missing"
    BEFORE_HEAD = "before_head"
    FUTURE = "future"


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable instrument as resolved by a source.

    ``symbol`` is the canonical instrument spec (``AAPL``, ``EUR.USD``, ``ES:FUT:202612``; see
    :mod:`candleflow.instruments`), the name the store files the series under. ``calendar`` is
    an exchange_calendars name (``XNYS``, ``GLOBEX``, ``FX``…) used for gap analysis;
    ``exchange`` is the routing exchange a broker wants (``SMART``, ``IDEALPRO``, ``CME``);
    ``sec_type`` is IB's (``STK``, ``CASH``, ``CONTFUT``, ``FUT``, ``IND``). The remaining
    fields record the contract a broker qualified.
    """

    symbol: str
    calendar: str = "XNYS"
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    primary_exchange: str = ""
    con_id: int = 0
    long_name: str = ""
    #: The qualified contract's month or last trading day (``YYYYMM[DD]``; futures only).
    expiry: str = ""
    #: Contract multiplier as IB writes it (``"50"`` for ES; empty for stocks, pairs, indices).
    multiplier: str = ""
    #: The contract's symbol on its exchange (``ESZ6``, ``EUR.USD``), as IB reports it.
    local_symbol: str = ""
    trading_class: str = ""

    @property
    def what_to_show(self) -> str:
        """IB's bar type for the instrument: ``MIDPOINT`` for a forex pair, else ``TRADES``."""
        return "MIDPOINT" if self.sec_type == "CASH" else "TRADES"

    def to_meta(self) -> dict[str, object]:
        """The instrument as the series metadata records it (the qualified contract)."""
        return {
            "symbol": self.symbol,
            "sec_type": self.sec_type,
            "con_id": self.con_id,
            "exchange": self.exchange,
            "primary_exchange": self.primary_exchange,
            "currency": self.currency,
            "expiry": self.expiry,
            "multiplier": self.multiplier,
            "local_symbol": self.local_symbol,
            "trading_class": self.trading_class,
            "calendar": self.calendar,
            "long_name": self.long_name,
            "what_to_show": self.what_to_show,
        }


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of consecutive expected bars absent from the store: ``[start, end)``.

    ``start`` is the first missing bar's start; ``end`` is the last missing bar's end.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    bars: int
    kind: GapClass = GapClass.MISSING

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "bars": self.bars,
            "class": self.kind.value,
        }


@dataclass(frozen=True, slots=True)
class Segment:
    """One source request: bars starting in ``[start, end)``; ``bars`` expected in it."""

    start: pd.Timestamp
    end: pd.Timestamp
    bars: int

    @property
    def span(self) -> pd.Timedelta:
        return self.end - self.start

    def label(self) -> str:
        """Human form for progress lines, e.g. ``2024-01-02 14:30 → 2024-01-31 21:00``."""
        fmt = (
            "%Y-%m-%d" if _is_midnight(self.start) and _is_midnight(self.end) else "%Y-%m-%d %H:%M"
        )
        return f"{self.start.strftime(fmt)} → {self.end.strftime(fmt)}"


def _is_midnight(ts: pd.Timestamp) -> bool:
    return ts.hour == 0 and ts.minute == 0 and ts.second == 0


@dataclass(frozen=True, slots=True)
class FetchStats:
    """What a fetch stage did: counted, never estimated."""

    segments: int = 0
    segments_done: int = 0
    rows: int = 0
    api_calls: int = 0
    duration_s: float = 0.0
    failed: tuple[Segment, ...] = field(default_factory=tuple)
