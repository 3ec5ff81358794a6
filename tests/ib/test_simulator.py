"""The simulator against the real client library (ib_async, or ib_insync in the compat venv)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import subprocess
import sys
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from candleflow.errors import InvalidRequest, SourceUnavailable
from candleflow.ibsim import Faults, IBSimulator
from candleflow.ibsim.data import parse_end
from candleflow.sources.synthetic import SyntheticSource
from tests.ib.conftest import run

END = "20240131 21:00:00 UTC"


def _client_session(iblib: ModuleType, port: int, body: Any) -> Any:
    async def go() -> Any:
        ib = iblib.IB()
        try:
            await ib.connectAsync("127.0.0.1", port, clientId=3, timeout=5)
            return await body(ib)
        finally:
            ib.disconnect()

    return run(go)


def _errors(ib: Any) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, *_: seen.append((req_id, code, text))
    return seen


def test_the_real_client_connects_with_every_startup_request_answered(
    iblib: ModuleType, sim: IBSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    # The client's start-up requests (positions, orders, account, executions) each wait up to
    # the connect timeout; raiseSyncErrors (ib_async) turns one left unanswered into an error (it
    # would otherwise cost the timeout and a logged error on every connect). ib_insync has no
    # such option: there, the logged error is what the test looks for.
    strict = "raiseSyncErrors" in inspect.signature(iblib.IB.connectAsync).parameters

    async def go() -> bool:
        ib = iblib.IB()
        try:
            options = {"raiseSyncErrors": True} if strict else {}
            await ib.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=5, **options)
            return bool(ib.isConnected())
        finally:
            ib.disconnect()

    with caplog.at_level(logging.ERROR, logger=iblib.__name__):
        assert run(go)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert sim.stats.connections == 1


def test_qualify_head_timestamp_and_bars_equal_the_synthetic_source(
    iblib: ModuleType, sim: IBSimulator
) -> None:
    async def body(ib: Any) -> tuple[Any, Any, Any]:
        contract = iblib.Stock("AAPL", "SMART", "USD")
        qualified = await ib.qualifyContractsAsync(contract)
        head = await ib.reqHeadTimeStampAsync(contract, "TRADES", False, 2)
        bars = await ib.reqHistoricalDataAsync(contract, END, "30 D", "1 hour", "TRADES", False, 2)
        return qualified, head, bars

    qualified, head, bars = _client_session(iblib, sim.port, body)
    assert len(qualified) == 1 and qualified[0].conId > 0
    assert qualified[0].primaryExchange == "NASDAQ"
    assert pd.Timestamp(head) == pd.Timestamp("2015-01-02 14:30", tz="UTC")
    end = pd.Timestamp("2024-01-31 21:00", tz="UTC")
    expected = SyntheticSource(7).bars("AAPL", "1h", end - pd.Timedelta(days=30), end)
    got = pd.DataFrame(
        {c: [float(getattr(b, c)) for b in bars] for c in expected.columns},
        index=pd.DatetimeIndex([pd.Timestamp(b.date) for b in bars], name="timestamp"),
    )
    pd.testing.assert_frame_equal(got, expected, check_index_type=False, check_freq=False)
    assert sim.stats.bars_sent == len(expected) > 100


def test_daily_bars_are_dates_and_format_date_1_is_exchange_local(
    iblib: ModuleType, sim: IBSimulator
) -> None:
    async def body(ib: Any) -> tuple[Any, Any]:
        contract = iblib.Stock("MSFT", "SMART", "USD")
        daily = await ib.reqHistoricalDataAsync(contract, END, "1 M", "1 day", "TRADES", False, 2)
        local = await ib.reqHistoricalDataAsync(contract, END, "1 D", "1 hour", "TRADES", False, 1)
        return daily, local

    daily, local = _client_session(iblib, sim.port, body)
    assert [type(b.date).__name__ for b in daily[:1]] == ["date"]
    assert str(daily[0].date) == "2024-01-02"
    first = pd.Timestamp(local[0].date)
    first = first.tz_localize("America/New_York") if first.tzinfo is None else first
    assert first.tz_convert("UTC") == pd.Timestamp("2024-01-31 14:30", tz="UTC")


def test_errors_are_sent_as_ib_sends_them(iblib: ModuleType, sim: IBSimulator) -> None:
    async def body(ib: Any) -> list[tuple[int, int, str]]:
        seen = _errors(ib)
        aapl = iblib.Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(iblib.Stock("ZZZZ", "SMART", "USD"))
        await ib.reqHistoricalDataAsync(
            aapl, "20100131 21:00:00 UTC", "5 D", "1 hour", "TRADES", False, 2
        )
        await ib.reqHistoricalDataAsync(aapl, END, "2 D", "1 min", "TRADES", False, 2)
        # 321 leaves the request open in ib_async: bound it here.
        await ib.reqHistoricalDataAsync(aapl, END, "1 D", "1 sec", "TRADES", False, 2, timeout=0.5)
        return [s for s in seen if s[1] < 2100]

    errors = _client_session(iblib, sim.port, body)
    codes = [code for _, code, _ in errors]
    assert codes == [200, 162, 162, 321]
    assert "HMDS query returned no data: AAPL@SMART Trades" in errors[1][2]
    assert "invalid step" in errors[2][2].lower()
    assert sim.stats.errors_sent == {200: 1, 162: 2, 321: 1}


def test_pacing_violations_are_answered_with_162(iblib: ModuleType) -> None:
    with IBSimulator(seed=1, time_scale=1.0) as sim:

        async def body(ib: Any) -> list[tuple[int, int, str]]:
            seen = _errors(ib)
            aapl = iblib.Stock("AAPL", "SMART", "USD")
            for day in range(2, 9):
                end = f"202401{day:02d} 21:00:00 UTC"
                await ib.reqHistoricalDataAsync(aapl, end, "1 D", "1 hour", "TRADES", False, 2)
            return seen

        errors = _client_session(iblib, sim.port, body)
    pacing = [e for e in errors if e[1] == 162 and "pacing violation" in e[2]]
    assert len(pacing) == 2  # the 6th and 7th request for AAPL within 2 s
    assert sim.stats.violations == 2


def test_blip_sends_1100_then_1102_and_still_answers(iblib: ModuleType) -> None:
    with IBSimulator(seed=1, pacing=False, faults=Faults(blip_at=1)) as sim:

        async def body(ib: Any) -> tuple[list[int], int]:
            seen = _errors(ib)
            aapl = iblib.Stock("AAPL", "SMART", "USD")
            bars = await ib.reqHistoricalDataAsync(aapl, END, "1 D", "1 hour", "TRADES", False, 2)
            return [code for _, code, _ in seen if code < 2100], len(bars)

        codes, n = _client_session(iblib, sim.port, body)
    assert codes == [1100, 1102]
    assert n == 7


def test_end_date_time_is_read_as_ib_reads_it() -> None:
    now = pd.Timestamp("2026-01-01", tz="UTC")
    assert parse_end("", now) == now
    assert parse_end("20240131 21:00:00 UTC", now) == pd.Timestamp("2024-01-31 21:00", tz="UTC")
    assert parse_end("20240131-21:00:00", now) == pd.Timestamp("2024-01-31 21:00", tz="UTC")
    assert parse_end("20240131 16:00:00 US/Eastern", now) == pd.Timestamp(
        "2024-01-31 21:00", tz="UTC"
    )


def test_the_simulator_stops_cleanly_with_a_client_still_connected(iblib: ModuleType) -> None:
    sim = IBSimulator(seed=1).start()

    async def go() -> bool:
        ib = iblib.IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=4, timeout=5)
        gone = asyncio.Event()
        ib.disconnectedEvent += gone.set
        sim.stop()
        await asyncio.wait_for(gone.wait(), 5)  # the client sees the server close the socket
        connected = bool(ib.isConnected())
        ib.disconnect()
        return connected

    assert run(go) is False
    sim.stop()  # twice is fine


def test_python_m_candleflow_ibsim_serves_until_sigterm(iblib: ModuleType) -> None:
    cmd = [
        sys.executable,
        "-m",
        "candleflow.ibsim",
        "--port",
        "0",
        "--seed",
        "3",
        "--fail-after",
        "5",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line
        port = int(line.split("127.0.0.1:")[1].split()[0])

        async def body(ib: Any) -> int:
            aapl = iblib.Stock("AAPL", "SMART", "USD")
            bars = await ib.reqHistoricalDataAsync(aapl, END, "1 D", "1 hour", "TRADES", False, 2)
            return len(bars)

        assert _client_session(iblib, port, body) == 7
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def test_a_busy_port_is_reported_and_go_down_restore_work() -> None:
    with IBSimulator(seed=1) as first:
        with pytest.raises(SourceUnavailable, match="cannot listen"):
            IBSimulator(port=first.port).start()
        first.go_down()
        first.restore()
    with pytest.raises(InvalidRequest, match="not running"):
        IBSimulator().restore()
