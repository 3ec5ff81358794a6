"""IBSource over the simulator: typed errors, minimum requests, pacing, reconnects, failures."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from candleflow.errors import (
    Cancelled,
    InvalidRequest,
    NoData,
    PacingViolation,
    SourceUnavailable,
    UnknownSymbol,
)
from candleflow.ibsim import Faults, IBSimulator
from candleflow.ibsim.data import HistoricalQuery
from candleflow.loading.pipeline import LoadRequest, RetryPolicy, run_load
from candleflow.models import Segment
from candleflow.progress import CancelToken
from candleflow.sources.ib import IBSource, ib_error
from candleflow.sources.pacing import PacingLimiter, PacingRules
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from tests.ib.conftest import WaitSignallingClock, cancel_once_waiting
from tests.timing import call_in_thread

NOW = pd.Timestamp("2025-06-01", tz="UTC")
SCALE = 0.005  # IB's 600 s window lasts 3 s
FAST_RETRY = RetryPolicy(retries=2, backoff=0.01)


def _source(sim: IBSimulator, **kwargs: object) -> IBSource:
    kwargs.setdefault("limiter", PacingLimiter(time_scale=sim.time_scale))
    kwargs.setdefault("timeout", 10.0)
    return IBSource(port=sim.port, **kwargs)  # type: ignore[arg-type]


def _expected(symbol: str, seed: int, start: str, end: str, tf: str = "1h") -> pd.DataFrame:
    request = LoadRequest.parse(symbol, tf, start=start, end=end)
    assert request.start is not None and request.end is not None
    return SyntheticSource(seed).bars(symbol, tf, request.start, request.end)


def test_validate_resolves_the_contract_and_names_unknown_symbols(sim: IBSimulator) -> None:
    with _source(sim) as source:
        instrument = source.validate("aapl")
        assert (instrument.symbol, instrument.con_id > 0) == ("AAPL", True)
        assert instrument.primary_exchange == "NASDAQ"
        with pytest.raises(UnknownSymbol, match="'ZZZZ'"):
            source.validate("ZZZZ")
        with pytest.raises(InvalidRequest):
            source.validate("bad symbol!")
        with pytest.raises(InvalidRequest, match="unknown calendar"):
            source.validate("AAPL", calendar="NOPE")
        assert source.api_calls == 2
        head = source.head_timestamp(instrument, "1h")
        assert head == pd.Timestamp("2015-01-02 14:30", tz="UTC")
        assert source.head_timestamp(instrument, "1d") == pd.Timestamp("2015-01-02", tz="UTC")


def test_calendar_map_chooses_the_calendar_per_symbol(sim: IBSimulator) -> None:
    with _source(sim, calendar_map={"vod": "XLON"}) as source:
        assert source.validate("VOD").calendar == "XLON"
        assert source.validate("AAPL", calendar="XNAS").calendar == "XNAS"


def test_fetch_returns_the_segment_as_a_utc_float_frame_and_raises_for_nothing(
    sim: IBSimulator,
) -> None:
    start, end = (
        pd.Timestamp("2024-03-04 14:30", tz="UTC"),
        pd.Timestamp("2024-03-08 21:00", tz="UTC"),
    )
    with _source(sim) as source:
        instrument = source.validate("MSFT")
        frame = source.fetch(instrument, "1h", Segment(start, end, 35))
        pd.testing.assert_frame_equal(frame, SyntheticSource(7).bars("MSFT", "1h", start, end))
        assert str(frame.index.tz) == "UTC" and {str(d) for d in frame.dtypes} == {"float64"}
        # A weekend: IB answers 162 "no data", which must never be an empty success.
        weekend = Segment(
            pd.Timestamp("2024-03-09", tz="UTC"), pd.Timestamp("2024-03-10", tz="UTC"), 0
        )
        with pytest.raises(NoData, match="HMDS query returned no data"):
            source.fetch(instrument, "1h", weekend)
        with pytest.raises(InvalidRequest, match="exceeds IB's maximum"):
            source.fetch(instrument, "1m", Segment(start, end, 0))
    assert sim.stats.violations == 0


def test_ib_errors_map_to_typed_exceptions() -> None:
    def err(code: int, text: str) -> Exception:
        return ib_error(code, text, symbol="AAPL", what="x")

    assert isinstance(err(200, "No security definition"), UnknownSymbol)
    assert "AAPL" in str(err(200, "No security definition"))
    assert type(err(162, "Historical data request pacing violation")).__name__ == "PacingViolation"
    assert isinstance(err(162, "HMDS query returned no data: AAPL@SMART Trades"), NoData)
    assert isinstance(
        err(162, "Historical Market Data Service error message:Invalid step"), InvalidRequest
    )
    assert isinstance(err(321, "Error validating request"), InvalidRequest)
    assert isinstance(err(1100, "Connectivity lost"), SourceUnavailable)


def test_a_321_is_bounded_by_the_adapter_not_left_hanging(sim: IBSimulator) -> None:
    # ib_async treats 321 as a warning and never ends the request; the adapter must.
    # The adapter's own timeout is 10 minutes, so a request that ends within the minute waited
    # here ended on the 321.
    faults = Faults(errors={1: 321})
    segment = Segment(pd.Timestamp("2024-03-04", tz="UTC"), pd.Timestamp("2024-03-05", tz="UTC"), 7)
    with (
        IBSimulator(seed=7, pacing=False, faults=faults) as bad,
        _source(bad, timeout=600.0) as source,
    ):
        instrument = source.validate("AAPL")
        with pytest.raises(InvalidRequest, match="321"):
            call_in_thread(lambda: source.fetch(instrument, "1h", segment), 60, "the 321 request")


def test_full_load_of_three_symbols_makes_the_minimum_requests_without_violations(
    tmp_path: Path,
) -> None:
    store = BarStore(tmp_path)
    with IBSimulator(seed=11, time_scale=SCALE) as sim, _source(sim) as source:
        segments = 0
        for symbol in ("AAPL", "MSFT", "SPY"):
            request = LoadRequest.parse(
                symbol, "1h", start="2023-01-01", end="2024-12-31", mode="full"
            )
            summary = run_load(request, source, store, now=NOW)
            assert summary.failed_segments == ()
            segments += summary.segments
            stored = store.read("ib", symbol, "1h")
            pd.testing.assert_frame_equal(
                stored, _expected(symbol, 11, "2023-01-01", "2024-12-31"), check_freq=False
            )
        stats = sim.stats
    # 2 years of 1h bars at ≤ 30 days per request: ~25 segments per symbol, 75 in all (> 60).
    assert segments >= 72
    assert stats.historical_requests == segments
    assert stats.violations == 0
    assert stats.per_symbol == {"AAPL": segments // 3, "MSFT": segments // 3, "SPY": segments // 3}


def test_a_70_segment_budget_is_spaced_by_the_limiter_with_zero_violations() -> None:
    days = pd.bdate_range("2024-01-02", periods=75, tz="UTC")
    segments = [
        Segment(d + pd.Timedelta(hours=14, minutes=30), d + pd.Timedelta(hours=21), 7) for d in days
    ]
    with IBSimulator(seed=3, time_scale=SCALE) as sim, _source(sim) as source:
        instrument = source.validate("AAPL")
        started = time.monotonic()
        fetched = 0
        for segment in segments[:70]:
            with contextlib.suppress(NoData):  # a holiday
                fetched += len(source.fetch(instrument, "1h", segment))
        elapsed = time.monotonic() - started
        assert sim.stats.violations == 0
        assert sim.stats.historical_requests == 70
        assert source.limiter.waited > 0
    # 70 > 60 requests: the last ten had to wait for the (scaled) 600 s window.
    assert elapsed >= 600 * SCALE
    assert fetched > 60 * 7


def test_without_the_limiter_the_same_budget_violates() -> None:
    # The control for the test above: rules that never wait let the simulator see violations.
    lax = PacingLimiter(PacingRules(max_requests=10**6, max_same_series=10**6, identical_window=0))
    days = pd.bdate_range("2024-01-02", periods=12, tz="UTC")
    with IBSimulator(seed=3, time_scale=1.0) as sim, _source(sim, limiter=lax) as source:
        instrument = source.validate("AAPL")
        for d in days:
            # Violations surface as PacingViolation (after the 162 is counted).
            with contextlib.suppress(PacingViolation, NoData):
                source.fetch(
                    instrument,
                    "1h",
                    Segment(d + pd.Timedelta(hours=14), d + pd.Timedelta(hours=21), 7),
                )
        assert sim.stats.violations > 0


def test_a_dropped_connection_reconnects_and_the_load_completes_without_duplicates(
    tmp_path: Path,
) -> None:
    store = BarStore(tmp_path)
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-08-31", mode="full")
    with (
        IBSimulator(seed=5, time_scale=SCALE, faults=Faults(drop_after=3, drops=2)) as sim,
        _source(sim, reconnect_backoff=0.01) as source,
    ):
        summary = run_load(request, source, store, now=NOW, retry=FAST_RETRY)
        stats = sim.stats
        assert source.connects == 3
    assert summary.failed_segments == ()
    assert stats.drops == 2 and stats.connections == 3
    assert stats.historical_requests == summary.segments + 2  # the two lost requests, resent
    assert stats.violations == 0
    stored = store.read("ib", "AAPL", "1h")
    assert stored.index.is_unique
    pd.testing.assert_frame_equal(
        stored, _expected("AAPL", 5, "2024-01-01", "2024-08-31"), check_freq=False
    )


def test_a_gateway_that_stays_down_keeps_what_was_fetched_and_a_rerun_fetches_the_rest(
    tmp_path: Path,
) -> None:
    store = BarStore(tmp_path)
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-08-31", mode="full")
    faults = Faults(drop_after=3, stay_down=True)
    with IBSimulator(seed=5, time_scale=SCALE, faults=faults) as sim:
        with (
            _source(sim, reconnect_attempts=2, reconnect_backoff=0.01) as source,
            pytest.raises(SourceUnavailable, match="unreachable"),
        ):
            run_load(request, source, store, now=NOW, retry=FAST_RETRY)
        full = _expected("AAPL", 5, "2024-01-01", "2024-08-31")
        kept = store.read("ib", "AAPL", "1h")
        # the three answered segments are stored, complete, and nothing else
        assert len(kept) > 0 and kept.index.is_unique
        pd.testing.assert_frame_equal(kept, full.loc[: kept.index[-1]], check_freq=False)
        before = sim.stats.historical_requests
        assert before == 4  # three answered, the fourth dropped the line
        sim.restore()
        with _source(sim) as source:
            rerun = run_load(request, source, store, now=NOW, retry=FAST_RETRY)
        assert rerun.failed_segments == ()
        assert sim.stats.historical_requests - before == rerun.segments
        assert rerun.rows_added + len(kept) == len(full)
    pd.testing.assert_frame_equal(
        store.read("ib", "AAPL", "1h"),
        _expected("AAPL", 5, "2024-01-01", "2024-08-31"),
        check_freq=False,
    )


def test_an_injected_no_data_segment_fails_after_retries_and_the_others_complete(
    tmp_path: Path,
) -> None:
    bad_end = "20240301 21:00:00 UTC"

    def inject(number: int, query: HistoricalQuery) -> tuple[int, str] | None:
        if query.end != bad_end:
            return None
        label = query.contract.label
        return (
            162,
            f"Historical Market Data Service error message:HMDS query returned no data: {label}",
        )

    store = BarStore(tmp_path)
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-05-31", mode="full")
    with (
        IBSimulator(seed=5, time_scale=SCALE, faults=Faults(inject=inject)) as sim,
        _source(sim) as source,
    ):
        summary = run_load(request, source, store, now=NOW, retry=FAST_RETRY)
        stats = sim.stats
    assert len(summary.failed_segments) == 1
    assert "no data" in summary.failed_segments[0]
    bad = [q for q in stats.queries if q.end == bad_end]
    assert len(bad) == FAST_RETRY.retries + 1
    assert stats.historical_requests == summary.segments + FAST_RETRY.retries
    assert stats.violations == 0
    stored = store.read("ib", "AAPL", "1h")
    expected = _expected("AAPL", 5, "2024-01-01", "2024-05-31")
    assert set(stored.index) < set(expected.index)
    assert len(expected) - len(stored) > 100  # one month of bars is missing


def test_the_adapter_uses_the_library_this_environment_has(sim: IBSimulator) -> None:
    # scripts/check-ib-insync sets this, so the fallback to ib_insync is proven to be taken.
    expected = os.environ.get("CANDLEFLOW_EXPECT_IB_LIBRARY", "ib_async")
    with _source(sim) as source:
        assert source.library == expected
        assert source.validate("AAPL").symbol == "AAPL"


def test_a_connectivity_blip_1100_1102_does_not_fail_the_request() -> None:
    segment = Segment(
        pd.Timestamp("2024-03-04 14:30", tz="UTC"), pd.Timestamp("2024-03-04 21:00", tz="UTC"), 7
    )
    with IBSimulator(seed=7, pacing=False, faults=Faults(blip_at=1)) as sim, _source(sim) as source:
        frame = source.fetch(source.validate("AAPL"), "1h", segment)
        assert len(frame) == 7
        assert sim.stats.errors_sent == {1100: 1, 1102: 1}


def test_a_gateway_that_does_not_answer_in_time_gives_source_unavailable() -> None:
    segment = Segment(
        pd.Timestamp("2024-03-04 14:30", tz="UTC"), pd.Timestamp("2024-03-04 21:00", tz="UTC"), 7
    )
    # The answer would come after 60 s, the adapter gives up after 0.3 s: a request that raises
    # "did not answer" (and returns no bars) was ended by the adapter's timeout.
    with (
        IBSimulator(seed=7, pacing=False, faults=Faults(delay=60.0)) as sim,
        _source(sim, timeout=0.3) as source,
    ):
        instrument = source.validate("AAPL")
        with pytest.raises(SourceUnavailable, match="did not answer"):
            source.fetch(instrument, "1h", segment)


def test_a_normal_load_never_asks_before_the_head_timestamp(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-06-30", mode="full")
    head = {"AAPL": "2024-03-13 15:10"}
    with IBSimulator(seed=5, time_scale=SCALE, head=head) as sim, _source(sim) as source:
        summary = run_load(request, source, store, now=NOW, retry=FAST_RETRY)
        stats = sim.stats
    assert summary.failed_segments == ()
    assert stats.errors_sent == {}  # in particular no 162 "HMDS query returned no data"
    assert stats.historical_requests == summary.segments
    stored = store.read("ib", "AAPL", "1h")
    # The head is mid-bar: the first whole 1h bar after it starts 16:00 UTC (12:00 in New York).
    assert stored.index[0] == pd.Timestamp("2024-03-13 16:00", tz="UTC")
    expected = SyntheticSource(5).bars("AAPL", "1h", stored.index[0], request.end)
    pd.testing.assert_frame_equal(stored, expected, check_freq=False)


def test_the_cancel_token_interrupts_a_pacing_wait(sim: IBSimulator) -> None:
    token = CancelToken()
    segment = Segment(
        pd.Timestamp("2024-03-04 14:30", tz="UTC"), pd.Timestamp("2024-03-04 21:00", tz="UTC"), 7
    )
    clock = WaitSignallingClock()
    limiter = PacingLimiter(clock=clock)
    with _source(sim, limiter=limiter, cancel_token=token) as source:
        instrument = source.validate("AAPL")
        source.fetch(instrument, "1h", segment)
        cancel_once_waiting(clock, token, "user pressed Ctrl+C")
        with pytest.raises(Cancelled, match="Ctrl"):
            source.fetch(instrument, "1h", segment)  # identical: IB's 15 s rule makes it wait
    # Cut short: a wait that ran its course would be counted in `waited`.
    assert clock.waiting.is_set() and limiter.waited == 0.0 and limiter.acquired == 1
