"""What the simulated gateway knows: contract details, head timestamps and historical bars.

Contracts come from its instrument directory (:mod:`candleflow.ibsim.directory`), answered as
IB answers each class: a stock, a forex pair on IDEALPRO, a dated or continuous future with its
exchange, multiplier and expiry, an index; error 200 for anything else. A forex pair has no
trades (``TRADES`` → 162 "No historical market data …", as IB), a continuous future refuses an
end date (10339), a dated future has bars for a year up to its last trading day.

Bars come from :class:`~candleflow.sources.synthetic.SyntheticSource` with the simulator's seed,
so a client that downloads through the simulator gets exactly ``SyntheticSource(seed).bars(...)``
for the same range (calendar-aware: nothing while the exchange is closed, nothing before the head,
nothing that has not ended yet). Requests are read as IB reads them: ``endDateTime`` (empty for
now; ``yyyyMMdd HH:mm:ss <zone>``, ``yyyyMMdd-HH:mm:ss`` in UTC, or a bare date) minus a duration
(``S``/``D``/``W``/``M``/``Y`` via :func:`~candleflow.timeframes.parse_ib_duration`); bars
starting in ``[end - duration, end)`` are served. Problems raise :class:`IBError` carrying the
code and text IB would send (200, 162 no data, 162 invalid step, 321).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from candleflow.errors import InvalidRequest, NoData
from candleflow.ibsim.directory import Directory, SimContract
from candleflow.ibsim.protocol import Field, WireContract
from candleflow.loading.calendars import calendar_tz
from candleflow.models import SYMBOL_RE, Instrument, Segment
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.frames import empty_bars
from candleflow.timeframes import Timeframe, from_ib_bar_size, parse_ib_duration

DEFAULT_UNKNOWN: frozenset[str] = frozenset({"UNKNOWN", "ZZZZ"})
_END_RE = re.compile(r"(\d{8})(?:[ -](\d{2}:\d{2}:\d{2}))?(?:\s+(\S+))?")
_ZONE_ALIASES = {"UTC": "UTC", "GMT": "UTC"}
_CACHED_MONTHS = 24  # months of intraday bars kept (1-minute: ~8,000 bars each)


class IBError(Exception):
    """An error the gateway answers with: ``code`` and ``text`` go on the wire as message 4."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class HistoricalQuery:
    """A parsed reqHistoricalData (message 20)."""

    req_id: int
    contract: WireContract
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int

    @classmethod
    def from_fields(cls, fields: list[str]) -> HistoricalQuery:
        # 20, reqId, contract×12, includeExpired, end, barSize, duration, useRTH, whatToShow,
        # formatDate, keepUpToDate, chartOptions
        if len(fields) < 21:
            raise InvalidRequest(f"truncated reqHistoricalData: {fields}")
        return cls(
            req_id=int(fields[1]),
            contract=WireContract.from_fields(fields, 2),
            end=fields[15],
            bar_size=fields[16],
            duration=fields[17],
            use_rth=fields[18] == "1",
            what_to_show=fields[19],
            format_date=int(fields[20] or 1),
        )

    @property
    def params(self) -> str:
        """What makes two requests identical for the pacing rules."""
        return "|".join(
            (self.end, self.bar_size, self.duration, str(self.use_rth), self.what_to_show)
        )


def parse_end(text: str, now: pd.Timestamp) -> pd.Timestamp:
    """An ``endDateTime`` as IB reads it; empty means ``now``; a zone-less time is UTC here."""
    text = text.strip()
    if not text:
        return now
    match = _END_RE.fullmatch(text)
    if match is None:
        raise IBError(321, f"Error validating request.-'bP' : cause - invalid end date {text!r}")
    day, clock, zone = match.groups()
    stamp = pd.Timestamp(f"{day} {clock or '23:59:59'}")
    if text[8:9] == "-" or zone is None:
        return stamp.tz_localize("UTC")
    try:
        return stamp.tz_localize(_ZONE_ALIASES.get(zone, zone)).tz_convert("UTC")
    except Exception as exc:  # zoneinfo raises several types for unknown zones
        raise IBError(
            321, f"Error validating request.-'bP' : cause - unknown zone {zone!r}"
        ) from exc


#: whatToShow values IB accepts for historical bars (anything else fails validation: 321).
WHAT_TO_SHOW = frozenset({
    "TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK", "ADJUSTED_LAST", "HISTORICAL_VOLATILITY",
    "OPTION_IMPLIED_VOLATILITY", "SCHEDULE", "AGGTRADES",
})  # fmt: skip
_NO_SECURITY = "No security definition has been found for the request"
_CONTFUT_END = "Setting end date/time for continuous future security type is not allowed."
#: How long before its last trading day a dated future has bars.
_FUTURE_HISTORY = pd.Timedelta(days=365)


class SimulatedData:
    """Contract details, heads and bars of the simulated gateway (see the module docstring).

    ``directory`` is what the gateway knows (default: the shipped
    :meth:`~candleflow.ibsim.directory.Directory.default`); anything else, and the ``unknown``
    symbols even when listed, get error 200. ``calendars`` maps a canonical instrument spec
    (``AAPL``, ``EUR.USD``, ``ES:FUT``) to the exchange_calendars name its bars follow instead of
    its class's; ``now`` is the clock for "bars not ended yet" and for which futures expired.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        head: pd.Timestamp | str | Mapping[str, pd.Timestamp | str] = "2015-01-02",
        unknown: Collection[str] = DEFAULT_UNKNOWN,
        calendars: Mapping[str, str] | None = None,
        now: Callable[[], pd.Timestamp] | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.seed = seed
        self.unknown = frozenset(s.upper() for s in unknown)
        self.calendars = {k.strip().upper(): v for k, v in (calendars or {}).items()}
        self.directory = directory if directory is not None else Directory.default()
        self._source = SyntheticSource(seed, head=head, now=now)
        self._now = now
        self._months: dict[tuple[Instrument, str, pd.Timestamp, pd.Timestamp], pd.DataFrame] = {}

    def clock(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC") if self._now is None else self._now()

    def contracts(self, contract: WireContract, include_expired: bool = False) -> list[SimContract]:
        """Every contract answering ``contract`` (contract details may list several)."""
        symbol = contract.symbol.strip().upper()
        if symbol in self.unknown or (
            symbol and SYMBOL_RE.fullmatch(symbol.replace(" ", ".")) is None
        ):
            return []
        try:
            con_id = int(contract.con_id or 0)
        except ValueError:
            con_id = 0
        found = self.directory.match(
            sec_type=contract.sec_type, symbol=symbol, exchange=contract.exchange,
            currency=contract.currency, last_trade=contract.last_trade_date,
            local_symbol=contract.local_symbol, con_id=con_id, include_expired=include_expired,
            today=self.clock().date(),
        )  # fmt: skip
        return [c for c in found if c.key not in self.unknown]

    def resolve(self, contract: WireContract, include_expired: bool = True) -> SimContract:
        """The one contract ``contract`` names; ``IBError(200)`` for none (or several)."""
        found = self.contracts(contract, include_expired)
        if len(found) != 1:
            raise IBError(200, _NO_SECURITY)
        return found[0]

    def instrument(self, contract: WireContract) -> Instrument:
        """The instrument behind ``contract``; ``IBError(200)`` for unknown symbols."""
        return self._instrument(self.resolve(contract))

    def _instrument(self, found: SimContract) -> Instrument:
        key = found.key
        if found.sec_type == "FUT":
            expires = pd.Timestamp(found.last_trade, tz="UTC")
            self._source.set_head(key, max(self._source.head_of(key), expires - _FUTURE_HISTORY))
        return Instrument(
            key,
            calendar=self.calendars.get(key, self.calendars.get(found.symbol, found.calendar)),
            sec_type=found.sec_type,
            exchange=found.exchange,
            currency=found.currency,
            primary_exchange=found.primary_exchange,
            con_id=found.con_id,
            long_name=found.long_name,
            expiry=found.last_trade,
            multiplier=found.multiplier,
            local_symbol=found.local_symbol,
            trading_class=found.trading_class,
        )

    def contract_details(
        self, req_id: int, contract: WireContract, include_expired: bool = False
    ) -> list[list[Field]]:
        """The contractData messages (10) answering ``contract``; ``IBError(200)`` for none."""
        found = self.contracts(contract, include_expired)
        if not found:
            raise IBError(200, _NO_SECURITY)
        return [_details(req_id, c) for c in found]

    def _check_what_to_show(self, found: SimContract, what_to_show: str, bar: str) -> None:
        what = what_to_show.strip().upper()
        if what not in WHAT_TO_SHOW:
            raise IBError(
                321,
                f"Error validating request.-'bY' : cause - Invalid what to show {what_to_show!r}",
            )
        if found.sec_type == "CASH" and what in ("TRADES", "ADJUSTED_LAST", "AGGTRADES"):
            # IB has no trades for forex: only MIDPOINT, BID, ASK, BID_ASK.
            raise IBError(
                162,
                "Historical Market Data Service error message:No historical market data for "
                f"{found.symbol}/CASH@FXSUBPIP Last {bar}",
            )
        if found.sec_type == "IND" and what != "TRADES":
            raise IBError(
                162,
                "Historical Market Data Service error message:No historical market data for "
                f"{found.symbol}/IND@{found.exchange} {what.title()} {bar}",
            )

    def head(self, contract: WireContract, what_to_show: str = "TRADES") -> pd.Timestamp:
        """The first 1-minute bar at or after the symbol's head (IB's head is per tick type)."""
        found = self.resolve(contract)
        self._check_what_to_show(found, what_to_show, "1d")
        return self._source.head_timestamp(self._instrument(found), "1m")

    def head_text(
        self, contract: WireContract, format_date: int, what_to_show: str = "TRADES"
    ) -> str:
        head = self.head(contract, what_to_show)
        if format_date == 2:
            return str(int(head.timestamp()))
        return head.strftime("%Y%m%d-%H:%M:%S")

    def bars(self, query: HistoricalQuery) -> tuple[pd.DataFrame, Timeframe, Instrument]:
        """Bars answering ``query``; raises ``IBError`` as IB would."""
        found = self.resolve(query.contract)
        inst = self._instrument(found)
        if found.sec_type == "CONTFUT" and query.end.strip():
            raise IBError(10339, _CONTFUT_END)
        try:
            tf = from_ib_bar_size(query.bar_size)
        except InvalidRequest:
            raise IBError(
                321,
                "Error validating request.-'bP' : cause - Historical data bar size setting is "
                f"invalid: {query.bar_size!r}",
            ) from None
        try:
            span = parse_ib_duration(query.duration)
        except InvalidRequest:
            raise IBError(
                321,
                "Error validating request.-'bP' : cause - Historical data query duration "
                f"{query.duration!r} is invalid",
            ) from None
        if span > tf.max_span:
            raise IBError(
                162,
                "Historical Market Data Service error message:Invalid step: duration "
                f"{query.duration} exceeds {tf.ib_max_duration} for {tf.ib_bar_size} bars",
            )
        self._check_what_to_show(found, query.what_to_show, _bar_label(tf))
        end = parse_end(query.end, self.clock())
        if found.sec_type == "FUT":
            # No bars after the last trading day's session (16:00 Chicago ≈ 22:00 UTC).
            end = min(end, pd.Timestamp(found.last_trade, tz="UTC") + pd.Timedelta(hours=22))
        segment = Segment(end - span, end, 0)
        try:
            if segment.end <= segment.start:
                raise NoData("expired")
            frame = self._served(inst, tf, segment)
        except NoData:
            raise IBError(
                162,
                "Historical Market Data Service error message:HMDS query returned no data: "
                f"{query.contract.label} {query.what_to_show.title()}",
            ) from None
        return frame, tf, inst

    def _served(self, inst: Instrument, tf: Timeframe, segment: Segment) -> pd.DataFrame:
        """``SyntheticSource.fetch`` of ``segment``, cut from a cached calendar month of bars when
        the segment lies in one month that has ended (the source's bars do not depend on the
        range asked, so the cut is the same frame; generating a month at once costs about as much
        as one day). Raises ``NoData`` as the source does."""
        lo = pd.Timestamp(year=segment.start.year, month=segment.start.month, day=1, tz="UTC")
        hi = lo + pd.offsets.MonthBegin(1)
        if tf.is_daily or segment.end > hi or hi > self.clock() - tf.delta:
            return self._source.fetch(inst, tf, segment)
        key = (inst, tf.name, lo, self._source.head_of(inst.symbol))
        month = self._months.pop(key, None)
        if month is None:
            try:
                month = self._source.fetch(inst, tf, Segment(lo, hi, 0))
            except NoData:
                month = empty_bars()
        self._months[key] = month  # most recently used last
        while len(self._months) > _CACHED_MONTHS:
            self._months.pop(next(iter(self._months)))
        index = pd.DatetimeIndex(month.index)
        first, last = index.searchsorted(segment.start), index.searchsorted(segment.end)
        if first >= last:
            raise NoData(f"no bars in {segment.label()}")
        return month.iloc[first:last]

    def historical_fields(self, query: HistoricalQuery) -> tuple[list[Field], int]:
        """The fields of the historicalData message (17) and the number of bars in it."""
        frame, tf, inst = self.bars(query)
        end = parse_end(query.end, self.clock())
        start = end - parse_ib_duration(query.duration)
        fields: list[Field] = [17, query.req_id, _fmt_range(start), _fmt_range(end), len(frame)]
        fields.extend(_bar_fields(frame, tf, query.format_date, inst.calendar))
        return fields, len(frame)


def _bar_label(tf: Timeframe) -> str:
    """How IB names a bar size in its "no data" texts: ``1d``, else seconds (``300``)."""
    return "1d" if tf.is_daily else str(tf.minutes * 60)


def _details(req_id: int, c: SimContract) -> list[Field]:
    """One contractData message (10), fields in the v176 order of IB_PROTOCOL.md."""
    industry, category, subcategory = {
        "STK": ("Technology", "Computers", "Software"),
        "CASH": ("", "", ""),
        "IND": ("Indices", "Equity Index", "Broad"),
    }.get(c.sec_type, ("", "", ""))
    order_types = "ACTIVETIM,ADJUST,ALERT,ALGO,LMT,MKT,STP"
    under = c.under_con_id if c.sec_type in ("FUT", "CONTFUT") else 0
    return [
        10, req_id, c.symbol, c.sec_type, c.last_trade, 0.0, "", c.exchange, c.currency,
        c.local_symbol, c.market_name, c.trading_class, c.con_id, c.min_tick, c.multiplier,
        order_types, c.valid_exchanges, 1, under, c.long_name, c.primary_exchange,
        c.contract_month, industry, category, subcategory, c.time_zone, "", "", "", "", 0,
        1, "", "", "26", c.last_trade, c.stock_type, "1", "1", "1",
    ]  # fmt: skip


def _fmt_range(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y%m%d %H:%M:%S")


def _bar_fields(frame: pd.DataFrame, tf: Timeframe, format_date: int, calendar: str) -> list[Any]:
    index = pd.DatetimeIndex(frame.index)
    if tf.is_daily:
        dates = list(index.strftime("%Y%m%d"))
    elif format_date == 2:
        dates = [str(v) for v in index.asi8 // 1_000_000_000]
    else:
        zone = str(calendar_tz(calendar))
        dates = [f"{d} {zone}" for d in index.tz_convert(zone).strftime("%Y%m%d %H:%M:%S")]
    o, h, lo, c, v = (frame[col].tolist() for col in ("open", "high", "low", "close", "volume"))
    # Fields go out as text (floats as repr, which is what encoding them would do): formatting
    # them here, a column at a time, is most of the cost of answering a request.
    os_, hs, ls, cs = (list(map(repr, col)) for col in (o, h, lo, c))
    out: list[Any] = []
    for i, date in enumerate(dates):
        if math.isnan(v[i]):  # MIDPOINT bars (forex): IB sends -1 for volume, WAP and count
            out += [date, os_[i], hs[i], ls[i], cs[i], "-1", "-1", "-1"]
            continue
        wap = repr(round((h[i] + lo[i] + c[i]) / 3, 4))
        out += [date, os_[i], hs[i], ls[i], cs[i], repr(v[i]), wap, str(int(v[i] // 100) + 1)]
    return out
