"""Instrument specs: each class, the canonical key, overrides and the errors for malformed specs
(expected values written from IB's contract conventions, not from the parser)."""

from __future__ import annotations

import datetime as dt

import pytest

from candleflow.errors import InvalidRequest
from candleflow.instruments import AssetClass, InstrumentSpec, default_calendar, parse_instrument
from candleflow.models import Instrument, parse_symbol

TODAY = dt.date(2026, 12, 2)


@pytest.mark.parametrize(
    ("spec", "expected", "key", "sec_type", "what", "calendar"),
    [
        ("AAPL", InstrumentSpec("AAPL"), "AAPL", "STK", "TRADES", "XNYS"),
        (" aapl:stk ", InstrumentSpec("AAPL"), "AAPL", "STK", "TRADES", "XNYS"),
        ("BRK.B", InstrumentSpec("BRK.B"), "BRK.B", "STK", "TRADES", "XNYS"),
        ("EUR.USD", InstrumentSpec("EUR", AssetClass.FOREX, "IDEALPRO", "USD"), "EUR.USD",
         "CASH", "MIDPOINT", "FX"),
        ("eurusd:fx", InstrumentSpec("EUR", AssetClass.FOREX, "IDEALPRO", "USD"), "EUR.USD",
         "CASH", "MIDPOINT", "FX"),
        ("USD.JPY", InstrumentSpec("USD", AssetClass.FOREX, "IDEALPRO", "JPY"), "USD.JPY",
         "CASH", "MIDPOINT", "FX"),
        ("ES:fut", InstrumentSpec("ES", AssetClass.FUTURE, "CME", "USD"), "ES:FUT", "CONTFUT",
         "TRADES", "GLOBEX"),
        ("ESZ6", InstrumentSpec("ES", AssetClass.FUTURE, "CME", "USD", "202612"),
         "ES:FUT:202612", "FUT", "TRADES", "GLOBEX"),
        ("ES:fut:202612", InstrumentSpec("ES", AssetClass.FUTURE, "CME", "USD", "202612"),
         "ES:FUT:202612", "FUT", "TRADES", "GLOBEX"),
        ("CLF27", InstrumentSpec("CL", AssetClass.FUTURE, "NYMEX", "USD", "202701"),
         "CL:FUT:202701", "FUT", "TRADES", "GLOBEX"),
        ("GCZ25", InstrumentSpec("GC", AssetClass.FUTURE, "COMEX", "USD", "202512"),
         "GC:FUT:202512", "FUT", "TRADES", "GLOBEX"),
        ("SPX:ind", InstrumentSpec("SPX", AssetClass.INDEX, "CBOE", "USD"), "SPX:IND", "IND",
         "TRADES", "XNYS"),
    ],
)  # fmt: skip
def test_each_class_parses_to_its_contract(
    spec: str, expected: InstrumentSpec, key: str, sec_type: str, what: str, calendar: str
) -> None:
    parsed = parse_instrument(spec, today=TODAY)
    assert parsed == expected
    assert (parsed.key, parsed.sec_type, parsed.what_to_show, parsed.calendar) == (
        key, sec_type, what, calendar
    )  # fmt: skip
    assert parse_instrument(parsed.key, today=TODAY) == parsed  # the key parses back


def test_one_digit_years_are_the_nearest_decade_and_overrides_apply() -> None:
    assert parse_instrument("ESH5", today=TODAY).expiry == "202503"  # expired: still 2025
    assert parse_instrument("ESH4", today=TODAY).expiry == "202403"  # two years back
    assert parse_instrument("ESH3", today=TODAY).expiry == "203303"  # seven years ahead
    assert parse_instrument("SAP", exchange="ibis", currency="eur") == InstrumentSpec(
        "SAP", AssetClass.STOCK, "IBIS", "EUR"
    )
    assert parse_instrument("SAP", exchange="IBIS").calendar == "XETR"
    assert parse_instrument("FDAX:fut", exchange="EUREX", currency="EUR").exchange == "EUREX"
    assert parse_instrument("XYZW:fut").exchange == ""  # IB finds an unknown root's exchange
    assert parse_instrument("ESZ6:fut", today=TODAY).expiry == "202612"
    assert default_calendar("EUR.USD") == "FX" and default_calendar("NQ:fut") == "GLOBEX"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "non-empty"),
        ("AAPL:", "malformed instrument spec"),
        ("A:B:C:D", "SYMBOL[:CLASS[:EXPIRY]]"),
        ("AAPL:bond", "unknown asset class"),
        ("EURXXX:fx", "invalid forex pair"),
        ("EUREUR:fx", "invalid forex pair"),
        ("ES:fut:2026", "YYYYMM"),
        ("ES:fut:202613", "YYYYMM"),
        ("ES:fut:20260231", "no such day"),
        ("SPX:ind:202612", "only futures take an expiry"),
        ("../x:fut", "invalid futures root"),
    ],
)
def test_malformed_specs_say_what_to_write(spec: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_instrument(spec)
    assert words in str(info.value)
    assert info.value.param == "symbol"


def test_bad_overrides_name_their_parameter() -> None:
    with pytest.raises(InvalidRequest, match="three-letter") as info:
        parse_instrument("AAPL", currency="DOLLAR")
    assert info.value.param == "currency"
    with pytest.raises(InvalidRequest, match="contradicts the quote currency"):
        parse_instrument("EUR.USD", currency="JPY")


def test_parse_symbol_returns_the_canonical_key() -> None:
    assert parse_symbol("eurusd:fx") == parse_symbol("EUR.USD") == "EUR.USD"
    assert parse_symbol("es:FUT") == "ES:FUT"
    assert parse_symbol("^GSPC") == "^GSPC" and parse_symbol("EURUSD=X") == "EURUSD=X"
    with pytest.raises(InvalidRequest, match="invalid symbol"):
        parse_symbol(":ES")


def test_the_instrument_records_its_contract_for_the_metadata() -> None:
    es = Instrument("ES:FUT:202612", calendar="GLOBEX", sec_type="FUT", exchange="CME",
                    con_id=495512563, expiry="20261218", multiplier="50", local_symbol="ESZ6",
                    trading_class="ES")  # fmt: skip
    meta = es.to_meta()
    assert {k: meta[k] for k in ("sec_type", "con_id", "exchange", "multiplier", "expiry")} == {
        "sec_type": "FUT", "con_id": 495512563, "exchange": "CME", "multiplier": "50",
        "expiry": "20261218",
    }  # fmt: skip
    assert Instrument("EUR.USD", sec_type="CASH").what_to_show == "MIDPOINT"
