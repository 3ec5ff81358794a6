"""The load-data flow under the Prefect harness: artifacts, stages, resuming, failures, cancels."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from uuid import uuid4

import pandas as pd
import pytest

from candleflow.errors import CandleflowError, InvalidRequest
from candleflow.loading.calendars import expected_bars
from candleflow.loading.pipeline import LoadRequest, analyze_gaps, plan_segments, stage_plan
from candleflow.models import Segment
from candleflow.progress import ListSink, ProgressEvent
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from flows import load_data as load_module
from flows.load_data import load_data
from tasks.progress import progress_context
from tests.flows.helpers import (
    EventWaiter,
    SourceSpy,
    artifacts,
    flow_run,
    run_logs,
    wait_for,
)

SYMBOL, TF = "AAPL", "1h"


def _request(start: str, end: str, mode: str = "full") -> LoadRequest:
    return LoadRequest.parse(SYMBOL, TF, start=start, end=end, mode=mode)


def _planned_segments(start: str, end: str) -> list[Segment]:
    """The segments a full load of an empty store plans (computed with the core, not the flow)."""
    request = _request(start, end)
    source = SyntheticSource(seed=0)
    head = source.head_timestamp(source.validate(SYMBOL), request.timeframe)
    empty = pd.DatetimeIndex([], tz="UTC")
    plan = analyze_gaps(request, empty, head, pd.Timestamp.now(tz="UTC"))
    return list(plan_segments(request, plan).segments)


def _stored(store: Path) -> pd.DataFrame:
    return BarStore(store).read("synthetic", SYMBOL, TF)


def _no_temp_files(store: Path) -> bool:
    return not [p for p in store.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> SourceSpy:
    spy = SourceSpy()
    monkeypatch.setattr(load_module, "make_source", spy)
    return spy


def test_full_load_completes_with_final_progress_100_and_a_tail_rerun_fetches_nothing(
    tmp_path: Path, spy: SourceSpy
) -> None:
    start, end = "2024-01-01", "2024-03-31"
    with progress_context() as handle:
        state = load_data(SYMBOL, TF, start=start, end=end, mode="full", store=str(tmp_path),
                          return_state=True)  # fmt: skip
    assert state.is_completed(), state
    assert handle.flow_run_id is not None
    assert flow_run(handle.flow_run_id).state.is_completed()

    progress = artifacts(handle.flow_run_id)
    assert len(progress) == 1, "one progress artifact per flow run"
    assert progress[0].data == 100
    assert progress[0].description.startswith("Done")
    summaries = artifacts(handle.flow_run_id, ("markdown",))
    assert len(summaries) == 1 and "rows added" in summaries[0].data

    request = _request(start, end)
    assert request.start is not None and request.end is not None
    grid = expected_bars(request.calendar, request.timeframe, request.start, request.end)
    stored = _stored(tmp_path)
    assert stored.index.equals(pd.DatetimeIndex(grid.starts, name=stored.index.name))
    first_fetches = spy.fetch_calls
    assert first_fetches == len(_planned_segments(start, end)) > 1

    rerun = load_data(SYMBOL, TF, start=start, end=end, mode="tail", store=str(tmp_path))
    assert isinstance(rerun, dict)
    assert spy.fetch_calls == first_fetches, "a tail run with nothing new must not fetch"
    assert rerun["rows_added"] == 0 and rerun["segments"] == 0
    assert _stored(tmp_path).index.equals(stored.index)


def test_a_local_load_makes_no_source_calls_and_reports_what_is_missing(
    tmp_path: Path, spy: SourceSpy
) -> None:
    sink = ListSink()
    with progress_context(extra_sinks=[sink], min_interval=0) as handle:
        summary = load_data(SYMBOL, TF, start="2024-01-01", end="2024-01-31", mode="local",
                            store=str(tmp_path))  # fmt: skip
    assert isinstance(summary, dict)
    assert [s.api_calls for s in spy.sources] == [0]
    assert summary["rows_after"] == 0 and summary["missing_bars_left"] > 0
    stages = {e.stage for e in sink.events if e.stage}
    assert stages == {name for name, _ in stage_plan("local")}
    assert sink.events[-1].percentage == 100.0
    assert handle.flow_run_id is not None
    assert artifacts(handle.flow_run_id)[0].data == 100


def test_a_users_csv_goes_through_the_same_stages(tmp_path: Path) -> None:
    bars = SyntheticSource(seed=1).bars(SYMBOL, TF, "2024-01-02", "2024-02-01")
    bars.to_csv(tmp_path / f"{SYMBOL}.csv")
    store = tmp_path / "store"
    summary = load_data(SYMBOL, TF, start="2024-01-02", end="2024-01-31", mode="full",
                        source="files", path=str(tmp_path), store=str(store))  # fmt: skip
    assert isinstance(summary, dict)
    assert summary["missing_bars_left"] == 0 and summary["failed_segments"] == []
    stored = BarStore(store).read("files", SYMBOL, TF)
    pd.testing.assert_frame_equal(stored, bars, check_freq=False)


def test_source_options_reach_the_source_and_clashing_or_unknown_ones_are_refused(
    tmp_path: Path,
) -> None:
    store = str(tmp_path / "store")
    state = load_data(SYMBOL, TF, start="2024-01-02", end="2024-01-31", mode="full", store=store,
                      source_options={"unknown": [SYMBOL]}, return_state=True)  # fmt: skip
    assert state.is_failed()
    assert SYMBOL in str(state.result(raise_on_failure=False))
    summary = load_data(SYMBOL, TF, start="2024-01-02", end="2024-01-31", mode="full",
                        store=store, source_options={"symbols": [SYMBOL]})  # fmt: skip
    assert isinstance(summary, dict) and summary["rows_added"] > 0
    for options, message in (
        ({"delay": 1.0}, "may not contain 'delay': give it as load_data's delay= parameter"),
        ({"time_scale": 0.1}, "give it as load_data's ib_time_scale= parameter"),
        ({"cancel_token": None}, "'cancel_token': it is set internally"),
        ({"bogus": 1}, "unknown option 'bogus' for source 'synthetic'"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            load_data(SYMBOL, TF, mode="local", store=store, source_options=options)


def test_progress_events_are_monotonic_reach_every_stage_and_name_every_segment(
    tmp_path: Path,
) -> None:
    start, end = "2024-01-01", "2024-04-30"
    segments = _planned_segments(start, end)
    sink = ListSink()
    with progress_context(extra_sinks=[sink], min_interval=0):
        summary = load_data(SYMBOL, TF, start=start, end=end, mode="full", store=str(tmp_path))
    assert isinstance(summary, dict)
    events: list[ProgressEvent] = sink.events
    percentages = [e.percentage for e in events]
    assert percentages == sorted(percentages), "progress went backwards"
    assert events[-1].done and events[-1].percentage == 100.0

    seen: list[str] = []
    for e in events:
        if e.stage and (not seen or seen[-1] != e.stage):
            seen.append(e.stage)
    assert seen == [name for name, _ in stage_plan("full")]

    details = {e.detail for e in events if e.stage == "fetch_segments"}
    n = len(segments)
    for i, segment in enumerate(segments, start=1):
        assert f"Segment {i}/{n}: {segment.label()}" in details


def test_failed_segments_do_not_stop_the_others_and_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start, end = "2024-01-01", "2024-04-30"
    segments = _planned_segments(start, end)
    bad = segments[1]
    # Not a retryable error: the core's backoff would only slow the test down.
    spy = SourceSpy(fail=lambda s: CandleflowError("simulated outage") if s == bad else None)
    monkeypatch.setattr(load_module, "make_source", spy)
    with progress_context() as handle:
        state = load_data(SYMBOL, TF, start=start, end=end, mode="full", store=str(tmp_path),
                          return_state=True)  # fmt: skip
    assert state.is_completed(), state
    summary = handle.summary
    assert summary is not None
    assert summary["failed_segments"] == [f"{bad.label()}: simulated outage"]
    assert summary["missing_bars_left"] == bad.bars
    assert spy.fetch_calls == len(segments)
    stored = _stored(tmp_path)
    assert not stored.index[(stored.index >= bad.start) & (stored.index < bad.end)].size
    markdown = artifacts(handle.flow_run_id, ("markdown",))[0].data
    assert "simulated outage" in markdown
    # The core's warning about the segment reaches the run's logs (sent in batches: wait).
    assert wait_for(lambda: any("candleflow" in log.name and bad.label() in log.message
                                for log in run_logs(handle.flow_run_id)), 15)  # fmt: skip


def test_a_load_where_every_segment_fails_ends_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SourceSpy(fail=lambda s: CandleflowError("simulated outage"))
    monkeypatch.setattr(load_module, "make_source", spy)
    with progress_context() as handle:
        state = load_data(SYMBOL, TF, start="2024-01-01", end="2024-02-28", mode="full",
                          store=str(tmp_path), return_state=True)  # fmt: skip
    assert state.is_failed(), state
    assert "none of the" in (state.message or "")
    assert handle.flow_run_id is not None
    assert flow_run(handle.flow_run_id).state.is_failed()
    assert spy.fetch_calls == 2
    assert artifacts(handle.flow_run_id)[0].data < 100, "a failed load is not shown as done"


def _start_in_thread(**params: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run load_data in a thread; ``box`` gets the handle at once and the state at the end."""
    box: dict[str, Any] = {}
    ready = threading.Event()

    def target() -> None:
        waiter = params.pop("waiter")
        with progress_context(extra_sinks=[waiter], min_interval=0) as handle:
            box["handle"] = handle
            ready.set()
            box["state"] = load_data(**params, return_state=True)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread, box


def test_cancelling_through_the_api_stops_saves_and_a_rerun_fetches_only_the_rest(
    tmp_path: Path, spy: SourceSpy
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    # Nine years (~108 segments of 0.25 s, cancellable waits): the run cannot finish on its own
    # while the cancel is being noticed, even on a busy machine.
    start, end = "2015-01-01", "2023-12-31"
    segments = _planned_segments(start, end)
    n = len(segments)
    assert n >= 10
    waiter = EventWaiter(lambda e: e.stage == "fetch_segments" and e.items_done >= 2)
    thread, box = _start_in_thread(
        symbol=SYMBOL, timeframe=TF, start=start, end=end, mode="full", store=str(tmp_path),
        delay=0.25, waiter=waiter,
    )  # fmt: skip
    assert waiter.reached.wait(60), "the fetch stage never got going"
    handle = box["handle"]
    with get_client(sync_client=True) as client:  # what the UI's Cancel button does
        client.set_flow_run_state(handle.flow_run_id, Cancelling(message="test"))

    def run_is_cancelled() -> bool:
        return bool(flow_run(handle.flow_run_id).state.is_cancelled())

    assert wait_for(run_is_cancelled, 120), f"not Cancelled: {flow_run(handle.flow_run_id).state}"
    thread.join(60)
    assert not thread.is_alive()
    assert box["state"].is_cancelled()

    # Every bar of the completed segments is stored, nothing of the others, no temp files.
    stored = _stored(tmp_path)
    done = sum(1 for s in segments if s.start <= stored.index[-1])
    assert 2 <= done < n
    # A segment in flight when the cancel came is dropped whole (never stored in part).
    assert spy.sources[0].fetch_calls in (done, done + 1)
    expected = SyntheticSource(seed=0).bars(SYMBOL, TF, segments[0].start, segments[done - 1].end)
    pd.testing.assert_frame_equal(stored, expected, check_freq=False)
    assert _no_temp_files(tmp_path)
    progress = artifacts(handle.flow_run_id)[0]
    assert 0 < progress.data < 100 and progress.description.startswith("Cancelled")

    rerun = load_data(SYMBOL, TF, start=start, end=end, mode="full", store=str(tmp_path))
    assert isinstance(rerun, dict)
    assert spy.sources[1].fetch_calls == n - done
    assert rerun["segments"] == n - done and rerun["missing_bars_left"] == 0


def test_cli_cancel_watch_and_runs_follow_a_running_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from candleflow.cli import main

    waiter = EventWaiter(lambda e: e.stage == "fetch_segments" and e.items_done >= 1)
    # Nine years: the run cannot finish before the cancel is noticed.
    thread, box = _start_in_thread(
        symbol="MSFT", timeframe=TF, start="2015-01-01", end="2023-12-31", mode="full",
        store=str(tmp_path), delay=0.25, waiter=waiter,
    )  # fmt: skip
    assert waiter.reached.wait(60)
    run_id = str(box["handle"].flow_run_id)
    assert main(["cancel", run_id]) == 0
    assert main(["watch", run_id, "--interval", "0.2"]) == 130  # returns once it is Cancelled
    thread.join(60)
    assert box["state"].is_cancelled()
    capsys.readouterr()
    assert main(["runs", "--limit", "50"]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if run_id[:8] in line)
    assert "Cancelled" in listed and "%" in listed
    assert main(["cancel", run_id]) == 0  # already cancelled: nothing to do
    assert main(["watch", str(uuid4())]) == 2


def test_sigterm_to_the_flow_process_ends_the_run_cancelled_with_data_saved(
    tmp_path: Path, spy: SourceSpy
) -> None:
    """What a worker or `serve` does to cancel a deployment run (DESIGN §8), in-process."""
    import os
    import signal

    waiter = EventWaiter(lambda e: e.stage == "fetch_segments" and e.items_done >= 1)

    def terminate_once_fetching() -> None:
        if waiter.reached.wait(60):
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_once_fetching, daemon=True).start()
    with progress_context(extra_sinks=[waiter], min_interval=0) as handle:
        state = load_data(SYMBOL, TF, start="2023-01-01", end="2023-12-31", mode="full",
                          store=str(tmp_path), delay=0.25, return_state=True)  # fmt: skip
    assert waiter.reached.is_set()
    assert state.is_cancelled(), state
    assert handle.flow_run_id is not None
    assert flow_run(handle.flow_run_id).state.is_cancelled()
    stored = _stored(tmp_path)
    assert len(stored) > 0 and _no_temp_files(tmp_path)
    assert signal.getsignal(signal.SIGTERM) == before, "the SIGTERM handler was not restored"
