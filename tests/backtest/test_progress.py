"""Candle-level progress and cancellation of one backtest (events counted with min_interval=0,
no timing asserts)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from candleflow.backtest import BacktestConfig, BacktestResult, run_backtest
from candleflow.errors import Cancelled
from candleflow.progress import ListSink, ProgressEvent, ProgressTracker
from tests.backtest.conftest import synthetic_bars

N = 200_000
CHUNK = 10_000


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic_bars(N, seed=1)


def candles(event: ProgressEvent) -> int:
    match = re.fullmatch(r"Candle ([\d,]+)/200,000", event.child_position)
    assert match, event.child_position
    return int(match.group(1).replace(",", ""))


def test_candle_events_are_monotonic_with_two_decimals(bars: pd.DataFrame) -> None:
    sink = ListSink()
    tracker = ProgressTracker("backtest", [sink], stages=[("run", 1)], min_interval=0)
    with tracker.stage("run", total=1) as stage:
        result = run_backtest(bars, progress=stage, config=BacktestConfig(chunk_size=CHUNK))
    tracker.complete()

    candle_events = [e for e in sink.events if e.child_position]
    counts = [candles(e) for e in candle_events]
    assert counts[-1] == N and len(counts) >= N // CHUNK
    assert counts == sorted(counts)
    assert {c % CHUNK for c in counts} == {0}  # reported at chunk boundaries
    percentages = sink.percentages
    assert percentages == sorted(percentages) and percentages[-1] == 100.0
    assert all(round(p, 2) == p for p in percentages)
    assert candle_events[len(candle_events) // 2].parent_position == "run 1/1"  # the item in flight
    assert 45.0 <= candle_events[len(candle_events) // 2].percentage <= 55.0
    assert result.metrics.bars == N


def test_result_does_not_depend_on_chunking(bars: pd.DataFrame) -> None:
    whole = run_backtest(bars, config=BacktestConfig(chunk_size=N))
    tracker = ProgressTracker("chunks", [ListSink()], min_interval=0)
    chunked = run_backtest(bars, config=BacktestConfig(chunk_size=777), progress=tracker)
    np.testing.assert_array_equal(whole.equity.to_numpy(), chunked.equity.to_numpy())
    pd.testing.assert_frame_equal(whole.trades, chunked.trades)


def test_cancellation_stops_at_a_chunk_boundary_with_the_partial_result(bars: pd.DataFrame) -> None:
    tracker = ProgressTracker("cancel", min_interval=0)

    def cancel_after_30k(event: ProgressEvent) -> None:
        if event.items_done >= 30_000:
            tracker.cancel_token.cancel("user asked")

    tracker.add_sink(cancel_after_30k)
    with pytest.raises(Cancelled, match="user asked") as caught:
        run_backtest(bars, progress=tracker, config=BacktestConfig(chunk_size=CHUNK))
    partial = caught.value.partial
    assert isinstance(partial, BacktestResult) and partial.cancelled
    assert partial.metrics.bars == 30_000 and len(partial.equity) == 30_000
    assert tracker.last_event is not None and tracker.last_event.cancelled


def test_a_cancelled_token_stops_before_the_first_chunk(bars: pd.DataFrame) -> None:
    tracker = ProgressTracker("cancel", min_interval=0)
    tracker.cancel_token.cancel()
    with pytest.raises(Cancelled) as caught:
        run_backtest(bars, progress=tracker)
    assert caught.value.partial is None
