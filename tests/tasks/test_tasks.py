"""The tasks' logic through ``.fn()`` (no Prefect API) and the adapter's parts with fakes."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from types import MappingProxyType
from typing import Any
from uuid import UUID, uuid4

import pandas as pd
import pytest

from candleflow.errors import InvalidRequest, SourceUnavailable
from candleflow.loading import pipeline as loading
from candleflow.loading.pipeline import FetchResult, LoadRequest, stage_plan
from candleflow.progress import CancelToken, ListSink, ProgressEvent
from candleflow.progress.wording import describe_event
from candleflow.sources.registry import make_source
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from tasks import load as tasks
from tasks.cancel import CancelWatcher
from tasks.progress import ArtifactSink, artifact_key, current_run, open_run, progress_context

NOW = pd.Timestamp("2024-07-01", tz="UTC")


@pytest.fixture
def request_() -> LoadRequest:
    return LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-03-31", mode="full")


def _run_all(store: BarStore, request: LoadRequest, source: Any) -> dict[str, Any]:
    """Every task's function in pipeline order, as the flow calls them."""
    out: dict[str, Any] = {}
    out["instrument"] = tasks.validate_symbol.fn(source, request)
    out["head"] = tasks.check_head_timestamp.fn(source, out["instrument"], request.timeframe)
    out["existing"] = tasks.load_local.fn(store, source.name, request)
    stored = pd.DatetimeIndex(out["existing"].index)
    plan = tasks.analyze_gaps.fn(request, stored, out["head"], NOW)
    out["plan"] = tasks.plan_segments.fn(
        request, plan, loading.read_completed(store, source.name, request)
    )
    out["fetched"] = tasks.fetch_segments.fn(
        source, out["instrument"], request.timeframe, out["plan"].segments
    )
    out["merged"] = tasks.merge_bars.fn(out["existing"], out["fetched"].bars)
    out["written"] = tasks.save_bars.fn(store, source.name, request, out["merged"], {"k": 1})
    return out


def test_each_task_returns_what_its_core_stage_returns(
    tmp_path: Path, request_: LoadRequest
) -> None:
    source = SyntheticSource(seed=3)
    out = _run_all(BarStore(tmp_path / "a"), request_, source)

    ref_source = SyntheticSource(seed=3)
    instrument = loading.validate_symbol(ref_source, request_)
    head = loading.check_head_timestamp(ref_source, instrument, request_.timeframe)
    empty = pd.DatetimeIndex([], tz="UTC")
    plan = loading.plan_segments(request_, loading.analyze_gaps(request_, empty, head, NOW))
    fetched = loading.fetch_segments(ref_source, instrument, request_.timeframe, plan.segments)

    assert out["instrument"] == instrument
    assert out["head"] == head
    assert out["existing"].empty
    assert out["plan"].segments == plan.segments and len(plan.segments) == 3
    assert isinstance(out["fetched"], FetchResult)
    pd.testing.assert_frame_equal(out["fetched"].bars, fetched.bars)
    pd.testing.assert_frame_equal(out["merged"], loading.merge_bars(out["existing"], fetched.bars))
    assert out["written"].rows_added == len(fetched.bars) > 0
    assert BarStore(tmp_path / "a").read_meta("synthetic", "AAPL", "1h")["k"] == 1


def test_save_bars_with_nothing_left_to_write_still_records_the_metadata(
    tmp_path: Path, request_: LoadRequest
) -> None:
    store = BarStore(tmp_path)
    bars = SyntheticSource().bars("AAPL", "1h", "2024-01-02", "2024-01-05")
    store.write("synthetic", "AAPL", "1h", bars)
    empty = bars.iloc[:0]
    result = tasks.save_bars.fn(store, "synthetic", request_, empty, {"api_calls": 7})
    assert result.rows_after == len(bars) and result.rows_added == 0
    assert store.read_meta("synthetic", "AAPL", "1h")["api_calls"] == 7


def test_tasks_report_their_stages_on_the_runs_tracker_in_order(
    tmp_path: Path, request_: LoadRequest
) -> None:
    sink = ListSink()
    with progress_context(extra_sinks=[sink], min_interval=0), open_run("t", stage_plan("full")):
        _run_all(BarStore(tmp_path), request_, SyntheticSource())
        current_run().tracker.complete()
    stages: list[str] = []
    for event in sink.events:
        if event.stage and (not stages or stages[-1] != event.stage):
            stages.append(event.stage)
    assert stages == [name for name, _ in stage_plan("full")]
    assert sink.events[-1].percentage == 100.0
    assert any(e.detail.startswith("Segment 3/3: ") for e in sink.events)


def test_fetch_task_ends_cancelled_and_keeps_what_it_flushed(
    tmp_path: Path, request_: LoadRequest
) -> None:
    token = CancelToken()
    flushed: list[pd.DataFrame] = []

    def flush(frame: pd.DataFrame) -> None:
        flushed.append(frame)
        token.cancel("test")  # cancel right after the first segment is handed over

    source = SyntheticSource()
    with progress_context(token=token), open_run("t", stage_plan("full")):
        instrument = tasks.validate_symbol.fn(source, request_)
        empty = pd.DatetimeIndex([], tz="UTC")
        plan = tasks.plan_segments.fn(request_, tasks.analyze_gaps.fn(request_, empty, None, NOW))
        result = tasks.fetch_segments.fn(
            source, instrument, request_.timeframe, plan.segments, flush=flush
        )
    assert not isinstance(result, FetchResult)
    assert result.is_cancelled()
    assert len(flushed) == 1 and source.fetch_calls == 1


def test_retry_condition_retries_only_an_unreachable_source() -> None:
    from prefect.states import Failed

    def state(exc: BaseException) -> Any:
        return Failed(data=exc)

    check = tasks._source_unavailable
    assert check(None, None, state(SourceUnavailable("down")))  # type: ignore[arg-type]
    assert not check(None, None, state(InvalidRequest("bad")))  # type: ignore[arg-type]
    assert tasks.validate_symbol.retries == 2
    assert tasks.fetch_segments.retries == 0


# ----------------------------------------------------------------------------- the adapter


def _event(pct: float, **kw: Any) -> ProgressEvent:
    counters = kw.pop("counters", {})
    return ProgressEvent("load AAPL 1h", pct, counters=MappingProxyType(counters), **kw)


def test_describe_event_carries_stage_micro_stage_bars_and_api_calls() -> None:
    event = _event(
        40.0, stage="fetch_segments", stage_index=6, stage_total=8,
        detail="Segment 3/8: 2024-01-01 → 2024-01-31",
        counters={"rows": 1250, "api_calls": 4, "failed_segments": 0},
    )  # fmt: skip
    assert describe_event(event) == (
        "Fetching segment 3/8: 2024-01-01 → 2024-01-31 · 1,250 bars · 4 API calls"
    )
    assert describe_event(_event(5, stage="load_local")) == "Reading stored bars"
    assert describe_event(_event(100, done=True, elapsed=3)).startswith("Done in 0:03")
    assert describe_event(_event(40, cancelled=True)) == "Cancelled at 40.00%"


class FakeArtifacts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def create(self, *, progress: float, key: str | None, description: str) -> UUID:
        self.calls.append(("create", progress, description))
        return uuid4()

    def update(self, artifact_id: UUID, *, progress: float, description: str) -> None:
        self.calls.append(("update", progress, description))


def test_artifact_sink_throttles_sends_only_visible_changes_and_always_the_final_value() -> None:
    now = [0.0]
    fake = FakeArtifacts()
    sink = ArtifactSink(
        "k", create=fake.create, update=fake.update, clock=lambda: now[0], background=False
    )
    sink.start("Starting")  # the creation counts as a send: the next is 0.5 s later
    sink(_event(1.0, stage="validate_symbol"))  # too soon: held back
    now[0] = 0.1
    sink(_event(2.0, stage="check_head_timestamp"))  # too soon: replaces the held one
    now[0] = 0.7
    sink(_event(2.0, stage="check_head_timestamp"))  # visible and due: sent
    now[0] = 1.5
    sink(_event(2.0, stage="check_head_timestamp"))  # nothing visible changed: not sent
    now[0] = 1.6
    sink(_event(50.0, stage="fetch_segments"))  # held back...
    sink.close()  # ...until the run ends
    sink(_event(100.0, done=True))  # final: always sent, even right away
    sink(_event(100.0, done=True))  # after the final event: nothing
    assert [(c[0], c[1]) for c in fake.calls] == [
        ("create", 0.0), ("update", 2.0), ("update", 50.0), ("update", 100.0),
    ]  # fmt: skip


def test_artifact_sink_keeps_the_percentage_reached_when_cancelled() -> None:
    fake = FakeArtifacts()
    sink = ArtifactSink(
        "k", create=fake.create, update=fake.update, clock=lambda: 0.0, background=False
    )
    sink(_event(30.0, stage="fetch_segments"))
    sink(_event(33.0, stage="fetch_segments", cancelled=True))
    sink(_event(96.0, stage="save_bars", cancelled=True))  # stopped stages count as done
    sink.close()
    assert [c[1] for c in fake.calls] == [30.0, 33.0, 33.0]
    assert fake.calls[-1][2].startswith("Cancelled at 33.00%")


def test_a_slow_api_does_not_hold_up_the_run_and_the_latest_value_wins() -> None:
    fake = FakeArtifacts()
    api_free = threading.Event()
    sending = threading.Event()

    def slow_update(artifact_id: UUID, **kwargs: Any) -> None:
        sending.set()
        assert api_free.wait(30), "the test never freed the API"
        fake.update(artifact_id, **kwargs)

    created = threading.Event()

    def create(**kwargs: Any) -> UUID:
        artifact_id = fake.create(**kwargs)
        created.set()
        return artifact_id

    ticks = itertools.count(start=1.0)  # every event due: each reaches the sender
    sink = ArtifactSink("k", create=create, update=slow_update, clock=lambda: next(ticks))
    sink.start("Starting")  # the creation, too, is sent by the sender
    assert created.wait(30)
    sink(_event(10.0, stage="fetch_segments"))  # taken by the sender, which blocks in the API
    assert sending.wait(30)
    for pct in (20.0, 30.0, 40.0):  # each call returns although the API is stuck
        sink(_event(pct, stage="fetch_segments"))
    assert [c[1] for c in fake.calls] == [0.0]  # nothing more could have reached the API yet
    sink(_event(100.0, done=True))  # the final value returns at once too...
    api_free.set()
    sink.close()  # ...and close() waits until it is out
    sent = [c[1] for c in fake.calls]
    # 20 and 30 were replaced while the API was stuck; 40 by the final value.
    assert sent == [0.0, 10.0, 100.0]


def test_the_artifact_is_created_off_the_runs_thread_before_any_update() -> None:
    fake = FakeArtifacts()
    api_free = threading.Event()
    callers: list[str] = []

    def slow_create(**kwargs: Any) -> UUID:
        callers.append(threading.current_thread().name)
        assert api_free.wait(30), "the test never freed the API"
        return fake.create(**kwargs)

    ticks = itertools.count(start=1.0)
    sink = ArtifactSink("k", create=slow_create, update=fake.update, clock=lambda: next(ticks))
    sink.start("Starting")  # returns although the API is stuck
    sink(_event(100.0, done=True))  # so does the final event
    assert fake.calls == []
    api_free.set()
    sink.close()  # waits until everything is out, created first
    assert callers and threading.current_thread().name not in callers
    assert fake.calls[0][0] == "create" and fake.calls[-1][1] == 100.0
    assert len(fake.calls) <= 2


def test_a_run_that_ends_while_the_creation_is_held_back_makes_one_request() -> None:
    fake = FakeArtifacts()
    ticks = itertools.count(start=1.0)  # every event due, were it not for the hold
    sink = ArtifactSink("k", create=fake.create, update=fake.update,
                        clock=lambda: next(ticks), first_delay=600)  # fmt: skip
    sink.start("Starting")
    for pct in (10.0, 50.0):
        sink(_event(pct, stage="fetch_segments"))
    sink(_event(100.0, done=True))  # the final value ends the hold
    sink.close()
    assert [(c[0], c[1]) for c in fake.calls] == [("create", 100.0)]
    assert fake.calls[0][2].startswith("Done in")


def test_the_held_back_creation_carries_the_latest_value_when_the_run_closes() -> None:
    fake = FakeArtifacts()
    sink = ArtifactSink("k", create=fake.create, update=fake.update, first_delay=600)
    sink.start("Starting")
    sink(_event(10.0, stage="fetch_segments"))
    sink(_event(20.0, stage="fetch_segments"))  # not final: held, replacing 10
    sink.close()  # ends the hold and waits for the creation
    assert [(c[0], c[1]) for c in fake.calls] == [("create", 20.0)]


def test_the_artifact_is_created_when_the_hold_ends_then_updated_as_before() -> None:
    fake = FakeArtifacts()
    created = threading.Event()

    def create(**kwargs: Any) -> UUID:
        artifact_id = fake.create(**kwargs)
        created.set()
        return artifact_id

    updated = threading.Event()

    def update(artifact_id: UUID, **kwargs: Any) -> None:
        fake.update(artifact_id, **kwargs)
        updated.set()

    now = [0.0]
    sink = ArtifactSink("k", create=create, update=update, clock=lambda: now[0],
                        first_delay=0.05)  # fmt: skip
    sink.start("Starting")
    assert created.wait(30), "the hold never ended"
    now[0] = 1.0
    sink(_event(40.0, stage="fetch_segments"))  # due: an update
    assert updated.wait(30)
    sink(_event(100.0, done=True))
    sink.close()
    assert [(c[0], c[1]) for c in fake.calls] == [
        ("create", 0.0), ("update", 40.0), ("update", 100.0),
    ]  # fmt: skip


def test_a_stage_gets_its_sequences_as_prefect_opaque_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefect links a stage to the task whose result it takes, and walks every element of a
    sequence looking for more: ``opaque`` keeps the first and spares the second."""
    from prefect.states import Completed
    from prefect.utilities.annotations import opaque

    from candleflow.models import Segment

    seen: dict[str, Any] = {}

    def fake_task(*args: Any, return_state: bool, **kwargs: Any) -> Any:
        seen.update(args=args, kwargs=kwargs)
        return Completed(data="fetched")

    monkeypatch.setitem(tasks._STAGE_TASKS, "fetch_segments", fake_task)
    segments = [Segment(NOW, NOW + pd.Timedelta(hours=1), 1)]
    source = SyntheticSource()
    got = tasks.run_stage_task("fetch_segments", loading.fetch_segments, source, "AAPL",
                               segments=segments)  # fmt: skip
    assert got == "fetched"
    assert seen["args"] == (source, "AAPL")  # neither a sequence: as they were
    wrapped = seen["kwargs"]["segments"]
    assert isinstance(wrapped, opaque) and wrapped.unwrap() is segments


def test_cancel_watcher_sets_the_token_when_the_run_is_cancelling() -> None:
    token = CancelToken()
    states = iter(["RUNNING", "RUNNING", "CANCELLING"])
    reads = threading.Event()

    def read_state(flow_run_id: UUID) -> str | None:
        state = next(states, "CANCELLING")
        if state == "CANCELLING":
            reads.set()
        return state

    watcher = CancelWatcher(uuid4(), token, interval=0.01, read_state=read_state).start()
    assert reads.wait(5)
    assert token.wait(5), "the watcher did not cancel the token"
    watcher.stop()
    assert token.reason == "cancelled through the Prefect API"


def test_cancel_watcher_survives_read_errors() -> None:
    token = CancelToken()
    calls = [0]

    def read_state(flow_run_id: UUID) -> str | None:
        calls[0] += 1
        if calls[0] < 3:
            raise ConnectionError("API down")
        return "CANCELLED"

    CancelWatcher(uuid4(), token, interval=0.01, read_state=read_state).start()
    assert token.wait(5)


def test_current_run_outside_a_flow_is_silent_and_artifact_keys_are_valid() -> None:
    run = current_run()
    assert not run.token.cancelled and run.flow_run_id is None
    assert artifact_key("load", "BRK.B", "1h") == "load-brk-b-1h"


def test_make_source_names_the_valid_sources() -> None:
    assert make_source("Synthetic", seed=1, path=None).name == "synthetic"
    with pytest.raises(InvalidRequest, match="synthetic, files, ib"):
        make_source("yahoo")
    with pytest.raises(InvalidRequest, match="ib_port must be a TCP port"):
        make_source("ib", ib_port=0)  # the IB source itself: tests/ib/test_ib_registry.py
    with pytest.raises(InvalidRequest, match="needs a path"):
        make_source("files")
    with pytest.raises(InvalidRequest, match="does not apply"):
        make_source("synthetic", path="x.csv")
    with pytest.raises(InvalidRequest, match="unknown option 'bogus' for source 'synthetic'"):
        make_source("synthetic", bogus=1)
    with pytest.raises(InvalidRequest, match="unknown of source 'synthetic' must be a list"):
        make_source("synthetic", unknown="ZZZZ")
    assert make_source("synthetic", unknown=["ZZZZ"], symbols=None).name == "synthetic"


def test_sigterm_during_a_run_sets_the_token_and_a_second_one_goes_to_the_old_handler() -> None:
    import os
    import signal

    from tasks.cancel import sigterm_sets_token

    token = CancelToken()
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with sigterm_sets_token(token, late_grace=0):
            os.kill(os.getpid(), signal.SIGTERM)
            assert token.wait(5), "the first SIGTERM did not cancel the token"
            assert seen == []
            os.kill(os.getpid(), signal.SIGTERM)
            assert wait_until(lambda: seen == [signal.SIGTERM])
        os.kill(os.getpid(), signal.SIGTERM)  # restored after the run
        assert wait_until(lambda: len(seen) == 2)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_cancelled_run_absorbs_a_late_sigterm_then_hands_them_on() -> None:
    """The worker's SIGTERM for an API cancel may land after the run's last stage: it must not
    reach Prefect's handler (a crash) while the run records its Cancelled state."""
    import os
    import signal

    from tasks.cancel import sigterm_sets_token

    token = CancelToken()
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with sigterm_sets_token(token, late_grace=0.3):
            token.cancel("cancelled through the Prefect API")  # the watcher, before any signal
        os.kill(os.getpid(), signal.SIGTERM)  # the runner's, late
        assert not wait_until(lambda: seen != [], timeout=0.1), "a late SIGTERM got through"
        import time

        time.sleep(0.3)  # past the grace: the next SIGTERM reaches the old handler again
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_until(lambda: seen == [signal.SIGTERM])
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
