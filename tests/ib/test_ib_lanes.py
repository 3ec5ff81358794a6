"""IB fetch lanes: several historical requests in flight (one connection each), the same bars and
request count as one lane, and a cancel that keeps every answer that arrived; the message-rate
throttle that runs before the pacing limiter."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from candleflow.errors import Cancelled, InvalidRequest
from candleflow.ibsim import Faults, IBSimulator
from candleflow.ibsim.data import HistoricalQuery
from candleflow.loading.pipeline import LoadRequest, run_load, stage_plan
from candleflow.progress import CancelToken, ProgressTracker
from candleflow.sources.ib import IBSource
from candleflow.sources.options import parse_source_options
from candleflow.sources.pacing import MessageThrottle, PacingLimiter
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from tests.ib.conftest import FakeClock

SCALE = 0.005
NOW = pd.Timestamp("2025-06-01", tz="UTC")
DAYS = ("2024-03-04", "2024-03-16")  # 10 trading days: 10 one-day requests of 1-minute bars


def _request() -> LoadRequest:
    return LoadRequest.parse("AAPL", "1m", start=DAYS[0], end=DAYS[1], mode="full")


def _source(sim: IBSimulator, lanes: int, token: CancelToken | None = None) -> IBSource:
    limiter = PacingLimiter(time_scale=sim.time_scale)
    return IBSource(port=sim.port, limiter=limiter, lanes=lanes, cancel_token=token)


@pytest.mark.parametrize("lanes", [1, 2])
def test_lanes_load_the_same_bars_with_the_minimum_requests(lanes: int, tmp_path: Path) -> None:
    # Each answer waits long enough that a second lane's request, sent at once beside the first,
    # reaches the gateway while the first is still there, however busy the machine.
    delay = 1.0 if lanes > 1 else 0.05
    with (
        IBSimulator(seed=5, time_scale=SCALE, faults=Faults(delay=delay)) as sim,
        _source(sim, lanes) as source,
    ):
        store = BarStore(tmp_path)
        summary = run_load(_request(), source, store, now=NOW)
        stats = sim.stats
        assert source.api_calls == stats.historical_requests + stats.contract_requests + (
            stats.head_requests
        )
    assert summary.segments == stats.historical_requests == 10
    assert stats.violations == 0
    assert stats.most_in_flight == lanes
    assert stats.connections == lanes
    expected = SyntheticSource(5).bars("AAPL", "1m", pd.Timestamp(DAYS[0], tz="UTC"),
                                       pd.Timestamp(DAYS[1], tz="UTC"))  # fmt: skip
    pd.testing.assert_frame_equal(store.read("ib", "AAPL", "1m"), expected, check_freq=False)


def test_a_cancel_with_two_lanes_keeps_what_arrived_and_sends_nothing_more(
    tmp_path: Path,
) -> None:
    tracker = ProgressTracker("load", stages=stage_plan("full"))
    token = tracker.cancel_token

    def cancel_at_first_answer(number: int, query: HistoricalQuery) -> tuple[int, str] | None:
        if number == 1:
            token.cancel("stop")
        return None

    faults = Faults(delay=0.2, inject=cancel_at_first_answer)
    with (
        IBSimulator(seed=5, time_scale=SCALE, faults=faults) as sim,
        _source(sim, 2, token) as source,
    ):
        store = BarStore(tmp_path)
        with pytest.raises(Cancelled):
            run_load(_request(), source, store, tracker=tracker, now=NOW)
        stats = sim.stats
    # The cancel struck while the first request was answered: at most the two lanes' requests
    # were sent, and every bar the gateway sent is stored.
    assert 1 <= stats.historical_requests <= 2
    assert len(store.read("ib", "AAPL", "1m")) == stats.bars_sent > 0


def test_lanes_are_checked() -> None:
    with pytest.raises(InvalidRequest, match="lanes"):
        IBSource(port=4002, lanes=0)
    with pytest.raises(InvalidRequest, match="lanes") as info:
        parse_source_options("ib", lanes=5)
    assert info.value.param == "lanes"
    assert parse_source_options("ib", lanes=3).lanes == 3  # type: ignore[union-attr]


def test_the_message_throttle_lets_n_per_second_through() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(3, clock)
    start = clock.t
    for _ in range(3):
        throttle.acquire()
    assert clock.waits == []
    clock.t = start + 0.25
    throttle.acquire()  # the 4th waits for the 1st (at start) to leave the second
    assert clock.waits == [pytest.approx(0.75)]
    assert clock.t == pytest.approx(start + 1.0)


def test_a_cancel_stops_a_throttled_wait() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(1, clock)
    throttle.acquire()
    token = CancelToken()
    token.cancel("stop")
    with pytest.raises(Cancelled):
        throttle.acquire(token)


def test_no_throttle_at_zero() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(0, clock)
    for _ in range(100):
        throttle.acquire()
    assert clock.waits == []
