"""SyntheticSource: determinism, calendar grid, market-like values, clipping, injected faults."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pandas as pd
import pytest

from candleflow.errors import Cancelled, InvalidRequest, NoData, SourceUnavailable, UnknownSymbol
from candleflow.loading.calendars import expected_bars
from candleflow.models import BAR_COLUMNS, INDEX_NAME, Instrument, Segment
from candleflow.sources.base import Source
from candleflow.sources.synthetic import SyntheticSource
from candleflow.timeframes import parse_timeframe
from tests.timing import budget

H1 = parse_timeframe("1h")
M1 = parse_timeframe("1m")
D1 = parse_timeframe("1d")
AAPL = Instrument("AAPL")


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def seg(start: str, end: str) -> Segment:
    return Segment(utc(start), utc(end), 0)


def test_is_a_source() -> None:
    assert isinstance(SyntheticSource(), Source)


def test_frame_is_canonical() -> None:
    bars = SyntheticSource().fetch(AAPL, H1, seg("2024-03-04", "2024-03-09"))
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert all(dtype == np.float64 for dtype in bars.dtypes)
    assert isinstance(bars.index, pd.DatetimeIndex)
    assert str(bars.index.tz) == "UTC"
    assert bars.index.name == INDEX_NAME
    assert bars.index.is_monotonic_increasing


def test_same_seed_same_bars_across_instances() -> None:
    segment = seg("2024-01-01", "2024-02-01")
    a = SyntheticSource(seed=1).fetch(AAPL, H1, segment)
    b = SyntheticSource(seed=1).fetch(AAPL, H1, segment)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "cuts",
    [
        ["2024-01-17 00:00"],
        ["2024-02-01 15:00", "2024-02-20 19:00"],  # mid-session cuts, on bar boundaries
        ["2024-01-02 15:00", "2024-01-06", "2024-03-10 12:00", "2024-03-27 18:00"],
    ],
)
def test_split_segments_concatenate_to_the_whole(cuts: list[str]) -> None:
    source = SyntheticSource(seed=7)
    bounds = ["2024-01-01", *cuts, "2024-04-01"]
    whole = source.fetch(AAPL, H1, seg(bounds[0], bounds[-1]))
    # Fetch the pieces in reverse order: the request order must not matter either.
    pieces = [
        source.fetch(AAPL, H1, seg(a, b)) for a, b in reversed(list(itertools.pairwise(bounds)))
    ]
    pd.testing.assert_frame_equal(pd.concat(pieces[::-1]), whole)


def test_a_bar_does_not_depend_on_a_range_that_cuts_through_it() -> None:
    source = SyntheticSource(seed=3)
    whole = source.bars(AAPL, H1, utc("2024-05-06"), utc("2024-05-07"))
    # 15:30 cuts the 15:00 bar in half: only bars starting in the range come back, unchanged.
    part = source.bars(AAPL, H1, utc("2024-05-06 15:30"), utc("2024-05-06 18:30"))
    assert list(part.index) == [
        utc("2024-05-06 16:00"),
        utc("2024-05-06 17:00"),
        utc("2024-05-06 18:00"),
    ]
    pd.testing.assert_frame_equal(part, whole.loc[part.index])


def test_index_is_the_calendar_grid() -> None:
    start, end = utc("2024-06-01"), utc("2024-09-01")
    bars = SyntheticSource().fetch(AAPL, H1, Segment(start, end, 0))
    expected = expected_bars("XNYS", H1, start, end).starts
    pd.testing.assert_index_equal(bars.index, expected)


def test_hourly_bars_on_a_hand_checked_day() -> None:
    bars = SyntheticSource().fetch(AAPL, H1, seg("2024-01-03", "2024-01-04"))
    # 09:30, 10:00 … 15:00 New York (UTC-5) on a normal day.
    hours = ["14:30", "15:00", "16:00", "17:00", "18:00", "19:00", "20:00"]
    assert list(bars.index) == [utc(f"2024-01-03 {h}") for h in hours]


def test_early_close_has_210_minute_bars() -> None:
    bars = SyntheticSource().fetch(AAPL, M1, seg("2024-11-29", "2024-11-30"))
    assert len(bars) == 210  # 09:30–13:00 New York
    assert bars.index[0] == utc("2024-11-29 14:30")
    assert bars.index[-1] == utc("2024-11-29 17:59")


def test_no_bars_on_holidays_or_weekends() -> None:
    bars = SyntheticSource().fetch(AAPL, H1, seg("2024-07-01", "2024-07-15"))
    days = set(bars.index.tz_convert("America/New_York").date)
    assert pd.Timestamp("2024-07-04").date() not in days
    assert all(pd.Timestamp(d).dayofweek < 5 for d in days)
    assert len(days) == 9


def test_weekend_only_segment_raises_nodata() -> None:
    with pytest.raises(NoData, match=r"AAPL.*2024-07-06"):
        SyntheticSource().fetch(AAPL, H1, seg("2024-07-06", "2024-07-08"))


def test_ohlc_valid_over_two_years_of_hourly_bars() -> None:
    bars = SyntheticSource(seed=11).fetch(AAPL, H1, seg("2022-01-01", "2024-01-01"))
    assert len(bars) > 3000
    assert not bars.isna().any().any()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["volume"] > 0).all()


def test_prices_look_like_a_market() -> None:
    bars = SyntheticSource(seed=5).fetch(AAPL, H1, seg("2023-01-01", "2024-01-01"))
    # Within a session a bar opens where the previous one closed.
    same_day = bars.index[1:].normalize() == bars.index[:-1].normalize()
    np.testing.assert_array_equal(
        bars["open"].to_numpy()[1:][same_day], bars["close"].to_numpy()[:-1][same_day]
    )
    # Moves are small from bar to bar but the level wanders over the year.
    returns = np.log(bars["close"]).diff().dropna()
    assert returns.abs().max() < 0.1
    assert bars["close"].max() / bars["close"].min() > 1.05


def test_daily_bars_follow_the_intraday_path() -> None:
    source = SyntheticSource(seed=2)
    daily = source.fetch(AAPL, D1, seg("2024-03-04", "2024-03-09"))
    minutes = source.fetch(AAPL, M1, seg("2024-03-04", "2024-03-09"))
    assert list(daily.index) == [utc(f"2024-03-0{d}") for d in range(4, 9)]
    for label, bar in daily.iterrows():
        session = minutes.loc[minutes.index.normalize() == label]
        assert bar["open"] == session["open"].iloc[0]
        assert bar["close"] == session["close"].iloc[-1]


def test_symbol_case_does_not_matter() -> None:
    source = SyntheticSource()
    segment = seg("2024-01-02", "2024-01-03")
    upper = source.fetch(AAPL, H1, segment)
    pd.testing.assert_frame_equal(source.fetch(Instrument("aapl"), H1, segment), upper)


def test_seeds_and_symbols_differ() -> None:
    segment = seg("2024-01-01", "2024-02-01")
    a = SyntheticSource(seed=1).fetch(AAPL, H1, segment)
    b = SyntheticSource(seed=2).fetch(AAPL, H1, segment)
    c = SyntheticSource(seed=1).fetch(Instrument("MSFT"), H1, segment)
    assert not np.allclose(a["close"], b["close"])
    assert not np.allclose(a["close"], c["close"])
    assert not np.allclose(b["close"], c["close"])


def test_head_clips_fetch_and_is_reported() -> None:
    source = SyntheticSource(head={"AAPL": "2024-01-10"})
    assert source.head_timestamp(AAPL, H1) == utc("2024-01-10 14:30")
    assert source.head_timestamp(AAPL, D1) == utc("2024-01-10")
    # Symbols the mapping does not list start at the default head.
    assert source.head_timestamp(Instrument("MSFT"), D1) == utc("2015-01-02")
    bars = source.fetch(AAPL, H1, seg("2024-01-01", "2024-01-20"))
    assert bars.index[0] == utc("2024-01-10 14:30")
    with pytest.raises(NoData):
        source.fetch(AAPL, H1, seg("2024-01-01", "2024-01-10"))


def test_head_on_a_holiday_moves_to_the_next_session() -> None:
    source = SyntheticSource(head="2024-07-04")
    assert source.head_timestamp(AAPL, H1) == utc("2024-07-05 13:30")  # 09:30 EDT
    assert source.head_timestamp(AAPL, D1) == utc("2024-07-05")


def test_now_clips_bars_that_have_not_ended() -> None:
    now = utc("2024-01-03 17:30")  # during the 17:00 bar
    source = SyntheticSource(now=lambda: now)
    bars = source.fetch(AAPL, H1, seg("2024-01-02", "2024-01-04"))
    assert bars.index[-1] == utc("2024-01-03 16:00")
    assert bars.index[-1] + H1.delta <= now
    with pytest.raises(NoData):
        source.fetch(AAPL, H1, seg("2024-01-03 17:00", "2024-01-04"))


def test_unknown_symbols() -> None:
    source = SyntheticSource(unknown=["bad"])
    with pytest.raises(UnknownSymbol) as info:
        source.validate("BAD")
    assert info.value.symbol == "BAD"
    assert info.value.source == "synthetic"
    restricted = SyntheticSource(symbols=["AAPL", "MSFT"])
    assert restricted.validate(" aapl ") == Instrument("AAPL", long_name="synthetic AAPL")
    with pytest.raises(UnknownSymbol, match="SPY"):
        restricted.validate("SPY")
    with pytest.raises(UnknownSymbol):
        restricted.fetch(Instrument("SPY"), H1, seg("2024-01-02", "2024-01-03"))


def test_validate_checks_symbol_and_calendar() -> None:
    source = SyntheticSource()
    assert source.validate("brk.b", calendar="XLON").calendar == "XLON"
    with pytest.raises(InvalidRequest, match="calendar"):
        source.validate("AAPL", calendar="NOPE")
    with pytest.raises(InvalidRequest, match="invalid symbol"):
        source.validate("AA PL")
    with pytest.raises(InvalidRequest):
        source.validate("")


def test_api_calls_are_counted() -> None:
    source = SyntheticSource()
    instrument = source.validate("AAPL")
    source.head_timestamp(instrument, H1)
    source.fetch(instrument, H1, seg("2024-01-02", "2024-01-03"))
    with pytest.raises(NoData):
        source.fetch(instrument, H1, seg("2024-01-06", "2024-01-07"))
    source.bars(instrument, H1, "2024-01-02", "2024-01-03")  # not a request
    assert source.api_calls == 4
    assert source.fetch_calls == 2


def test_api_calls_are_thread_safe() -> None:
    source = SyntheticSource()
    threads = [
        threading.Thread(target=lambda: [source.validate("A") for _ in range(200)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert source.api_calls == 1600


def test_fail_injection_raises_what_it_returns() -> None:
    seen: list[Segment] = []

    def fail(segment: Segment) -> BaseException | None:
        seen.append(segment)
        return SourceUnavailable("down") if len(seen) == 1 else None

    source = SyntheticSource(fail=fail)
    segment = seg("2024-01-02", "2024-01-03")
    with pytest.raises(SourceUnavailable, match="down"):
        source.fetch(AAPL, H1, segment)
    assert len(source.fetch(AAPL, H1, segment)) == 7
    assert seen == [segment, segment]
    assert source.fetch_calls == 2


def test_delay_goes_through_cancel_wait() -> None:
    waits: list[float] = []

    def not_cancelled(seconds: float) -> bool:
        waits.append(seconds)
        return False

    source = SyntheticSource(delay=3600.0, cancel_wait=not_cancelled)
    assert len(source.fetch(AAPL, H1, seg("2024-01-02", "2024-01-03"))) == 7
    assert waits == [3600.0]


def test_cancelled_delay_raises_promptly() -> None:
    waits: list[float] = []
    source = SyntheticSource(delay=3600.0, cancel_wait=lambda s: waits.append(s) is None)
    with pytest.raises(Cancelled, match="AAPL"):
        source.fetch(AAPL, H1, seg("2024-01-02", "2024-01-03"))
    assert waits == [3600.0]  # the hour went to the cancellable wait (which said cancelled) only


def test_bars_matches_fetch_and_reads_naive_bounds_in_exchange_time() -> None:
    source = SyntheticSource(seed=4)
    fetched = source.fetch(AAPL, H1, seg("2024-02-05 05:00", "2024-02-06 05:00"))
    pd.testing.assert_frame_equal(source.bars("aapl", "1h", "2024-02-05", "2024-02-06"), fetched)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(InvalidRequest, match="head"):
        SyntheticSource(head="not a date")
    with pytest.raises(InvalidRequest, match="seed"):
        SyntheticSource(seed="1")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="delay"):
        SyntheticSource(delay=-1)


def test_two_years_of_minutes_generate_quickly() -> None:
    source = SyntheticSource()
    source.bars(AAPL, M1, utc("2022-01-03"), utc("2022-01-04"))  # load the calendar once
    began = time.perf_counter()
    bars = source.bars(AAPL, M1, utc("2022-01-01"), utc("2024-01-01"))
    elapsed = time.perf_counter() - began
    assert len(bars) > 190_000
    assert elapsed < budget(1.5)


def test_forex_futures_and_indices_follow_their_calendars_and_quoting() -> None:
    source = SyntheticSource(seed=2, now=lambda: pd.Timestamp("2026-12-01", tz="UTC"))
    fx = source.validate("eurusd:fx")
    assert (fx.symbol, fx.calendar, fx.sec_type, fx.exchange, fx.currency) == (
        "EUR.USD", "FX", "CASH", "IDEALPRO", "USD"
    )  # fmt: skip
    week = source.bars("EUR.USD", "1h", "2026-11-14", "2026-11-21 12:00")  # New York bounds
    assert len(week) == 120 and week["volume"].isna().all()  # MIDPOINT-like: no volume
    assert ((week["close"] > 0.09) & (week["close"] < 5.1)).all()
    assert (week["close"].round(5) == week["close"]).all()
    es = source.validate("ESZ6")
    assert (es.symbol, es.calendar, es.sec_type, es.expiry) == (
        "ES:FUT:202612", "GLOBEX", "FUT", "202612"
    )  # fmt: skip
    es_week = source.bars(es, "1h", "2026-11-14", "2026-11-21")
    assert len(es_week) == 115  # 5 sessions x 23 h
    assert source.validate("SPX:ind").calendar == "XNYS"
    assert source.validate("EUR.USD", calendar="24/5").calendar == "24/5"  # an explicit calendar
    # Head timestamps on each calendar: a Saturday head gives the Sunday evening open.
    heads = SyntheticSource(head="2026-11-14 12:00")
    assert heads.head_timestamp(fx, "1h") == pd.Timestamp("2026-11-15 22:00", tz="UTC")
    assert heads.head_timestamp(es, "1h") == pd.Timestamp("2026-11-15 23:00", tz="UTC")
    assert heads.head_timestamp(fx, "1d") == pd.Timestamp("2026-11-16", tz="UTC")
