"""What the simulated gateway knows: contract details, head timestamps and historical bars.

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

import hashlib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from candleflow.errors import InvalidRequest, NoData
from candleflow.ibsim.protocol import Field, WireContract
from candleflow.loading.calendars import DEFAULT_CALENDAR, calendar_tz
from candleflow.models import SYMBOL_RE, Instrument, Segment
from candleflow.sources.synthetic import SyntheticSource
from candleflow.timeframes import Timeframe, from_ib_bar_size, parse_ib_duration

DEFAULT_UNKNOWN: frozenset[str] = frozenset({"UNKNOWN", "ZZZZ"})
_END_RE = re.compile(r"(\d{8})(?:[ -](\d{2}:\d{2}:\d{2}))?(?:\s+(\S+))?")
_ZONE_ALIASES = {"UTC": "UTC", "GMT": "UTC"}


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


def _con_id(symbol: str) -> int:
    digest = hashlib.blake2b(symbol.encode(), digest_size=4).digest()
    return 1 + int.from_bytes(digest, "big") % 2_000_000_000


class SimulatedData:
    """Contract details, heads and bars of the simulated gateway (see the module docstring).

    ``unknown`` symbols (and malformed ones) get error 200; ``calendars`` maps a symbol to its
    exchange_calendars name (default XNYS); ``now`` is the clock for "bars not ended yet".
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        head: pd.Timestamp | str | Mapping[str, pd.Timestamp | str] = "2015-01-02",
        unknown: Collection[str] = DEFAULT_UNKNOWN,
        calendars: Mapping[str, str] | None = None,
        now: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        self.seed = seed
        self.unknown = frozenset(s.upper() for s in unknown)
        self.calendars = dict(calendars or {})
        self._source = SyntheticSource(seed, head=head, now=now)
        self._now = now

    def clock(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC") if self._now is None else self._now()

    def instrument(self, contract: WireContract) -> Instrument:
        """The instrument behind ``contract``; ``IBError(200)`` for unknown symbols."""
        symbol = contract.symbol.strip().upper()
        if SYMBOL_RE.fullmatch(symbol) is None or symbol in self.unknown:
            raise IBError(200, "No security definition has been found for the request")
        return Instrument(
            symbol,
            calendar=self.calendars.get(symbol, DEFAULT_CALENDAR),
            sec_type=contract.sec_type or "STK",
            exchange=contract.exchange or "SMART",
            currency=contract.currency or "USD",
            primary_exchange=contract.primary_exchange or "NASDAQ",
            con_id=_con_id(symbol),
            long_name=f"SIMULATED {symbol} INC",
        )

    def contract_details(self, req_id: int, contract: WireContract) -> list[Field]:
        """The fields of one contractData message (10) for ``contract``."""
        inst = self.instrument(contract)
        zone = str(calendar_tz(inst.calendar))
        return [
            10, req_id, inst.symbol, inst.sec_type, "", 0.0, "", inst.exchange, inst.currency,
            inst.symbol, "NMS", inst.symbol, inst.con_id, 0.01, "",
            "ACTIVETIM,ADJUST,ALERT,ALGO,LMT,MKT,STP", f"SMART,{inst.primary_exchange}", 1, 0,
            inst.long_name, inst.primary_exchange, "", "Technology", "Computers", "Software",
            zone, "", "", "", "", 0,
            1, "", "", "26", "", "COMMON", "1", "1", "100",
        ]  # fmt: skip

    def head(self, contract: WireContract) -> pd.Timestamp:
        """The first 1-minute bar at or after the symbol's head (IB's head is per tick type)."""
        return self._source.head_timestamp(self.instrument(contract), "1m")

    def head_text(self, contract: WireContract, format_date: int) -> str:
        head = self.head(contract)
        if format_date == 2:
            return str(int(head.timestamp()))
        return head.strftime("%Y%m%d-%H:%M:%S")

    def bars(self, query: HistoricalQuery) -> tuple[pd.DataFrame, Timeframe, Instrument]:
        """Bars answering ``query``; raises ``IBError`` as IB would."""
        inst = self.instrument(query.contract)
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
        end = parse_end(query.end, self.clock())
        segment = Segment(end - span, end, 0)
        try:
            frame = self._source.fetch(inst, tf, segment)
        except NoData:
            raise IBError(
                162,
                "Historical Market Data Service error message:HMDS query returned no data: "
                f"{query.contract.label} {query.what_to_show.title()}",
            ) from None
        return frame, tf, inst

    def historical_fields(self, query: HistoricalQuery) -> tuple[list[Field], int]:
        """The fields of the historicalData message (17) and the number of bars in it."""
        frame, tf, inst = self.bars(query)
        end = parse_end(query.end, self.clock())
        start = end - parse_ib_duration(query.duration)
        fields: list[Field] = [17, query.req_id, _fmt_range(start), _fmt_range(end), len(frame)]
        fields.extend(_bar_fields(frame, tf, query.format_date, inst.calendar))
        return fields, len(frame)


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
    out: list[Any] = []
    for i, date in enumerate(dates):
        wap = round((h[i] + lo[i] + c[i]) / 3, 4)
        out += [date, o[i], h[i], lo[i], c[i], v[i], wap, int(v[i] // 100) + 1]
    return out
