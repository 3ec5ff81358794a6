"""Candle-level progress of a search in this process (no Prefect), with an injected slow backtest
(every block of candles sleeps first): for grid, random and bayes the events a sink sees are
monotonic, come at least once a second (scaled by the test time factor), show "Iteration i/N ·
Candle a/b" with 0 < a < b while an evaluation runs, and end at 100.00 %; a slow skopt ``ask``
is shown as "choosing next points" and keeps events coming; a cancel freezes the figure.

The mirror of batches run elsewhere (:class:`RemoteBatches`) and the meter that feeds it are
checked with hand-written messages.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candleflow.optimize.monitor import MIN_BLOCK, BatchMeter, RemoteBatches, candle_block
from candleflow.optimize.search import optimize
from candleflow.progress import ListSink, ProgressEvent, ProgressTracker
from candleflow.progress.wording import HoldOnCancel, optimize_position
from tests.backtest.conftest import synthetic_bars
from tests.backtest.slow_backtest import slow_kernel
from tests.timing import budget

N_BARS = 2 * MIN_BLOCK + 3_000  # three blocks per evaluation
DELAY = 0.15  # seconds per block: an evaluation takes about half a second
STRATEGY = "bollinger_breakout"  # not the fused sma_cross grid: one backtest per cell
SPACE: dict[str, Any] = {"window": [10, 15, 20], "k": [1.5, 2.0], "long_only": [True]}
POSITION = re.compile(r"Iteration (\d+)/(\d+)(?: · Candle ([\d,]+)/([\d,]+))?")


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic_bars(N_BARS, seed=2)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def check_rate(events: Sequence[ProgressEvent]) -> None:
    """At least one event a second of run time (the tracker's own clock), and no silent
    stretch beyond a generous bound (a busy machine may stall a thread now and then)."""
    run_time = events[-1].elapsed - events[0].elapsed
    assert len(events) - 1 >= run_time / budget(1.0), f"{len(events)} events in {run_time:.1f}s"
    gaps = [b.elapsed - a.elapsed for a, b in itertools.pairwise(events)]
    assert max(gaps) <= budget(2.0), f"a silent stretch of {max(gaps):.2f}s"


def check_events(
    events: Sequence[ProgressEvent], iterations: int, *, complete: bool, candles: int = N_BARS
) -> None:
    """The acceptance of the optimize progress, for the events one sink saw."""
    assert events, "no events"
    percentages = [e.percentage for e in events]
    assert percentages == sorted(percentages), "the percentage went back"
    assert all(round(p, 2) == p for p in percentages)
    check_rate(events)

    optimizing = [e for e in events if e.stage == "optimize" and not e.done]
    positions = [POSITION.match(optimize_position(e)) for e in optimizing]
    assert all(positions), [optimize_position(e) for e in optimizing]
    iteration = [int(m.group(1)) for m in positions if m is not None]
    assert iteration == sorted(iteration), "the iteration went back"
    assert all(int(m.group(2)) == iterations for m in positions if m is not None)
    mid = [
        (_number(m.group(3)), _number(m.group(4)))
        for m in positions
        if m is not None and m.group(3) is not None
    ]
    assert any(0 < a < b for a, b in mid), f"no candle count mid-evaluation: {mid}"
    assert all(b == candles for _, b in mid)
    if complete:
        assert events[-1].done and events[-1].percentage == 100.0


def _search(bars: pd.DataFrame, method: str, **options: Any) -> tuple[Any, ListSink]:
    sink = ListSink()
    tracker = ProgressTracker("optimize", [sink], stages=[("optimize", 1.0)])
    result = optimize(bars, STRATEGY, SPACE, method=method, progress=tracker,  # type: ignore[arg-type]
                      **options)  # fmt: skip
    if not result.cancelled:
        tracker.complete()
    return result, sink


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("grid", {"iterations": None}),
        ("random", {"iterations": 4, "batch_size": 2}),
        ("bayes", {"iterations": 4, "batch_size": 2, "n_initial_points": 2}),
    ],
)
def test_each_method_shows_candles_mid_evaluation_and_ends_at_100(
    bars: pd.DataFrame, method: str, options: dict[str, Any]
) -> None:
    with slow_kernel(DELAY):
        result, sink = _search(bars, method, **options)
    assert not result.cancelled
    check_events(sink.events, result.iterations, complete=True)


def test_a_slow_ask_is_shown_as_choosing_next_points_and_keeps_events_coming(
    bars: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from skopt import Optimizer  # type: ignore[import-untyped]

    ask = Optimizer.ask

    def slow_ask(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.2)
        return ask(self, *args, **kwargs)

    monkeypatch.setattr(Optimizer, "ask", slow_ask)
    result, sink = _search(bars, "bayes", iterations=4, batch_size=2, n_initial_points=2)
    assert result.iterations == 4
    events = sink.events
    choosing = [e for e in events if "choosing next points" in e.detail]
    assert len(choosing) >= 4, [e.detail for e in events]
    assert {e.detail.split(" (")[0] for e in choosing} >= {"choosing next points 1/2"}
    assert any("(0:0" in e.detail for e in choosing), "the time spent is shown"
    check_rate(events)
    assert events[-1].percentage == 100.0


def test_a_cancel_freezes_the_figure_where_it_struck(bars: pd.DataFrame) -> None:
    held = ListSink()
    tracker = ProgressTracker("optimize", [HoldOnCancel(held)], stages=[("optimize", 1.0)])
    struck: list[float] = []

    def cancel_mid_evaluation(event: ProgressEvent) -> None:
        match = POSITION.match(optimize_position(event)) if event.stage == "optimize" else None
        mid = match and match.group(3) and int(match.group(1)) >= 2 and _number(match.group(3))
        if mid and not struck:
            struck.append(event.percentage)
            tracker.cancel_token.cancel("test")

    tracker.add_sink(cancel_mid_evaluation)
    with slow_kernel(DELAY):
        result = optimize(bars, STRATEGY, SPACE, method="random", iterations=6, batch_size=1,
                          progress=tracker)  # fmt: skip
    assert result.cancelled and 1 <= result.iterations < 6
    cancelled = [e for e in held.events if e.cancelled]
    assert cancelled, "the cancel was not announced"
    assert cancelled[0].percentage >= struck[0]
    # Later stages (a flow saves the best so far) do not move what a held display shows.
    with tracker.stage("report", weight=1.0):
        pass
    later = [e.percentage for e in held.events[held.events.index(cancelled[0]) :]]
    assert set(later) == {cancelled[0].percentage}
    assert cancelled[0].percentage < 100.0


# ----------------------------------------------------------------------------- the mirror


def test_candle_blocks_are_a_sixteenth_of_the_evaluation_within_bounds() -> None:
    assert candle_block(1_000, 131_072) == MIN_BLOCK
    assert candle_block(16 * 20_000, 131_072) == 20_000
    assert candle_block(10**9, 131_072) == 131_072
    assert candle_block(100_000, 777) == 777  # the config's own limit wins


def _message(batch: str, seq: int, finished: int, candles: int, total: int) -> dict[str, Any]:
    return {"batch": batch, "seq": seq, "finished": finished, "candles": candles, "total": total}


def test_remote_batches_mirror_candles_and_settle_exactly() -> None:
    sink = ListSink()
    tracker = ProgressTracker("remote", [sink], stages=[("optimize", 1.0)], min_interval=0)
    with tracker.stage("optimize", total=6, unit="Iteration") as span:
        remote = RemoteBatches(span)
        remote.receive(_message("0", 1, 0, 500, 1_000))
        remote.receive(_message("1", 1, 1, 250, 1_000))
        remote.pump()
        last = tracker.last_event
        assert last is not None and last.child_position.startswith("Candle ")
        assert span.done == 1  # batch 1 finished one evaluation
        assert 0.0 < span.fraction < 1.0
        remote.receive(_message("0", 3, 2, 0, 0))
        remote.receive(_message("0", 2, 1, 900, 1_000))  # late: older than seq 3
        remote.pump()
        assert span.done == 3
        remote.settle("0", 3)  # its third evaluation's report never came
        remote.settle("1", 2)
        assert span.done == 5
        remote.receive(_message("1", 9, 1, 10, 1_000))  # after its result: ignored
        remote.pump()
        assert span.done == 5
    percentages = sink.percentages
    assert percentages == sorted(percentages)


def test_a_batch_meter_publishes_changes_and_polls_its_cancel() -> None:
    messages: list[dict[str, Any]] = []
    asked = threading.Event()

    def cancelled() -> bool:
        asked.set()
        return True

    with BatchMeter("7", messages.append, interval=0.01, cancelled=cancelled) as meter:
        meter.begin(100)
        meter.candles(40)
        assert asked.wait(30) and meter.token.cancelled
        meter.end()
    assert messages[0] == _message("7", 1, 0, 0, 0)
    assert messages[-1]["finished"] == 1 and messages[-1]["total"] == 0
    assert [m["seq"] for m in messages] == sorted({m["seq"] for m in messages})


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_the_mirror_never_goes_back_and_settles_exactly(data: st.DataObject) -> None:
    """Batches' messages in any order (late, repeated, after the result) and results in any
    order: the iteration count only grows and ends at what the results say."""
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3), label="batch sizes")
    candles = 100
    messages: list[dict[str, Any]] = []
    for b, size in enumerate(sizes):
        seq = 0
        for finished in range(size + 1):
            for done in (0, 50, 100) if finished < size else (0,):
                seq += 1
                total = candles if finished < size else 0
                messages.append(_message(str(b), seq, finished, done if total else 0, total))
    stream = data.draw(st.permutations(messages), label="message order")
    results = data.draw(st.permutations(list(enumerate(sizes))), label="result order")
    settle_at = sorted(data.draw(st.lists(st.integers(0, len(stream)), min_size=len(sizes),
                                          max_size=len(sizes))))  # fmt: skip

    sink = ListSink()
    tracker = ProgressTracker("mirror", [sink], stages=[("optimize", 1.0)], min_interval=0)
    with tracker.stage("optimize", total=sum(sizes), unit="Iteration") as span:
        remote = RemoteBatches(span)
        counts = [0]
        pending = list(results)
        for k, message in enumerate(stream):
            while pending and settle_at[len(results) - len(pending)] <= k:
                batch, size = pending.pop(0)
                remote.settle(str(batch), size)
            remote.receive(message)
            remote.pump()
            counts.append(span.done)
        for batch, size in pending:
            remote.settle(str(batch), size)
        counts.append(span.done)
    assert counts == sorted(counts)
    assert counts[-1] == sum(sizes)
    assert sink.percentages == sorted(sink.percentages)
