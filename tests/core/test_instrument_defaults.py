"""A load takes its instrument's calendar when none is given, under the instrument's one key,
and the IB contract overrides (--ib-exchange, --currency) are checked and reach the source."""

from __future__ import annotations

import pytest

from candleflow.errors import InvalidRequest
from candleflow.loading.request import LoadRequest
from candleflow.sources.options import IBOptions, parse_source_options


@pytest.mark.parametrize(
    ("spec", "key", "calendar"),
    [
        ("AAPL", "AAPL", "XNYS"),
        ("eurusd:fx", "EUR.USD", "FX"),
        ("EUR.USD", "EUR.USD", "FX"),
        ("ES:fut", "ES:FUT", "GLOBEX"),
        ("ESZ6", "ES:FUT:202612", "GLOBEX"),
    ],
)
def test_a_request_without_a_calendar_takes_the_instruments(
    spec: str, key: str, calendar: str
) -> None:
    request = LoadRequest.parse(spec, "1h", start="2024-03-04", end="2024-03-08")
    assert (request.symbol, request.calendar) == (key, calendar)


def test_a_given_calendar_wins() -> None:
    assert LoadRequest.parse("EUR.USD", "1h", calendar="XLON").calendar == "XLON"


def test_ib_contract_overrides_are_upper_cased_and_checked() -> None:
    options = parse_source_options("ib", ib_exchange="cme", currency="usd")
    assert isinstance(options, IBOptions)
    assert (options.ib_exchange, options.currency) == ("CME", "USD")
    with pytest.raises(InvalidRequest) as caught:
        parse_source_options("ib", currency="E$")
    assert caught.value.param == "currency"


def test_ib_contract_overrides_do_not_apply_to_other_sources() -> None:
    with pytest.raises(InvalidRequest, match="does not apply"):
        parse_source_options("synthetic", currency="EUR")
    assert parse_source_options("synthetic", currency=None).name == "synthetic"
