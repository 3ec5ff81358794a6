"""The Interactive Brokers source: ``ib_async`` (or ``ib_insync``) behind the ``Source`` protocol.

``IBSource`` talks to TWS / IB Gateway (or :mod:`candleflow.ibsim`) through the library's async
API on a private event loop in a dedicated thread — ib_insync's blocking API breaks after an
``asyncio.run()`` in the caller's thread, and callers here are plain threads. It uses only the API
``ib_async`` and ``ib_insync`` share, and imports whichever is installed (ib_async first).

What the libraries leave to the caller, it does itself (``../shared/IB_PROTOCOL.md``):

* every request is bounded by ``timeout`` (the head-timestamp call has no timeout of its own, and
  ib_async treats error 321 as a warning, so the request would never end);
* an instrument spec (:mod:`candleflow.instruments`) becomes the contract IB wants: ``Stock`` on
  SMART, ``Forex`` on IDEALPRO (bars ``MIDPOINT``: IB has no forex trades), ``ContFuture`` /
  ``Future`` on their exchange (dated ones with ``includeExpired``), ``Index``; the qualified
  contract (conId, exchange, multiplier, expiry, local symbol) is kept in the ``Instrument``;
* errors become typed exceptions by code and text (:func:`ib_error`): 200 → ``UnknownSymbol``
  naming the symbol; 162 → ``PacingViolation`` / ``NoData`` / ``InvalidRequest`` ("invalid step");
  321 → ``InvalidRequest``; 1100 and a lost connection → ``SourceUnavailable`` — never an empty
  result taken for success;
* the ``qualifyContracts`` result is normalised (ib_insync drops unknown contracts, ib_async puts
  None in their place);
* requests are in UTC (``formatDate=2``, ``endDateTime`` as ``YYYYMMDD HH:MM:SS UTC``, duration from
  :func:`~candleflow.timeframes.ib_duration`); bars come back as a UTC-indexed float64 frame
  filtered to the segment;
* every historical request first passes the ``request_gate`` (a
  :class:`~candleflow.sources.pacing.RequestGate`: pacing shared with other processes, a no-op by
  default), then the :class:`~candleflow.sources.pacing.PacingLimiter` (shared per gateway within
  the process), so pacing violations do not happen;
* a dropped connection is re-established (``reconnect_attempts``, with backoff) and the lost request
  is sent again; a gateway that stays away gives ``SourceUnavailable``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import operator
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import ModuleType, TracebackType
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from candleflow.errors import (
    Cancelled,
    CandleflowError,
    InvalidRequest,
    NoData,
    PacingViolation,
    SourceUnavailable,
    UnknownSymbol,
)
from candleflow.instruments import AssetClass, InstrumentSpec, parse_instrument
from candleflow.loading.calendars import get_calendar
from candleflow.models import BAR_COLUMNS, INDEX_NAME, Instrument, Segment, parse_symbol
from candleflow.progress import CancelToken
from candleflow.sources.options import MAX_LANES, parse_seconds
from candleflow.sources.pacing import (
    OPEN_GATE,
    MessageThrottle,
    PacingLimiter,
    RequestGate,
    RequestKey,
    shared_limiter,
)
from candleflow.timeframes import Timeframe, ib_duration, parse_timeframe

logger = logging.getLogger(__name__)

__all__ = ["IBSource", "ib_error", "load_ib_library"]

T = TypeVar("T")

#: Requests per second one connection sends at most: IB's API allows 50 messages a second and
#: disconnects a client that sends more; 45 is what both libraries keep to by default. This
#: (not pacing) caps a load of small requests, e.g. 45 days of 1-minute bars a second.
MAX_MESSAGES = 45

#: A lane's client id is the source's plus this times its number, clear of the consecutive ids
#: parallel backfill workers take.
LANE_CLIENT_STEP = 1000

_INFO_CODES = range(2100, 2200)
_CONNECTIVITY_LOST = 1100
_CONNECTIVITY_BACK = (1101, 1102)
_UNAVAILABLE_CODES = frozenset({502, 503, 504, 1100, 1300, 2110})


def load_ib_library() -> ModuleType:
    """``ib_async`` if installed, else ``ib_insync``; ``SourceUnavailable`` when neither is."""
    for name in ("ib_async", "ib_insync"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise SourceUnavailable(
        "the IB source needs ib_async (pip install 'ib_async>=2.1,<3') or ib_insync"
    )


def ib_error(code: int, text: str, *, symbol: str, what: str) -> CandleflowError:
    """The typed exception for IB error ``code``/``text`` answering ``what`` for ``symbol``."""
    message = f"IB error {code} for {what}: {text}"
    lowered = text.lower()
    if code == 200:
        return UnknownSymbol(symbol, "ib", f"IB error 200: {text}")
    if code == 162:
        if "no historical market data" in lowered:
            # IB's answer to a bar type the contract has none of, e.g. TRADES for a forex pair.
            return InvalidRequest(
                message + "; IB has no such data for this contract (forex pairs have MIDPOINT, "
                "BID, ASK and BID_ASK bars, not TRADES)"
            )
        if "pacing violation" in lowered:
            return PacingViolation(message + " (the limiter should have prevented this)")
        if "no data" in lowered:
            return NoData(message)
        if "invalid step" in lowered:
            return InvalidRequest(message + "; the request spans more than IB allows")
        if "cancelled" in lowered or "canceled" in lowered:
            return SourceUnavailable(message)
        return InvalidRequest(message)
    if code == 321:
        return InvalidRequest(message + "; IB rejected the request's parameters")
    if code == 10339:
        return InvalidRequest(
            message + "; IB serves a continuous future only back from now: load a dated "
            "contract (e.g. ES:fut:202612) for older bars"
        )
    if code in _UNAVAILABLE_CODES:
        return SourceUnavailable(message)
    return InvalidRequest(message)


class _ConnectionLost(Exception):
    """The socket went away (or never came up); the caller may reconnect and retry."""


class _Pending:
    """Errors IB sent for the one request in flight (request ids from ``first_id`` on)."""

    def __init__(self, first_id: int | None) -> None:
        self.first_id = first_id
        self.errors: list[tuple[int, str]] = []
        self.arrived = asyncio.Event()

    def owns(self, req_id: int) -> bool:
        # An answer to an earlier, abandoned request (e.g. 366 after a timeout) is not ours.
        return self.first_id is None or req_id >= self.first_id


class _LoopThread:
    """A private asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # ib_insync and eventkit look the loop up with get_event_loop(): make it this thread's.
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class IBSource:
    """Bars from TWS / IB Gateway (see the module docstring).

    ``limiter`` defaults to the process-wide limiter for ``host:port``; give a
    ``PacingLimiter(time_scale=…)`` matching a time-scaled simulator. ``calendar_map`` maps a
    symbol to its exchange_calendars name (overriding ``validate``'s ``calendar``).
    ``request_gate`` is passed before the limiter by every historical request (and by a resent
    one), e.g. a rate limit shared by worker processes; the default lets everything through.
    ``cancel_token`` interrupts gate, pacing and reconnect waits. ``what_to_show`` is the bar type
    of every request (default: each instrument's own, ``MIDPOINT`` for forex and ``TRADES`` for
    the rest); ``exchange``/``currency`` override every spec's (see
    :func:`candleflow.instruments.parse_instrument`). ``max_messages`` is the client's throttle
    in messages per second (:data:`MAX_MESSAGES`; 0 lifts it, for a simulator only). One
    connection sends one request at a time (calls from several threads queue). ``lanes`` > 1
    opens that many connections (client ids ``client_id + 1000·k``) so historical requests from
    several threads overlap — the fetch stage then keeps ``lanes`` requests in flight; they all
    pass the same limiter, and every other call uses the first.
    """

    name = "ib"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4002,
        client_id: int = 1,
        *,
        timeout: float = 30.0,
        limiter: PacingLimiter | None = None,
        calendar_map: Mapping[str, str] | None = None,
        reconnect_attempts: int = 3,
        reconnect_backoff: float = 0.5,
        what_to_show: str | None = None,
        use_rth: bool = False,
        exchange: str | None = None,
        currency: str | None = None,
        cancel_token: CancelToken | None = None,
        request_gate: RequestGate | None = None,
        max_messages: int = MAX_MESSAGES,
        lanes: int = 1,
    ) -> None:
        if reconnect_attempts < 0:
            raise InvalidRequest(f"reconnect_attempts must be >= 0, got {reconnect_attempts!r}")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 0:
            raise InvalidRequest(
                f"max_messages must be a whole number of messages per second >= 0 (0: no "
                f"throttle), got {max_messages!r}; IB's API limit is 50"
            )
        self.max_messages = max_messages
        self._throttle = MessageThrottle(max_messages)
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= MAX_LANES:
            raise InvalidRequest(
                f"lanes must be a whole number from 1 to {MAX_LANES}, got {lanes!r}", "lanes", lanes
            )
        self.lanes = lanes
        self.host = host
        self.port = int(port)
        self.client_id = int(client_id)
        self.timeout = parse_seconds(timeout, "timeout", positive=True)
        self.limiter = limiter or shared_limiter(f"ib:{host}:{port}")
        self.request_gate: RequestGate = request_gate or OPEN_GATE
        self.calendar_map = {parse_symbol(k): v for k, v in (calendar_map or {}).items()}
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_backoff = float(reconnect_backoff)
        self.what_to_show = what_to_show
        self.use_rth = use_rth
        self.exchange = exchange
        self.currency = currency
        self._token = cancel_token or CancelToken()
        self._lib = load_ib_library()
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._api_calls = 0
        self._historical_calls = 0
        self._connects = 0
        self._worker: _LoopThread | None = None
        self._ib: Any = None
        self._pending: _Pending | None = None
        self._farm_ok: asyncio.Event | None = None
        self._gave_up = False
        self._closed = False
        # Lanes beyond the first: sources of their own (own connection, client id, loop), sharing
        # this one's limiter, gate and cancel token; each historical request takes a free lane.
        self._siblings = [
            IBSource(
                host, port, self.client_id + LANE_CLIENT_STEP * k, timeout=timeout,
                limiter=self.limiter, calendar_map=calendar_map,
                reconnect_attempts=reconnect_attempts, reconnect_backoff=reconnect_backoff,
                what_to_show=what_to_show, use_rth=use_rth, exchange=exchange,
                currency=currency, cancel_token=self._token, request_gate=self.request_gate,
                max_messages=max_messages,
            )
            for k in range(1, lanes)
        ]  # fmt: skip
        self._free: queue.SimpleQueue[IBSource] = queue.SimpleQueue()
        for lane in (self, *self._siblings):
            self._free.put(lane)

    def __repr__(self) -> str:
        return f"IBSource({self.host}:{self.port}, client_id={self.client_id}, lib={self.library})"

    @property
    def library(self) -> str:
        """``ib_async`` or ``ib_insync``: the client library in use."""
        return self._lib.__name__

    @property
    def api_calls(self) -> int:
        """Requests sent to IB (contract details, head timestamps, historical data), all lanes."""
        with self._counter_lock:
            own = self._api_calls
        return own + sum(s.api_calls for s in self._siblings)

    @property
    def historical_calls(self) -> int:
        """Historical-data requests sent (each one passed the pacing limiter), all lanes."""
        with self._counter_lock:
            own = self._historical_calls
        return own + sum(s.historical_calls for s in self._siblings)

    @property
    def connects(self) -> int:
        """Successful connections made (1 + reconnects), all lanes."""
        with self._counter_lock:
            own = self._connects
        return own + sum(s.connects for s in self._siblings)

    # ------------------------------------------------------------------ Source protocol

    def validate(
        self,
        symbol: str,
        calendar: str | None = None,
        *,
        exchange: str | None = None,
        currency: str | None = None,
    ) -> Instrument:
        """Qualify the contract an instrument spec names (``AAPL`` → ``Stock``, ``EUR.USD`` →
        ``Forex`` on IDEALPRO, ``ES:fut`` → ``ContFuture``, ``ESZ6`` → ``Future``, ``SPX:ind``
        → ``Index``) and return it as an ``Instrument`` recording the qualified contract.

        ``calendar`` defaults to the spec's (``calendar_map`` first); ``exchange``/``currency``
        override the spec's and the source's. ``UnknownSymbol`` names a contract IB does not know.
        """
        normalized = parse_symbol(symbol)
        spec = parse_instrument(
            normalized,
            exchange=exchange or self.exchange,
            currency=currency or self.currency,
        )
        chosen = spec.calendar if calendar is None else calendar.strip()
        chosen = self.calendar_map.get(normalized, chosen)
        get_calendar(chosen)  # an unknown calendar is the caller's error: say so before asking IB
        contract = self._spec_contract(spec)

        async def qualify() -> Any:
            return await self._ib.qualifyContractsAsync(contract)

        result = self._call(qualify, symbol=normalized, what=f"contract details of {normalized}")
        qualified = _qualified(result)
        if qualified is None:
            raise UnknownSymbol(normalized, "ib", "IB returned no contract details")
        return Instrument(
            normalized,
            calendar=chosen,
            sec_type=spec.sec_type,
            exchange=qualified.exchange or spec.exchange,
            currency=qualified.currency or spec.currency,
            primary_exchange=qualified.primaryExchange or "",
            con_id=int(qualified.conId or 0),
            expiry=qualified.lastTradeDateOrContractMonth or "",
            multiplier=qualified.multiplier or "",
            local_symbol=qualified.localSymbol or "",
            trading_class=qualified.tradingClass or "",
        )

    def _spec_contract(self, spec: InstrumentSpec) -> Any:
        """The ib_async/ib_insync contract object a spec names, before qualification."""
        lib = self._lib
        if spec.asset_class is AssetClass.FOREX:
            return lib.Forex(pair=spec.symbol + spec.currency, exchange=spec.exchange)
        if spec.asset_class is AssetClass.FUTURE:
            if not spec.expiry:
                return lib.ContFuture(spec.symbol, spec.exchange, currency=spec.currency)
            future = lib.Future(spec.symbol, spec.expiry, spec.exchange, currency=spec.currency)
            future.includeExpired = True  # history of expired contracts stays loadable
            return future
        if spec.asset_class is AssetClass.INDEX:
            return lib.Index(spec.symbol, spec.exchange, spec.currency)
        return lib.Stock(_ib_ticker(spec.symbol), spec.exchange, spec.currency)

    def _what_to_show(self, instrument: Instrument) -> str:
        return self.what_to_show or instrument.what_to_show

    def head_timestamp(self, instrument: Instrument, timeframe: Timeframe | str) -> pd.Timestamp:
        """IB's earliest ``what_to_show`` data for the instrument (UTC; a date for daily bars)."""
        tf = parse_timeframe(timeframe)
        contract = self._contract(instrument)

        what_to_show = self._what_to_show(instrument)

        async def head() -> Any:
            return await self._ib.reqHeadTimeStampAsync(contract, what_to_show, self.use_rth, 2)

        value = self._call(
            head, symbol=instrument.symbol, what=f"head timestamp of {instrument.symbol}"
        )
        if not hasattr(value, "year"):
            raise NoData(f"IB sent no head timestamp for {instrument.symbol} ({value!r})")
        ts = _utc(value)
        # Daily bars are labelled with the session date at midnight UTC.
        return ts.floor("D") if tf.is_daily else ts

    def fetch(
        self, instrument: Instrument, timeframe: Timeframe | str, segment: Segment
    ) -> pd.DataFrame:
        """Bars starting in ``[segment.start, segment.end)``; ``NoData`` if IB sends none.

        With several ``lanes``, calls from several threads run at once, one per free lane."""
        if not self._siblings:
            return self._fetch(instrument, timeframe, segment)
        lane = self._free.get()
        try:
            return lane._fetch(instrument, timeframe, segment)
        finally:
            self._free.put(lane)

    def _fetch(
        self, instrument: Instrument, timeframe: Timeframe | str, segment: Segment
    ) -> pd.DataFrame:
        tf = parse_timeframe(timeframe)
        contract = self._contract(instrument)
        what = f"{instrument.symbol} {tf.ib_bar_size} bars {segment.label()}"
        what_to_show = self._what_to_show(instrument)
        if instrument.sec_type == "CONTFUT":
            # IB refuses an end date for a continuous future (10339): ask back from now.
            end, span = "", pd.Timestamp.now(tz="UTC") - segment.start
            if span > tf.max_span:
                raise InvalidRequest(
                    f"cannot load {what}: IB serves a continuous future only back from now, at "
                    f"most {tf.ib_max_duration} of {tf.ib_bar_size} bars; load a dated contract "
                    "(e.g. ES:fut:202612) for older bars"
                )
            duration = ib_duration(span, tf)
        else:
            duration = ib_duration(segment.span, tf)
            end = segment.end.tz_convert("UTC").strftime("%Y%m%d %H:%M:%S UTC")
        key = RequestKey(
            str(instrument.con_id or instrument.symbol),
            instrument.exchange,
            what_to_show,
            f"{end}|{tf.ib_bar_size}|{duration}|{self.use_rth}",
        )

        async def historical() -> Any:
            return await self._ib.reqHistoricalDataAsync(
                contract, end, duration, tf.ib_bar_size, what_to_show, self.use_rth,
                formatDate=2, timeout=0,
            )  # fmt: skip

        bars = self._call(historical, symbol=instrument.symbol, what=what, pacing=key)
        frame = _bars_frame(bars, what, segment.start, segment.end)
        if frame.empty:
            raise NoData(f"IB sent no bars for {what} inside the segment")
        return frame

    def close(self) -> None:
        """Disconnect and stop the private loop (every lane's); safe to call twice."""
        for sibling in self._siblings:
            sibling.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            try:
                worker.run(self._disconnect())
            finally:
                worker.stop()

    def __enter__(self) -> IBSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ request machinery

    def _contract(self, instrument: Instrument) -> Any:
        """The qualified contract an ``Instrument`` records (conId first, as IB matches it)."""
        try:
            symbol = parse_instrument(instrument.symbol).symbol
        except InvalidRequest:
            symbol = instrument.symbol
        contract = self._lib.Contract(
            secType=instrument.sec_type,
            conId=instrument.con_id,
            symbol=_ib_ticker(symbol) if instrument.sec_type == "STK" else symbol,
            lastTradeDateOrContractMonth=instrument.expiry if instrument.sec_type == "FUT" else "",
            multiplier=instrument.multiplier,
            exchange=instrument.exchange,
            primaryExchange=instrument.primary_exchange,
            currency=instrument.currency,
            localSymbol=instrument.local_symbol,
            tradingClass=instrument.trading_class,
        )
        contract.includeExpired = instrument.sec_type == "FUT"
        return contract

    def _call(
        self,
        request: Callable[[], Awaitable[T]],
        *,
        symbol: str,
        what: str,
        pacing: RequestKey | None = None,
    ) -> T:
        """Send ``request`` (reconnecting and resending after a lost connection), typed errors."""
        with self._lock:
            if self._closed:
                raise SourceUnavailable(f"{self!r} is closed; create a new IBSource")
            if self._worker is None:
                self._worker = _LoopThread(f"ib-{self.host}:{self.port}")
            worker = self._worker
            # After giving up once, one quick attempt per call: fail fast, recover when it is back.
            attempts = 1 if self._gave_up else self.reconnect_attempts + 1
            last: BaseException | None = None
            for attempt in range(attempts):
                if attempt:
                    wait = self.reconnect_backoff * 2 ** (attempt - 1)
                    logger.warning("IB connection lost (%s); reconnecting in %.2fs", last, wait)
                    if self._token.wait(wait):
                        raise Cancelled(self._token.reason)
                try:
                    if self._ib is None or not self._ib.isConnected():
                        worker.run(self._connect())
                    if pacing is None:
                        self._throttle.acquire(self._token)
                        result = worker.run(self._once(request, symbol, what, False))
                    else:
                        # The shared gate first, then the message rate: the limiter then
                        # records the request when it really leaves (nothing holds it after).
                        self.request_gate.acquire(self._token)
                        self._throttle.acquire(self._token)
                        with self.limiter.acquire(pacing, self._token):
                            result = worker.run(self._once(request, symbol, what, True))
                except _ConnectionLost as exc:
                    last = exc.__cause__ or exc
                    continue
                self._gave_up = False
                return result
            self._gave_up = True
            raise SourceUnavailable(
                f"IB gateway {self.host}:{self.port} unreachable for {what} after {attempts} "
                f"attempt(s): {last}; start TWS/IB Gateway (or `candleflow ib-sim`) and rerun"
            ) from last

    async def _connect(self) -> None:
        if self._ib is not None and self._ib.isConnected():
            return
        await self._disconnect()
        ib = self._lib.IB()
        ib.RaiseRequestErrors = False
        # The library's own throttle would hold requests after the limiter let them go (and
        # past its margin): ``_throttle`` keeps the message rate before the limiter instead.
        ib.client.MaxRequests = 0
        ib.errorEvent += self._on_error
        self._farm_ok = asyncio.Event()
        self._farm_ok.set()
        try:
            await asyncio.wait_for(
                ib.connectAsync(
                    self.host, self.port, clientId=self.client_id, timeout=self.timeout
                ),
                self.timeout + 1,
            )
        except (TimeoutError, OSError, ConnectionError) as exc:
            ib.errorEvent -= self._on_error
            raise _ConnectionLost(f"cannot connect to {self.host}:{self.port}") from exc
        self._ib = ib
        with self._counter_lock:
            self._connects += 1

    async def _disconnect(self) -> None:
        ib, self._ib = self._ib, None
        if ib is not None:
            ib.errorEvent -= self._on_error
            ib.disconnect()

    def _on_error(self, req_id: int, code: int, text: str, *_: Any) -> None:
        if code in _INFO_CODES:
            return
        if code == _CONNECTIVITY_LOST and self._farm_ok is not None:
            logger.warning("IB reports lost connectivity (1100): %s", text)
            self._farm_ok.clear()
        elif code in _CONNECTIVITY_BACK and self._farm_ok is not None:
            logger.info("IB connectivity restored (%d): %s", code, text)
            self._farm_ok.set()
        elif req_id >= 0 and self._pending is not None and self._pending.owns(req_id):
            self._pending.errors.append((code, text))
            self._pending.arrived.set()
        else:
            logger.info("IB error %d for request %d (not in flight): %s", code, req_id, text)

    async def _once(
        self, request: Callable[[], Awaitable[T]], symbol: str, what: str, historical: bool
    ) -> T:
        """One request, bounded by the timeout; IB's errors for it raised as typed exceptions."""
        if self._farm_ok is not None and not self._farm_ok.is_set():
            try:
                await asyncio.wait_for(self._farm_ok.wait(), self.timeout)
            except TimeoutError:
                raise SourceUnavailable(
                    f"IB lost connectivity to its servers (1100) and did not restore it within "
                    f"{self.timeout:g}s; {what} not sent"
                ) from None
        # Both libraries number requests from client._reqIdSeq (not public API: read defensively).
        next_id = getattr(getattr(self._ib, "client", None), "_reqIdSeq", None)
        pending = self._pending = _Pending(next_id if isinstance(next_id, int) else None)
        with self._counter_lock:
            self._api_calls += 1
            if historical:
                self._historical_calls += 1
        task = asyncio.ensure_future(request())
        error_arrived = asyncio.ensure_future(pending.arrived.wait())
        try:
            done, _ = await asyncio.wait(
                {task, error_arrived}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            error_arrived.cancel()
            self._pending = None
        if task not in done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if pending.errors:
            code, text = pending.errors[0]
            raise ib_error(code, text, symbol=symbol, what=what)
        if task not in done:
            raise SourceUnavailable(f"IB did not answer {what} within {self.timeout:g}s")
        try:
            return task.result()
        except ConnectionError as exc:
            raise _ConnectionLost(str(exc)) from exc


def _qualified(result: Any) -> Any:
    """The one qualified contract in a ``qualifyContracts`` result, or None.

    ib_insync drops unknown contracts (``[]``); ib_async keeps their place as ``None`` (and may
    put a list of candidates there for an ambiguous one).
    """
    found = [c for c in (result or []) if c is not None and not isinstance(c, list)]
    return found[0] if found else None


def _ib_ticker(symbol: str) -> str:
    """IB's spelling of a stock ticker: a class share is ``BRK B`` at IB, ``BRK.B`` elsewhere."""
    base, dot, share = symbol.partition(".")
    return f"{base} {share}" if dot and len(share) == 1 and base.isalpha() else symbol


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


_DATE = operator.attrgetter("date")
_OHLCV = operator.attrgetter("open", "high", "low", "close", "volume")


def _bars_frame(bars: Any, what: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """IB ``BarData`` items starting in ``[start, end)`` as a canonical bar frame (UTC index,
    float64 columns)."""
    rows = list(bars or [])
    if not rows:
        raise NoData(f"IB sent no bars for {what}")
    dates = list(map(_DATE, rows))
    if all(isinstance(d, dt.datetime) and d.tzinfo is not None for d in dates):
        # formatDate=2 intraday bars: aware datetimes; epoch arithmetic is ~10x faster here.
        seconds = np.fromiter(map(dt.datetime.timestamp, dates), dtype=np.float64, count=len(rows))
        ns = np.round(seconds).astype(np.int64) * 1_000_000_000
    else:  # daily bars are dates; anything naive is read as UTC
        ns = pd.DatetimeIndex(pd.to_datetime(dates, utc=True)).as_unit("ns").asi8
    values = np.array(list(map(_OHLCV, rows)), dtype=np.float64)
    keep = (ns >= start.as_unit("ns").value) & (ns < end.as_unit("ns").value)
    ns, values = ns[keep], values[keep]
    # MIDPOINT (forex) bars have no volume: IB sends -1.
    values[values[:, 4] < 0, 4] = np.nan
    index = pd.DatetimeIndex(ns.view("M8[ns]"), name=INDEX_NAME).tz_localize("UTC")
    frame = pd.DataFrame(values, index=index, columns=list(BAR_COLUMNS))
    if not index.is_monotonic_increasing:
        frame = frame.sort_index()
    return frame
