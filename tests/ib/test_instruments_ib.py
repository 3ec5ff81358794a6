"""Forex, futures and indices through IB: the real client library against the simulator's
directory, and the IB source on top of it (issue 13).

Contract fields expected here are IB's own for these contracts (EUR.USD is conId 12087792 on
IDEALPRO, local symbol ``EUR.USD``; SPX is conId 416904 on CBOE; ES is CME, multiplier 50, the
December 2026 contract ``ESZ6`` last trading on the third Friday, 2026-12-18), written down by
hand, not read back from the directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from candleflow.errors import InvalidRequest, UnknownSymbol
from candleflow.ibsim import Directory, IBSimulator, load_directory
from candleflow.models import Segment
from candleflow.sources.ib import IBSource
from candleflow.sources.pacing import PacingLimiter
from candleflow.sources.synthetic import SyntheticSource
from tests.ib.conftest import run

NOW = pd.Timestamp("2026-11-20 23:00", tz="UTC")  # a Friday evening, after the week's close


@pytest.fixture
def dsim() -> Iterator[IBSimulator]:
    """A simulator whose clock stands still at NOW (so the front future is ESZ6)."""
    with IBSimulator(seed=7, time_scale=0.01, now=lambda: NOW) as simulator:
        yield simulator


def _session(iblib: ModuleType, port: int, body: Any) -> Any:
    async def go() -> Any:
        ib = iblib.IB()
        try:
            await ib.connectAsync("127.0.0.1", port, clientId=5, timeout=5)
            return await body(ib)
        finally:
            ib.disconnect()

    return run(go)


def _source(sim: IBSimulator, **options: Any) -> IBSource:
    return IBSource(port=sim.port, client_id=9, timeout=10,
                    limiter=PacingLimiter(time_scale=0.01), **options)  # fmt: skip


def test_the_real_client_qualifies_each_class_with_ibs_contract_fields(
    iblib: ModuleType, dsim: IBSimulator
) -> None:
    async def body(ib: Any) -> list[Any]:
        contracts = [
            iblib.Forex("EURUSD"),
            iblib.ContFuture("ES", "CME"),
            iblib.Future("ES", "202612", "CME"),
            iblib.Index("SPX", "CBOE"),
            iblib.Stock("AAPL", "SMART", "USD"),
        ]
        return [await ib.qualifyContractsAsync(c) for c in contracts]

    fx, cont, dated, spx, aapl = (r[0] for r in _session(iblib, dsim.port, body))
    assert (fx.secType, fx.conId, fx.symbol, fx.currency, fx.exchange, fx.localSymbol) == (
        "CASH",
        12087792,
        "EUR",
        "USD",
        "IDEALPRO",
        "EUR.USD",
    )
    assert (cont.secType, cont.exchange, cont.multiplier, cont.localSymbol) == (
        "CONTFUT",
        "CME",
        "50",
        "ESZ6",
    )
    assert cont.lastTradeDateOrContractMonth == "20261218"
    assert (dated.secType, dated.exchange, dated.multiplier, dated.localSymbol) == (
        "FUT",
        "CME",
        "50",
        "ESZ6",
    )
    assert dated.lastTradeDateOrContractMonth == "20261218"
    assert dated.conId == cont.conId > 0  # a continuous future carries its front month's conId
    assert (spx.secType, spx.conId, spx.exchange, spx.currency) == ("IND", 416904, "CBOE", "USD")
    assert (aapl.secType, aapl.conId, aapl.primaryExchange) == ("STK", 265598, "NASDAQ")


def test_junk_and_wrong_class_contracts_get_error_200(iblib: ModuleType, dsim: IBSimulator) -> None:
    async def body(ib: Any) -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        ib.errorEvent += lambda req_id, code, text, *_: seen.append((code, text))
        for contract in (
            iblib.Stock("XQZTV", "SMART", "USD"),  # junk ticker
            iblib.Stock("ZZZZ", "SMART", "USD"),  # listed unknown
            iblib.Forex("USDEUR"),  # IB quotes EUR.USD, not USD.EUR
            iblib.Future("ES", "202611", "CME"),  # no November contract
            iblib.ContFuture("ES", "NYMEX"),  # wrong exchange
            iblib.Index("AAPL", "CBOE"),  # a stock is no index
        ):
            assert await ib.qualifyContractsAsync(contract) in ([], [None])
        return seen

    codes = [code for code, _ in _session(iblib, dsim.port, body)]
    assert codes == [200] * 6


def test_trades_for_forex_are_refused_as_ib_refuses_them(
    iblib: ModuleType, dsim: IBSimulator
) -> None:
    async def body(ib: Any) -> tuple[list[tuple[int, str]], Any, Any]:
        seen: list[tuple[int, str]] = []
        ib.errorEvent += lambda req_id, code, text, *_: seen.append((code, text))
        pair = iblib.Forex("EURUSD")
        await ib.qualifyContractsAsync(pair)
        end = "20261120 22:00:00 UTC"
        trades = await ib.reqHistoricalDataAsync(pair, end, "2 D", "1 hour", "TRADES", False, 2)
        mid = await ib.reqHistoricalDataAsync(pair, end, "2 D", "1 hour", "MIDPOINT", False, 2)
        return seen, trades, mid

    seen, trades, mid = _session(iblib, dsim.port, body)
    assert not trades
    assert seen == [
        (162, "Historical Market Data Service error message:No historical market data for "
              "EUR/CASH@FXSUBPIP Last 3600"),
    ]  # fmt: skip
    assert len(mid) == 48 and {b.volume for b in mid} == {-1}  # 24/5: Thu and Fri, no volume

    with _source(dsim, what_to_show="TRADES") as source:
        instrument = source.validate("EUR.USD")
        # Not the request the client sent above: an identical one within 15 s is a violation.
        segment = Segment(NOW - pd.Timedelta(days=2), NOW - pd.Timedelta(hours=3), 0)
        with pytest.raises(InvalidRequest, match=r"No historical market data.*MIDPOINT"):
            source.fetch(instrument, "1h", segment)


def test_the_ib_source_qualifies_each_spec_and_records_the_contract(dsim: IBSimulator) -> None:
    with _source(dsim) as source:
        specs = ("EUR.USD", "eurusd:fx", "ES:fut", "ESZ6", "ES:fut:202612", "SPX:ind", "AAPL")
        got = {spec: source.validate(spec) for spec in specs}
    fx = got["EUR.USD"]
    assert got["eurusd:fx"] == fx
    assert (fx.symbol, fx.sec_type, fx.exchange, fx.currency, fx.con_id, fx.calendar) == (
        "EUR.USD",
        "CASH",
        "IDEALPRO",
        "USD",
        12087792,
        "FX",
    )
    assert fx.what_to_show == "MIDPOINT"
    cont = got["ES:fut"]
    assert (cont.symbol, cont.sec_type, cont.exchange, cont.multiplier, cont.expiry) == (
        "ES:FUT",
        "CONTFUT",
        "CME",
        "50",
        "20261218",
    )
    assert cont.calendar == "GLOBEX" and cont.local_symbol == "ESZ6"
    assert got["ESZ6"] == got["ES:fut:202612"]
    dated = got["ESZ6"]
    assert (dated.symbol, dated.sec_type, dated.con_id, dated.expiry) == (
        "ES:FUT:202612",
        "FUT",
        cont.con_id,
        "20261218",
    )
    spx = got["SPX:ind"]
    assert (spx.symbol, spx.sec_type, spx.exchange, spx.con_id, spx.calendar) == (
        "SPX:IND",
        "IND",
        "CBOE",
        416904,
        "XNYS",
    )
    assert got["AAPL"].sec_type == "STK" and got["AAPL"].con_id == 265598
    meta = dated.to_meta()
    assert {k: meta[k] for k in ("con_id", "exchange", "multiplier", "expiry")} == {
        "con_id": cont.con_id, "exchange": "CME", "multiplier": "50", "expiry": "20261218"
    }  # fmt: skip


def test_a_junk_ticker_is_an_unknown_symbol(dsim: IBSimulator) -> None:
    with _source(dsim) as source:
        with pytest.raises(UnknownSymbol, match=r"XQZTV.*200"):
            source.validate("XQZTV")
        with pytest.raises(UnknownSymbol, match="NQ:FUT:202611"):
            source.validate("NQ:fut:202611")


def test_forex_and_future_bars_follow_their_calendars_and_equal_the_synthetic_source(
    dsim: IBSimulator,
) -> None:
    start, end = pd.Timestamp("2026-11-15", tz="UTC"), pd.Timestamp("2026-11-20 22:00", tz="UTC")
    with _source(dsim) as source:
        fx = source.validate("EUR.USD")
        fx_bars = source.fetch(fx, "1h", Segment(start, end, 0))
        es = source.validate("ESZ6")
        es_bars = source.fetch(es, "1h", Segment(start, end, 0))
        assert source.head_timestamp(es, "1h") == pd.Timestamp("2025-12-18", tz="UTC")
    ny = fx_bars.index.tz_convert("America/New_York")
    assert len(fx_bars) == 120 and ny[0] == pd.Timestamp("2026-11-15 17:00", tz="America/New_York")
    assert fx_bars["volume"].isna().all() and (fx_bars["close"] < 10).all()
    expected = SyntheticSource(7).bars("EUR.USD", "1h", start, end)
    pd.testing.assert_frame_equal(fx_bars, expected, check_freq=False)
    chicago = es_bars.index.tz_convert("America/Chicago")
    assert len(es_bars) == 5 * 23 and not (chicago.hour == 16).any()  # the maintenance break


def test_a_continuous_future_is_asked_back_from_now(sim: IBSimulator) -> None:
    now = pd.Timestamp.now(tz="UTC")
    with _source(sim) as source:
        es = source.validate("ES:fut")
        bars = source.fetch(es, "1d", Segment(now - pd.Timedelta(days=20), now, 0))
        with pytest.raises(InvalidRequest, match="continuous future only back from now"):
            source.fetch(es, "1h", Segment(now - pd.Timedelta(days=90), now, 0))
    assert len(bars) >= 10
    assert {q.end for q in sim.stats.queries} == {""}  # IB refuses an end date (10339)


def test_symbols_file_adds_to_or_replaces_the_directory(tmp_path: Path) -> None:
    extra = tmp_path / "symbols.csv"
    extra.write_text(
        "symbol,sec_type,exchange,primary_exchange,currency,long_name\n"
        "XQZTV,STK,SMART,NYSE,USD,JUNK CORP\n"
        "FDAX,FUT,EUREX,,EUR,DAX Futures\n"
    )
    added = load_directory(extra)
    assert len(added) == len(Directory.default()) + 2
    only = load_directory(extra, replace=True)
    assert {listing.symbol for listing in only.listings} == {"XQZTV", "FDAX"}
    sim = IBSimulator(seed=7, time_scale=0.01, directory=only, now=lambda: NOW)
    with sim, _source(sim) as source:
        assert source.validate("XQZTV").primary_exchange == "NYSE"
        assert source.validate("FDAX:fut", exchange="EUREX", currency="EUR").expiry
        with pytest.raises(UnknownSymbol):
            source.validate("AAPL")
    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,sec_type\nAAPL,OPT\n")
    with pytest.raises(InvalidRequest, match=r"bad\.csv line 2.*OPT"):
        load_directory(bad)


def test_the_shipped_directory_holds_the_indexes_constituents_and_every_test_symbol() -> None:
    directory = Directory.default()
    stocks = {x.symbol for x in directory.listings if x.sec_type == "STK"}
    assert len(stocks) > 550
    # A sample of S&P 500 / Nasdaq-100 members, ETFs, and every symbol the suite loads via IB.
    assert {"AAPL", "MSFT", "NVDA", "BRK B", "JPM", "XOM", "ASML", "MELI", "SPY", "QQQ", "IWM",
            "GLD", "TLT", "IBM", "SAP", "VOD", "TSLA", "AMZN"} <= stocks  # fmt: skip
    pairs = {f"{x.symbol}.{x.currency}" for x in directory.listings if x.sec_type == "CASH"}
    g10 = ("EUR.USD", "GBP.USD", "USD.JPY", "USD.CHF", "AUD.USD", "NZD.USD", "USD.CAD",
           "USD.SEK", "USD.NOK", "EUR.GBP", "EUR.JPY", "EUR.CHF")  # fmt: skip
    assert set(g10) <= pairs
    roots = {x.symbol: x.exchange for x in directory.listings if x.sec_type == "FUT"}
    assert {k: roots[k] for k in ("ES", "NQ", "CL", "GC", "ZN")} == {
        "ES": "CME", "NQ": "CME", "CL": "NYMEX", "GC": "COMEX", "ZN": "CBOT"
    }  # fmt: skip
    indices = {x.symbol for x in directory.listings if x.sec_type == "IND"}
    assert {"SPX", "NDX", "VIX", "RUT"} <= indices
    assert np.all([x.long_name for x in directory.listings])
