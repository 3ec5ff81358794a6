"""Tests of candleflow.progress (tracker, spans, throttling, cancellation) and the Rich sink."""

from __future__ import annotations

import functools
import io
import itertools
import json
import logging
import math
import sys
import threading
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from candleflow.errors import Cancelled
from candleflow.progress import (
    CancelToken,
    ListSink,
    LoggingSink,
    ProgressEvent,
    ProgressTracker,
    Span,
    format_duration,
)
from candleflow.progress.display import RichSink
from tests.timing import run_in_threads

PROGRESS_LOGGER = "candleflow.progress"


class FakeClock:
    """Time that moves only when a test moves it, so throttling is deterministic."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class SteppingClock:
    """Time that moves ``step`` seconds on every read; safe from many threads."""

    def __init__(self, step: float) -> None:
        self._reads = itertools.count()
        self.step = step

    def __call__(self) -> float:
        return next(self._reads) * self.step


def raising_sink(event: ProgressEvent) -> None:
    raise RuntimeError("sink is broken")


def sink_failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == PROGRESS_LOGGER and "progress sink" in r.getMessage()
    ]


def assert_monotonic(events: list[ProgressEvent]) -> None:
    percentages = [e.percentage for e in events]
    assert percentages == sorted(percentages), percentages


# --- the generated, multi-threaded scenario ---------------------------------------------------

# One thread's work inside a stage, as (kind, n, child advances):
# ("advance", n, ()), ("child", weight, its advances), ("count", rows, ()).
Op = tuple[str, int, tuple[int, ...]]
Scenario = tuple[list[tuple[str, float]], list[str], dict[str, list[list[Op]]], bool]

work_items: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("advance"), st.integers(1, 5), st.just(())),
    st.tuples(
        st.just("child"), st.integers(1, 3), st.lists(st.integers(1, 4), max_size=4).map(tuple)
    ),
    st.tuples(st.just("count"), st.integers(1, 100), st.just(())),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 4))
    weights = draw(st.lists(st.integers(0, 10), min_size=n, max_size=n))
    plan: list[tuple[str, float]] = [(f"s{i}", float(w)) for i, w in enumerate(weights)]
    runs = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    executed = [name for (name, _), run in zip(plan, runs, strict=True) if run]
    if draw(st.booleans()):
        executed.insert(draw(st.integers(0, len(executed))), "unplanned")
    per_thread = st.lists(st.lists(work_items, max_size=6), min_size=1, max_size=8)
    work = {name: draw(per_thread) for name in executed}
    known_total = draw(st.booleans())
    return plan, executed, work, known_total


def expected_items(ops: list[list[Op]]) -> int:
    return sum(n for thread_ops in ops for kind, n, _ in thread_ops if kind != "count")


def expected_rows(ops: list[list[Op]]) -> int:
    return sum(n for thread_ops in ops for kind, n, _ in thread_ops if kind == "count")


def run_thread_ops(
    tracker: ProgressTracker, span: Span, barrier: threading.Barrier, ops: list[Op]
) -> None:
    barrier.wait()
    for kind, n, advances in ops:
        if kind == "advance":
            span.advance(n, detail=f"advance {n}")
        elif kind == "child":
            with span.child("candles", total=sum(advances) or None, weight=n, unit="Candle") as c:
                for step in advances:
                    c.advance(step)
        else:
            tracker.count("rows", n)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios(), min_interval=st.sampled_from([0.0, 0.002, 0.25]))
def test_generated_threaded_operations_keep_the_invariants(
    scenario: Scenario,
    min_interval: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.clear()
    plan, executed, work, known_total = scenario
    sink = ListSink()
    tracker = ProgressTracker(
        "generated",
        [raising_sink, sink],
        stages=plan,
        min_interval=min_interval,
        clock=SteppingClock(0.001),
    )
    rows = 0
    for name in executed:
        ops = work[name]
        expected = expected_items(ops)
        rows += expected_rows(ops)
        with tracker.stage(name, total=expected if known_total else None) as span:
            barrier = threading.Barrier(len(ops))
            run_in_threads(
                functools.partial(run_thread_ops, tracker, span, barrier, thread_ops)
                for thread_ops in ops
            )
        assert span.done == expected
        # A clean exit is throttled, so a stage's events may stop short of its count, but they
        # open with its (forced) enter event and never count more than was done.
        counts = [e.items_done for e in sink.events if e.stage == name]
        assert counts[0] == 0
        assert counts == sorted(counts)
        assert counts[-1] <= expected
    tracker.complete()
    tracker.complete()

    events = sink.events
    assert_monotonic(events)
    assert events[-1].done
    assert events[-1].percentage == 100.0
    assert [e.done for e in events].count(True) == 1
    assert events[-1].counters.get("rows", 0) == rows
    if executed:  # the final event reports the last stage's exact count
        assert events[-1].stage == executed[-1]
        assert events[-1].items_done == expected_items(work[executed[-1]])
    # Forced events (one enter per stage, complete) reached the healthy sink despite the
    # broken one, in stage order, and the broken one was logged exactly once.
    assert [stage for stage, _ in itertools.groupby(e.stage for e in events) if stage] == executed
    assert len(events) >= len(executed) + 1
    if min_interval > 0:  # the documented bound holds with threads too
        assert len(events) <= events[-1].elapsed / min_interval + len(executed) + 2
    assert len(sink_failure_records(caplog)) == 1
    for event in events:
        assert event.eta is None or (math.isfinite(event.eta) and event.eta >= 0)


# --- weights, skipped and unplanned stages ----------------------------------------------------


def test_planned_weights_give_the_overall_percentage() -> None:
    sink = ListSink()
    tracker = ProgressTracker(
        "w", [sink], stages=[("a", 1), ("b", 3)], min_interval=0, clock=FakeClock()
    )
    with tracker.stage("a"):
        pass
    assert sink.events[-1].percentage == 25.0
    with tracker.stage("b", total=10) as b:
        b.advance(5)
        assert sink.events[-1].percentage == 62.5
        assert tracker.percentage == 62.5
    assert sink.events[-1].percentage == 100.0
    assert not sink.events[-1].done
    tracker.complete()
    assert sink.events[-1].done


def test_weight_override_and_untotalled_span_counts_zero_until_exit() -> None:
    tracker = ProgressTracker("w", stages=[("a", 1), ("b", 1)], clock=FakeClock())
    with tracker.stage("a", weight=3) as a:  # plan says 1; the override makes the total 4
        a.advance(1000)
        assert tracker.percentage == 0.0  # total=None: no fraction until it exits
    assert tracker.percentage == 75.0


def test_entering_a_later_stage_marks_skipped_ones_done() -> None:
    sink = ListSink()
    tracker = ProgressTracker("skip", [sink], stages=[("a", 1), ("b", 1), ("c", 2)])
    with tracker.stage("c", total=2) as c:
        assert sink.events[-1].percentage == 50.0
        assert (sink.events[-1].stage, sink.events[-1].stage_index) == ("c", 3)
        c.advance(1)
        assert tracker.percentage == 75.0


def test_unplanned_stage_adds_weight_without_skipping_pending_ones_and_never_goes_back() -> None:
    sink = ListSink()
    tracker = ProgressTracker("extra", [sink], stages=[("a", 1), ("b", 1)], min_interval=0)
    with tracker.stage("setup", weight=2):
        assert sink.events[-1].stage_total == 3
        assert sink.events[-1].stage_index == 1
    assert sink.events[-1].percentage == 50.0
    with tracker.stage("a"):
        assert sink.events[-1].stage_index == 2
    assert sink.events[-1].percentage == 75.0
    with tracker.stage("b"):
        pass
    assert sink.events[-1].percentage == 100.0
    with tracker.stage("late", weight=10):  # would be 4/14 without the clamp
        assert sink.events[-1].percentage == 100.0
    assert_monotonic(sink.events)


# --- child spans and positions ----------------------------------------------------------------


def test_child_span_covers_its_weight_of_the_parent() -> None:
    sink = ListSink()
    tracker = ProgressTracker("opt", [sink], stages=[("optimize", 1)], min_interval=0)
    with tracker.stage("optimize", total=4, unit="Iteration") as parent:
        assert (parent.tracker, parent.name, parent.unit, parent.total) == (
            tracker,
            "optimize",
            "Iteration",
            4,
        )
        parent.advance(1)
        with parent.child("candles", total=10, unit="Candle") as child:
            child.advance(5)
            assert parent.fraction == pytest.approx(1.5 / 4)
            event = sink.events[-1]
            assert event.percentage == 37.5
            assert event.parent_position == "Iteration 2/4"
            assert event.child_position == "Candle 5/10"
            assert event.items_done == 1
        assert parent.done == 2
        assert parent.fraction == pytest.approx(2 / 4)
        parent.advance(0)
        assert sink.events[-1].parent_position == ""
        assert sink.events[-1].child_position == ""


def test_positions_use_thousands_separators_and_cap_at_the_total() -> None:
    sink = ListSink()
    tracker = ProgressTracker("opt", [sink], min_interval=0)
    with tracker.stage("optimize", total=50, unit="Iteration") as parent:
        parent.advance(4)
        with parent.child("run", total=10_000, unit="Candle") as child:
            child.advance(7_300, detail="chunk 8")
            event = sink.events[-1]
            assert (event.parent_position, event.child_position) == (
                "Iteration 5/50",
                "Candle 7,300/10,000",
            )
            assert event.detail == "chunk 8"
            assert "Iteration 5/50 · Candle 7,300/10,000 · chunk 8" in event.summary()
        parent.update(50)
        with parent.child("extra", total=1, unit="Candle"):
            assert sink.events[-1].parent_position == "Iteration 50/50"


def test_segment_in_flight_and_detail_falls_back_to_the_parent() -> None:
    sink = ListSink()
    tracker = ProgressTracker("load", [sink], min_interval=0)
    with tracker.stage("fetch_segments", total=8, unit="Segment") as fetch:
        fetch.advance(2)
        fetch.update(detail="Segment 3/8: 2024-01-01 → 2024-01-31")
        with fetch.child("bars", total=None, unit="Bar") as bars:
            bars.advance(250)
            event = sink.events[-1]
            assert event.parent_position == "Segment 3/8"
            assert event.child_position == "Bar 250"
            assert event.detail == "Segment 3/8: 2024-01-01 → 2024-01-31"


def test_concurrent_children_from_threads_count_exactly() -> None:
    tracker = ProgressTracker("opt", [ListSink()], min_interval=0, clock=SteppingClock(1e-4))
    threads_n, per_thread, chunks = 8, 25, 4
    barrier = threading.Barrier(threads_n)
    with tracker.stage("optimize", total=threads_n * per_thread, unit="Iteration") as parent:

        def evaluate() -> None:
            barrier.wait()
            for _ in range(per_thread):
                with parent.child("candles", total=chunks * 10, unit="Candle") as child:
                    for _ in range(chunks):
                        child.advance(10)
                        tracker.count("api_calls")

        run_in_threads([evaluate] * threads_n)
        assert parent.done == threads_n * per_thread
        assert parent.fraction == 1.0
    tracker.complete()
    last = tracker.last_event
    assert last is not None
    assert last.counters["api_calls"] == threads_n * per_thread * chunks


def test_advance_from_eight_threads_loses_no_items() -> None:
    # A tiny switch interval makes threads swap at nearly every call boundary, so a count kept
    # by a read-modify-write spread over calls would lose items here, not once in a blue moon.
    threads_n, per_thread = 8, 5_000
    tracker = ProgressTracker("race", [ListSink()], min_interval=0.001)
    barrier = threading.Barrier(threads_n)
    interval = sys.getswitchinterval()
    with tracker.stage("s", total=threads_n * per_thread) as span:

        def work() -> None:
            barrier.wait()
            for _ in range(per_thread):
                span.advance(1)

        sys.setswitchinterval(1e-6)
        try:
            run_in_threads([work] * threads_n)
        finally:
            sys.setswitchinterval(interval)
        assert span.done == threads_n * per_thread


# --- throttling -------------------------------------------------------------------------------


def test_throttle_with_a_fake_clock() -> None:
    clock = FakeClock()
    sink = ListSink()
    tracker = ProgressTracker("t", [sink], stages=[("loop", 1)], clock=clock)
    calls = 200_000
    with tracker.stage("loop", total=calls) as span:
        for _ in range(calls):
            clock.tick(1e-5)
            span.advance(1)
    tracker.complete()
    elapsed = sink.events[-1].elapsed
    assert elapsed == pytest.approx(2.0)
    assert sink.events[-1].items_done == calls
    assert len(sink.events) <= elapsed / 0.25 + 1 + 2
    # Throttled, not silenced: one event per interval got through (forced: enter, complete).
    throttled = len(sink.events) - 2
    assert throttled >= elapsed / 0.25 - 1
    # Only complete() may come early; the stage's clean exit is throttled like an advance.
    gaps = [b.elapsed - a.elapsed for a, b in itertools.pairwise(sink.events[:-1])]
    assert all(gap >= 0.25 - 1e-9 for gap in gaps)


def test_throttle_with_the_real_clock_on_a_million_advances() -> None:
    sink = ListSink()
    tracker = ProgressTracker("t", [sink], stages=[("loop", 1)])
    calls = 1_000_000
    with tracker.stage("loop", total=calls) as span:
        advance = span.advance
        for _ in range(calls):
            advance(1)
    tracker.complete()
    elapsed = sink.events[-1].elapsed
    assert len(sink.events) <= elapsed / 0.25 + 1 + 2
    assert sink.events[-1].items_done == calls


@pytest.mark.parametrize("stages", [1, 3, 8])
def test_throttle_bound_over_several_stages(stages: int) -> None:
    clock = FakeClock()
    sink = ListSink()
    names = [f"s{i}" for i in range(stages)]
    tracker = ProgressTracker("t", [sink], stages=[(n, 1) for n in names], clock=clock)
    # Ticks of 1/1024 s are exact in binary, so each 1 s stage ends exactly on a throttle
    # deadline: the worst case, where a forced exit event would break the bound.
    for name in names:
        with tracker.stage(name, total=1024) as span:
            for _ in range(1024):
                clock.tick(1 / 1024)
                span.advance(1)
                tracker.count("rows")
    tracker.complete()
    events = sink.events
    elapsed = events[-1].elapsed
    assert elapsed == stages
    # The bound: throttled ≤ elapsed / min_interval, forced = one enter per stage, one
    # complete(), one spare.
    assert len(events) <= elapsed / 0.25 + stages + 2
    assert [e.stage for e in events if e.items_done == 0] == names  # every enter was forced
    # Throttled, not silenced: one event per interval got through.
    assert len(events) - stages - 1 >= elapsed / 0.25 - 1


def test_boundary_events_are_forced_inside_the_throttle_window() -> None:
    # Forced: entering each stage, a stage failing, complete(). Not forced: advances, counts,
    # child spans and a clean stage exit (the next stage's enter reports that boundary).
    sink = ListSink()
    tracker = ProgressTracker(
        "frozen", [sink], stages=[("a", 1), ("b", 1)], clock=FakeClock(), min_interval=0.25
    )
    with tracker.stage("a", total=1000) as a:
        for _ in range(1000):
            a.advance(1)
            tracker.count("rows")
        with a.child("c", total=1):
            pass
    assert a.done == 1001
    with pytest.raises(ValueError, match="boom"), tracker.stage("b", total=10) as b:
        b.advance(5)
        raise ValueError("boom")
    tracker.complete()
    kinds = [(e.stage, e.percentage, e.done) for e in sink.events]
    assert kinds == [
        ("a", 0.0, False),
        ("b", 50.0, False),
        ("b", 75.0, False),
        ("b", 100.0, True),
    ]
    assert sink.events[1].counters["rows"] == 1000
    assert sink.events[2].items_done == 5


def test_clean_stage_exit_inside_the_throttle_window_emits_nothing() -> None:
    clock = FakeClock()
    sink = ListSink()
    tracker = ProgressTracker("t", [sink], stages=[("a", 1), ("b", 1)], clock=clock)
    with tracker.stage("a", total=4) as a:
        a.advance(4)
    assert [(e.stage, e.percentage) for e in sink.events] == [("a", 0.0)]
    # The next stage's enter is forced, still inside the window, and reports a as finished.
    with tracker.stage("b", total=2) as b:
        assert len(sink.events) == 2
        b.advance(1)
        clock.tick(0.25)
    # Past the deadline a clean exit goes through, like an advance would.
    assert len(sink.events) == 3
    tracker.complete()  # forced, inside the window the exit just opened
    kinds = [(e.stage, e.items_done, e.percentage, e.done) for e in sink.events]
    assert kinds == [
        ("a", 0, 0.0, False),
        ("b", 0, 50.0, False),
        ("b", 1, 100.0, False),
        ("b", 1, 100.0, True),
    ]


def test_complete_is_final_and_idempotent() -> None:
    sink = ListSink()
    tracker = ProgressTracker("c", [sink], min_interval=0)
    with tracker.stage("a", total=10) as a:
        a.advance(3)
        tracker.complete()
        a.advance(3)  # stragglers after completion emit nothing
    tracker.complete()
    assert [e.done for e in sink.events].count(True) == 1
    assert sink.events[-1].done
    assert sink.events[-1].percentage == 100.0
    assert sink.events[-1].eta == 0.0
    assert tracker.percentage == 100.0


# --- ETA and rates ----------------------------------------------------------------------------


def test_eta_from_a_steady_rate() -> None:
    clock = FakeClock()
    sink = ListSink()
    tracker = ProgressTracker("eta", [sink], stages=[("s", 1)], clock=clock)
    with tracker.stage("s", total=100) as span:
        for _ in range(5):
            clock.tick(1.0)
            span.advance(10)  # 10 % per second
        event = sink.events[-1]
        assert event.percentage == 50.0
        assert event.eta == pytest.approx(5.0)
        assert event.rate == pytest.approx(10.0)
        assert "ETA 0:05" in event.summary()


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.integers(0, 50)), min_size=1, max_size=40
    )
)
def test_eta_is_never_negative_nan_or_infinite(steps: list[tuple[float, int]]) -> None:
    clock = FakeClock()
    sink = ListSink()
    tracker = ProgressTracker("eta", [sink], stages=[("s", 1)], clock=clock, min_interval=0.1)
    with tracker.stage("s", total=500) as span:
        for dt, n in steps:
            clock.tick(dt)
            span.advance(n)
    for event in sink.events:
        assert event.eta is None or (math.isfinite(event.eta) and event.eta >= 0)
        assert event.rate is None or (math.isfinite(event.rate) and event.rate >= 0)
    assert_monotonic(sink.events)


def test_eta_unknown_before_any_rate() -> None:
    sink = ListSink()
    tracker = ProgressTracker("eta", [sink], stages=[("s", 1)], clock=FakeClock())
    with tracker.stage("s", total=10):
        assert sink.events[-1].eta is None
        assert sink.events[-1].rate is None


# --- cancellation -----------------------------------------------------------------------------


def test_cancel_sets_the_token_and_emits_a_cancelled_event() -> None:
    sink = ListSink()
    tracker = ProgressTracker("c", [sink], stages=[("s", 1)], clock=FakeClock())
    with tracker.stage("s", total=4) as span:
        span.advance(1)
        tracker.cancel("user pressed Ctrl+C")
    cancel_event = sink.events[1]
    assert cancel_event.cancelled
    assert cancel_event.percentage == 25.0
    assert tracker.cancel_token.cancelled
    assert tracker.cancel_token.reason == "user pressed Ctrl+C"
    with pytest.raises(Cancelled, match="user pressed Ctrl"):
        tracker.cancel_token.raise_if_cancelled()


def test_stage_left_by_cancelled_keeps_the_percentage_and_propagates() -> None:
    sink = ListSink()
    token = CancelToken()
    tracker = ProgressTracker("c", [sink], stages=[("s", 1)], clock=FakeClock(), cancel_token=token)
    with pytest.raises(Cancelled), tracker.stage("s", total=4) as span:
        span.advance(1)
        with span.child("segment", total=2) as child:
            child.advance(1)
            token.cancel("stop requested")
            token.raise_if_cancelled()
    assert [e.cancelled for e in sink.events] == [False, True, True]
    assert [e.percentage for e in sink.events] == [0.0, 37.5, 37.5]
    assert span.done == 1  # the cancelled child did not count as finished
    assert tracker.percentage == 37.5


def test_cancelled_raised_without_the_token_still_marks_the_run_cancelled() -> None:
    sink = ListSink()
    tracker = ProgressTracker("c", [sink], stages=[("s", 1)])
    with pytest.raises(Cancelled), tracker.stage("s"):
        raise Cancelled("source stopped")
    assert sink.events[-1].cancelled
    assert tracker.cancel_token.reason == "source stopped"


def test_other_exceptions_propagate_emit_and_leave_the_stage_unfinished() -> None:
    sink = ListSink()
    tracker = ProgressTracker("e", [sink], stages=[("a", 1), ("b", 1)])
    with pytest.raises(ValueError, match="boom"), tracker.stage("a"):
        raise ValueError("boom")
    assert len(sink.events) == 2
    assert sink.events[-1].percentage == 0.0
    assert not sink.events[-1].cancelled
    with tracker.stage("b"):
        assert sink.events[-1].percentage == 50.0  # a is done once a later stage starts


def test_failed_child_still_counts_as_a_processed_item() -> None:
    tracker = ProgressTracker("e", stages=[("fetch", 1)])
    with tracker.stage("fetch", total=2, unit="Segment") as fetch:
        with pytest.raises(ValueError), fetch.child("segment 1"):
            raise ValueError("retries spent")
        assert fetch.done == 1


def test_cancel_token_wait_returns_promptly_when_cancelled_from_another_thread() -> None:
    token = CancelToken()
    waiting = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        waiting.set()
        result.append(token.wait(3600.0))

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert waiting.wait(60)
    token.cancel("shutdown")
    thread.join(60)
    assert not thread.is_alive(), "the cancel did not wake the hour-long wait"
    assert result == [True]
    assert token.wait(0) is True


def test_cancel_token_basics() -> None:
    token = CancelToken()
    assert not token.cancelled
    assert token.reason == ""
    token.raise_if_cancelled()
    assert token.wait(0) is False
    token.cancel("first")
    token.cancel("second")
    assert token.reason == "first"
    assert "first" in repr(token)


# --- sinks ------------------------------------------------------------------------------------


def test_raising_sink_is_logged_once_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger=PROGRESS_LOGGER)
    first, last = ListSink(), ListSink()
    tracker = ProgressTracker(
        "s", [first, raising_sink, last], stages=[("a", 1), ("b", 1)], clock=FakeClock()
    )
    with tracker.stage("a"):
        pass
    with tracker.stage("b"):
        pass
    tracker.complete()
    # Both enters and complete() (the clean exits fall inside the throttle window).
    assert len(first.events) == len(last.events) == 3
    assert first.events == last.events
    assert len(sink_failure_records(caplog)) == 1


def test_a_sink_calling_back_into_the_tracker_neither_deadlocks_nor_reorders() -> None:
    received = ListSink()
    tracker: ProgressTracker

    def cancelling_sink(event: ProgressEvent) -> None:
        if event.percentage >= 50 and not event.cancelled:
            tracker.cancel("enough")

    tracker = ProgressTracker("s", [cancelling_sink, received], min_interval=0)
    with tracker.stage("a", total=4) as a:
        for _ in range(4):
            a.advance(1)
    tracker.complete()
    assert_monotonic(received.events)
    assert tracker.cancel_token.reason == "enough"
    assert any(e.cancelled for e in received.events)
    assert received.events[-1].done


def test_logging_sink_logs_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.progress")
    tracker = ProgressTracker(
        "load AAPL 1h",
        [LoggingSink(logging.getLogger("test.progress"))],
        stages=[("fetch_segments", 1)],
    )
    with tracker.stage("fetch_segments", total=8, unit="Segment") as span:
        tracker.count("rows", 1250)
        span.update(2, detail="Segment 3/8: 2024-01-01 → 2024-01-31")
    tracker.complete()
    messages = [r.getMessage() for r in caplog.records if r.name == "test.progress"]
    assert messages[-1].startswith("load AAPL 1h · 100.00% · fetch_segments 1/1 · 2/8")
    assert "Segment 3/8: 2024-01-01 → 2024-01-31" in messages[-1]
    assert "1,250 rows" in messages[-1]


def test_add_sink_to_a_null_tracker() -> None:
    tracker = ProgressTracker.null()
    with tracker.stage("a", total=2) as a:
        a.advance(1)
        assert tracker.percentage == 50.0
        sink = ListSink()
        tracker.add_sink(sink)
    tracker.complete()
    assert sink.events
    assert all(e.percentage == 100.0 for e in sink.events)
    assert sink.events[-1].done


def test_add_sink_to_a_tracker_without_sinks_starts_throttled_events() -> None:
    clock = FakeClock()
    tracker = ProgressTracker("", clock=clock)  # what null() builds, with a fake clock
    with tracker.stage("a", total=4) as a:
        a.advance(1)
        sink = ListSink()
        tracker.add_sink(sink)
        a.advance(1)  # inside the window opened by add_sink
        assert sink.events == []
        clock.tick(0.25)
        a.advance(1)
    assert [(e.items_done, e.percentage) for e in sink.events] == [(3, 75.0)]


def test_list_sink_is_thread_safe() -> None:
    sink = ListSink()
    barrier = threading.Barrier(8)
    event = ProgressEvent("x")

    def push() -> None:
        barrier.wait()
        for _ in range(1000):
            sink(event)

    run_in_threads([push] * 8)
    assert len(sink.events) == 8000


# --- the event record -------------------------------------------------------------------------


def test_summary_and_to_dict() -> None:
    event = ProgressEvent(
        operation="load AAPL 1h",
        percentage=62.5,
        stage="fetch_segments",
        stage_index=6,
        stage_total=8,
        items_done=2,
        items_total=8,
        detail="Segment 3/8: 2024-01-01 → 2024-01-31",
        counters={"rows": 1250, "api_calls": 4, "failed_segments": 1},
        elapsed=3.0,
        eta=12.0,
        rate=0.5,
    )
    assert event.summary() == (
        "load AAPL 1h · 62.50% · fetch_segments 6/8 · 2/8 · "
        "Segment 3/8: 2024-01-01 → 2024-01-31 · 1,250 rows · 4 API calls · "
        "1 failed segment · ETA 0:12"
    )
    data = event.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["counters"] == {"rows": 1250, "api_calls": 4, "failed_segments": 1}


def test_event_counters_are_a_read_only_copy() -> None:
    tracker = ProgressTracker("c", [ListSink()])
    tracker.count("rows", 5)
    with tracker.stage("a"):
        pass
    event = tracker.last_event
    assert event is not None
    tracker.count("rows", 5)
    assert event.counters["rows"] == 5
    with pytest.raises(TypeError):
        event.counters["rows"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (12.4, "0:12"), (605, "10:05"), (3723, "1:02:03"), (-3, "0:00")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "build",
    [
        lambda: ProgressTracker("x", stages=[("a", -1)]),
        lambda: ProgressTracker("x", min_interval=-0.1),
        lambda: ProgressTracker("x").stage("a", weight=math.nan),
        lambda: ProgressTracker("x").stage("a", total=-1),
    ],
)
def test_invalid_arguments_are_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"invalid|negative"):
        build()


def test_a_span_cannot_be_entered_twice() -> None:
    tracker = ProgressTracker("x")
    span = tracker.stage("a")
    with span:
        pass
    with pytest.raises(ValueError, match="already entered"), span:
        pass


# --- Rich -------------------------------------------------------------------------------------


def test_rich_sink_renders_stage_detail_counters_and_eta() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=220, color_system=None)
    clock = FakeClock()
    rich_sink = RichSink(console=console)
    tracker = ProgressTracker(
        "load AAPL 1h", [rich_sink], stages=[("fetch_segments", 1)], clock=clock
    )
    # The sink stops (and draws its last frame) while the stage is still open at 25 %.
    with tracker.stage("fetch_segments", total=8, unit="Segment") as fetch, rich_sink:
        for _ in range(2):
            clock.tick(1.0)  # 12.5 % per second → ETA 6 s at 25 %
            fetch.advance(1, detail="Segment 3/8: 2024-01-01 → 2024-01-31")
            tracker.count("rows", 625)
            tracker.count("api_calls", 2)
        clock.tick(0.25)
        fetch.advance(0)  # one more throttled event carries the last counters
    text = buffer.getvalue()
    assert "load AAPL 1h" in text
    assert "25.00%" in text
    assert "fetch_segments 1/1" in text
    assert "Segment 3/8: 2024-01-01 → 2024-01-31" in text
    assert "1,250 rows · 4 API calls" in text
    assert "ETA 0:06" in text


def test_rich_sink_accepts_events_from_threads_and_shows_cancellation() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    barrier = threading.Barrier(4)
    with RichSink(console=console) as rich_sink:

        def feed(index: int) -> None:
            barrier.wait()
            for pct in range(0, 101, 10):
                rich_sink(ProgressEvent(f"op{index}", percentage=float(pct), stage="s"))
            rich_sink(ProgressEvent(f"op{index}", percentage=100.0, cancelled=True))

        run_in_threads(functools.partial(feed, i) for i in range(4))
    text = buffer.getvalue()
    for index in range(4):
        assert f"op{index}" in text
    assert text.count("cancelled") == 4
