"""The IB Gateway simulator: an asyncio TWS-protocol server on loopback, run in a background thread.

``IBSimulator`` accepts real ``ib_async``/``ib_insync`` clients: the handshake at server version
176, startApi → nextValidId + managedAccounts + the 2104/2106/2158 notices, an end marker for every
connect-time request, contract details, head timestamps and historical bars from
:mod:`candleflow.ibsim.data`. Historical requests are paced by a
:class:`~candleflow.sources.pacing.PacingJudge` (IB's rules, scaled by ``time_scale``); violations
answer 162 "Historical data request pacing violation". Faults come from
:mod:`candleflow.ibsim.faults`. Shutdown closes every connection and awaits the handlers, so
asyncio logs no cancellation noise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from candleflow.errors import InvalidRequest, SourceUnavailable
from candleflow.ibsim import protocol as p
from candleflow.ibsim.data import DEFAULT_UNKNOWN, HistoricalQuery, IBError, SimulatedData
from candleflow.ibsim.directory import Directory
from candleflow.ibsim.faults import ERROR_TEXTS, Faults
from candleflow.sources.pacing import IB_PACING, PacingJudge, PacingRules, RequestKey

logger = logging.getLogger(__name__)

ACCOUNT = "DU1234567"
PACING_TEXT = (
    "Historical Market Data Service error message:Historical data request pacing violation"
)
_NOTICES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
# Connect-time requests and the end marker each needs: msg id → (reply id, reply fields builder).
_END_MARKERS: dict[int, Callable[[list[str]], list[p.Field]]] = {
    p.IN_REQ_POSITIONS: lambda f: [p.OUT_POSITION_END, 1],
    p.IN_REQ_OPEN_ORDERS: lambda f: [p.OUT_OPEN_ORDER_END, 1],
    p.IN_REQ_COMPLETED_ORDERS: lambda f: [p.OUT_COMPLETED_ORDERS_END],
    p.IN_REQ_ACCOUNT_UPDATES: lambda f: [p.OUT_ACCOUNT_DOWNLOAD_END, 1, ACCOUNT],
    p.IN_REQ_ACCOUNT_UPDATES_MULTI: lambda f: [p.OUT_ACCOUNT_UPDATE_MULTI_END, 1, f[2]],
    p.IN_REQ_EXECUTIONS: lambda f: [p.OUT_EXEC_DETAILS_END, 1, f[2]],
    p.IN_REQ_ACCOUNT_SUMMARY: lambda f: [p.OUT_ACCOUNT_SUMMARY_END, 1, f[2]],
}


@dataclass(frozen=True, slots=True)
class SimStats:
    """A snapshot of what the simulator received and answered."""

    connections: int = 0
    historical_requests: int = 0
    historical_answered: int = 0
    violations: int = 0
    contract_requests: int = 0
    head_requests: int = 0
    bars_sent: int = 0
    drops: int = 0
    most_in_flight: int = 0  # historical requests being answered at once, at most
    per_symbol: Mapping[str, int] = field(default_factory=dict)
    errors_sent: Mapping[int, int] = field(default_factory=dict)
    queries: tuple[HistoricalQuery, ...] = ()


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.historical = 0
        self.answered = 0
        self.violations = 0
        self.contracts = 0
        self.heads = 0
        self.bars = 0
        self.drops = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.per_symbol: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[int] = collections.Counter()
        self.queries: list[HistoricalQuery] = []

    def snapshot(self) -> SimStats:
        with self.lock:
            return SimStats(
                connections=self.connections,
                historical_requests=self.historical,
                historical_answered=self.answered,
                violations=self.violations,
                contract_requests=self.contracts,
                head_requests=self.heads,
                bars_sent=self.bars,
                drops=self.drops,
                most_in_flight=self.most_in_flight,
                per_symbol=dict(self.per_symbol),
                errors_sent=dict(self.errors),
                queries=tuple(self.queries),
            )


class _Connection:
    """One client session: reads frames, dispatches them, writes answers."""

    def __init__(
        self, sim: IBSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def send(self, *fields: p.Field) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(p.encode_fields(*fields))

    def error(self, req_id: int, code: int, text: str) -> None:
        with self.sim._counters.lock:
            self.sim._counters.errors[code] += 1
        self.send(p.OUT_ERROR, 2, req_id, code, text, "")

    def drop(self) -> None:
        self.closed = True
        self.writer.transport.abort()

    async def run(self) -> None:
        try:
            if not await self._handshake():
                return
            buffer = bytearray()
            while not self.closed:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                buffer.extend(chunk)
                for payload in p.split_frames(buffer):
                    self.dispatch(p.decode_fields(payload))
        except (ConnectionError, asyncio.IncompleteReadError, InvalidRequest) as exc:
            logger.debug("ibsim connection ended: %s", exc)
        finally:
            # The client is gone: answers still pending (delayed) have no one to go to.
            self.closed = True
            for task in self.tasks:
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()

    async def _handshake(self) -> bool:
        prefix = await self.reader.readexactly(len(p.HANDSHAKE_PREFIX))
        if prefix != p.HANDSHAKE_PREFIX:
            logger.debug("ibsim: not a TWS client (%r)", prefix)
            return False
        size = int.from_bytes(await self.reader.readexactly(4), "big")
        fields = p.decode_fields(await self.reader.readexactly(size))
        version = p.negotiate_version(fields[0] if fields else "")
        now = pd.Timestamp.now(tz="UTC").strftime("%Y%m%d %H:%M:%S")
        self.writer.write(p.encode_fields(version, f"{now} Greenwich Mean Time"))
        return True

    def dispatch(self, fields: list[str]) -> None:
        if not fields:
            return
        msg = int(fields[0])
        if msg == p.IN_START_API:
            self.send(p.OUT_NEXT_VALID_ID, 1, 1)
            self.send(p.OUT_MANAGED_ACCOUNTS, 1, ACCOUNT)
            for code, text in _NOTICES:
                self.send(p.OUT_ERROR, 2, -1, code, text, "")
        elif msg in _END_MARKERS:
            self.send(*_END_MARKERS[msg](fields))
        elif msg == p.IN_REQ_CURRENT_TIME:
            self.send(p.OUT_CURRENT_TIME, 1, int(pd.Timestamp.now(tz="UTC").timestamp()))
        elif msg == p.IN_REQ_CONTRACT_DETAILS:
            self._contract_details(fields)
        elif msg == p.IN_REQ_HEAD_TIMESTAMP:
            self._head_timestamp(fields)
        elif msg == p.IN_REQ_HISTORICAL_DATA:
            self._historical(fields)
        elif msg in (p.IN_CANCEL_HEAD_TIMESTAMP, p.IN_CANCEL_HISTORICAL_DATA):
            pass  # answered requests need no cancelling; nothing is streamed
        else:
            logger.debug("ibsim ignores message %s", fields[:3])

    def _contract_details(self, fields: list[str]) -> None:
        # 9, 8, reqId, contract×12, includeExpired, secIdType, secId, issuerId
        req_id = int(fields[2])
        contract = p.WireContract.from_fields(fields, 3)
        with self.sim._counters.lock:
            self.sim._counters.contracts += 1
        include_expired = len(fields) > 15 and fields[15] == "1"
        try:
            messages = self.sim.data.contract_details(req_id, contract, include_expired)
        except IBError as exc:
            self.error(req_id, exc.code, exc.text)
            return
        for message in messages:
            self.send(*message)
        self.send(p.OUT_CONTRACT_DATA_END, 1, req_id)

    def _head_timestamp(self, fields: list[str]) -> None:
        # 87, reqId, contract×12, includeExpired, useRTH, whatToShow, formatDate
        req_id = int(fields[1])
        contract = p.WireContract.from_fields(fields, 2)
        with self.sim._counters.lock:
            self.sim._counters.heads += 1
        try:
            self.send(
                p.OUT_HEAD_TIMESTAMP,
                req_id,
                self.sim.data.head_text(contract, int(fields[17] or 1), fields[16]),
            )
        except IBError as exc:
            self.error(req_id, exc.code, exc.text)

    def _historical(self, fields: list[str]) -> None:
        query = HistoricalQuery.from_fields(fields)
        sim = self.sim
        with sim._counters.lock:
            sim._counters.historical += 1
            number = sim._counters.historical
            sim._counters.per_symbol[query.contract.symbol] += 1
            sim._counters.queries.append(query)
            drops_done = sim._counters.drops
        faults = sim.faults
        if faults.drops_at(number, drops_done):
            with sim._counters.lock:
                sim._counters.drops += 1
            logger.info("ibsim: dropping the connection at historical request %d", number)
            self.drop()
            if faults.stay_down:
                sim._go_down()
            return
        task = asyncio.get_running_loop().create_task(self._answer(number, query))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, number: int, query: HistoricalQuery) -> None:
        sim = self.sim
        key = RequestKey(
            query.contract.con_id
            if query.contract.con_id not in ("", "0")
            else query.contract.symbol,
            query.contract.exchange,
            query.what_to_show,
            query.params,
        )
        verdict = sim.judge.judge(key) if sim.pacing else None
        with sim._counters.lock:
            sim._counters.in_flight += 1
            sim._counters.most_in_flight = max(
                sim._counters.most_in_flight, sim._counters.in_flight
            )
        try:
            if sim.faults.delay > 0:
                await asyncio.sleep(sim.faults.delay)
            if verdict is not None:
                with sim._counters.lock:
                    sim._counters.violations += 1
                logger.info("ibsim: pacing violation for request %d: %s", number, verdict)
                self.error(query.req_id, 162, PACING_TEXT)
                return
            if sim.faults.blip_at == number:
                self.error(-1, 1100, ERROR_TEXTS[1100])
                self.error(-1, 1102, ERROR_TEXTS[1102])
            injected = sim.faults.error_for(number, query)
            if injected is not None:
                self.error(query.req_id, *injected)
                return
            try:
                message, n = sim.data.historical_fields(query)
            except IBError as exc:
                self.error(query.req_id, exc.code, exc.text)
                return
            with sim._counters.lock:  # counted before sending, so a client never sees it early
                sim._counters.answered += 1
                sim._counters.bars += n
            self.send(*message)
        finally:
            with sim._counters.lock:
                sim._counters.in_flight -= 1
            if sim.pacing and verdict is None:
                sim.judge.finish()


class IBSimulator:
    """A loopback TWS-protocol gateway in a background thread (see the module docstring).

    Use it as a context manager, or ``start()``/``stop()``. ``port=0`` picks a free port, read it
    from ``.port`` once started. ``time_scale`` shrinks the pacing windows (0.01: the 600 s window
    lasts 6 s); ``pacing=False`` turns enforcement off. ``head``, ``unknown`` and ``calendars``
    shape the data (:class:`~candleflow.ibsim.data.SimulatedData`); ``directory`` is the
    instruments it knows (default: the shipped one; see :func:`load_directory`); ``faults``
    injects trouble.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        time_scale: float = 1.0,
        pacing: bool = True,
        *,
        faults: Faults | None = None,
        head: pd.Timestamp | str | Mapping[str, pd.Timestamp | str] = "2015-01-02",
        unknown: Collection[str] = DEFAULT_UNKNOWN,
        calendars: Mapping[str, str] | None = None,
        rules: PacingRules = IB_PACING,
        now: Callable[[], pd.Timestamp] | None = None,
        directory: Directory | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.time_scale = time_scale
        self.pacing = pacing
        self.faults = faults or Faults()
        self.data = SimulatedData(
            seed, head=head, unknown=unknown, calendars=calendars, now=now, directory=directory
        )
        self.judge = PacingJudge(rules, time_scale=time_scale)
        self._counters = _Counters()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"IBSimulator({self.host}:{self.port}, seed={self.seed}, "
            f"time_scale={self.time_scale:g})"
        )

    @property
    def stats(self) -> SimStats:
        return self._counters.snapshot()

    # ------------------------------------------------------------------ lifecycle (caller thread)

    def start(self) -> IBSimulator:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise InvalidRequest("IBSimulator already started")
        self._thread = threading.Thread(target=self._run, name=f"ibsim-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise SourceUnavailable(
                f"IB simulator cannot listen on {self.host}:{self.port}: {self._startup_error}"
            ) from self._startup_error
        return self

    def stop(self) -> None:
        """Close every connection, await the handlers, stop the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._stop is not None:
            loop.call_soon_threadsafe(self._stop.set)
        thread.join()
        self._thread = None
        self._loop = None

    def restore(self) -> None:
        """Listen again after a ``stay_down`` drop (same port)."""
        self._call(self._listen())

    def go_down(self) -> None:
        """Stop listening and drop every connection, as a gateway that died would."""
        self._call(self._down())

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            coro.close()
            raise InvalidRequest("IBSimulator is not running; start() it first")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> IBSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ the loop thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # start() must never wait for a loop that died
            if not self._ready.is_set():
                self._startup_error = exc
            raise
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self._listen()
        except (OSError, OverflowError, ValueError) as exc:  # busy port, port out of range
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self._down()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("IB simulator listening on %s:%d", self.host, self.port)

    async def _down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._connections):
            conn.drop()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _go_down(self) -> None:
        """From inside the loop: stop listening now (the handlers finish on their own)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        task = asyncio.current_task()
        with self._counters.lock:
            self._counters.connections += 1
        self._connections.add(conn)
        if task is not None:
            self._handlers.add(task)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            if task is not None:
                self._handlers.discard(task)


def load_directory(symbols: str | Path | None = None, *, replace: bool = False) -> Directory:
    """The directory a simulator serves: the shipped one, plus (or, with ``replace``, only) the
    instruments of the CSV file ``symbols``. ``InvalidRequest`` names the file and line."""
    if symbols is None:
        return Directory.default()
    extra = Directory.read(symbols)
    return extra if replace else Directory.default().merged(extra)


def main(argv: list[str] | None = None) -> int:
    """``python -m candleflow.ibsim``: serve until Ctrl+C or SIGTERM; returns an exit code."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="candleflow ib-sim", description="Loopback IB Gateway simulator (TWS API v176)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=4002, help="port (0 picks a free one)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--time-scale", type=float, default=1.0, help="pacing window scale")
    parser.add_argument("--no-pacing", action="store_true", help="do not enforce pacing")
    parser.add_argument("--fail-after", type=int, default=None, metavar="N",
                        help="drop the connection after N historical requests")  # fmt: skip
    parser.add_argument("--stay-down", action="store_true", help="stop listening after a drop")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--symbols", default=None, metavar="FILE",
                        help="CSV of instruments to add to the shipped directory (columns: "
                        "symbol,sec_type,exchange,primary_exchange,currency,long_name,"
                        "multiplier,months,expiry_rule,stock_type,con_id)")  # fmt: skip
    parser.add_argument("--replace-symbols", action="store_true",
                        help="serve only the instruments of --symbols FILE")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.replace_symbols and args.symbols is None:
            raise InvalidRequest("--replace-symbols needs --symbols FILE")
        directory = load_directory(args.symbols, replace=args.replace_symbols)
        faults = Faults(drop_after=args.fail_after, stay_down=args.stay_down, delay=args.delay)
        sim = IBSimulator(
            args.host,
            args.port,
            args.seed,
            args.time_scale,
            not args.no_pacing,
            faults=faults,
            directory=directory,
        )
        sim.start()
    except (InvalidRequest, SourceUnavailable) as exc:
        print(f"error: {exc}")
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(
        f"IB simulator listening on {sim.host}:{sim.port} (seed {sim.seed}); Ctrl+C stops it",
        flush=True,
    )
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
