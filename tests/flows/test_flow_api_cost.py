"""What a load_data run asks of the Prefect API (issue 15): counted, never timed.

Every request our process sends to the API during a run is recorded with the thread that sent
it and whether a task run was current there. The bounds, and why:

- no request from inside a stage task: Prefect 3.8 reports a task run's states as events (no
  round trip), and a stage's progress reaches the artifact from a sender thread of the flow;
- from the flow's own thread, one request more than Prefect itself sends for a flow run with
  nothing in it (measured here, on the same API): the summary artifact — the progress artifact
  is created and updated from its sender thread;
- the progress artifact: created once, after the throttle interval (0.5 s) or at the run's end
  if that comes first — then with the final value, and never updated; updated at most once per
  throttle interval of the run and once for its final value — never once per stage;
- the cancel watcher: one read of the run per poll interval (0.5 s), no more;
- nothing else (no result storage lookups: results stay in memory).

And each of the eight stages is still a task run with its three states (Pending, Running,
Completed) and the same data edges in the run's graph.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.load_data import load_data
from tasks.progress import progress_context
from tasks.results import IN_MEMORY_RESULTS

ARGS: dict[str, Any] = {
    "symbol": "AAPL", "timeframe": "1h", "start": "2024-01-01", "end": "2024-03-31", "mode": "full",
}  # fmt: skip
#: The progress artifact's throttle and the cancel watcher's poll interval (tasks.progress).
THROTTLE_S = 0.5
WATCH_S = 0.5
STAGES = (
    "validate_symbol", "check_head_timestamp", "load_local", "analyze_gaps", "plan_segments",
    "fetch_segments", "merge_bars", "save_bars",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    thread: str
    in_task: bool

    @property
    def kind(self) -> str:
        """The request without ids: ``PATCH /artifacts/{id}``."""
        parts = ["{id}" if len(p) == 36 and p.count("-") == 4 else p for p in self.path.split("/")]
        return f"{self.method} {'/'.join(parts).removeprefix('/api')}"


class RequestLog:
    """Records the API requests of this process (sync and async Prefect clients, each request
    once however often the client retried it)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def record(self, request: Any) -> None:
        from prefect.context import TaskRunContext

        entry = Request(
            request.method,
            request.url.path,
            threading.current_thread().name,
            TaskRunContext.get() is not None,
        )
        with self._lock:
            self.requests.append(entry)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


@pytest.fixture
def api_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[RequestLog]:
    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

    log = RequestLog()
    sync_send = PrefectHttpxSyncClient.send
    async_send = PrefectHttpxAsyncClient.send

    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        log.record(request)
        return sync_send(self, request, *args, **kwargs)

    async def asend(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        log.record(request)
        return await async_send(self, request, *args, **kwargs)

    monkeypatch.setattr(PrefectHttpxSyncClient, "send", send)
    monkeypatch.setattr(PrefectHttpxAsyncClient, "send", asend)
    yield log


@pytest.fixture
def state_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(task name, state type) of every task-run state event our process emits."""
    from prefect import task_engine

    emitted: list[tuple[str, str]] = []
    emit = task_engine.emit_task_run_state_change_event

    def record(*args: Any, **kwargs: Any) -> Any:
        task_run, state = kwargs["task_run"], kwargs["validated_state"]
        emitted.append((task_run.name.rsplit("-", 1)[0], state.type.value))
        return emit(*args, **kwargs)

    monkeypatch.setattr(task_engine, "emit_task_run_state_change_event", record)
    return emitted


def _flow_floor(api_log: RequestLog) -> Counter[str]:
    """The requests Prefect sends for a flow run of ours with nothing in it (same options)."""
    from prefect import flow

    @flow(name="api-cost-floor", flow_run_name="floor {n}", log_prints=False, **IN_MEMORY_RESULTS)
    def floor(n: int = 0) -> int:
        return n

    floor(0)  # the first run in this process may register the flow and settle the client
    api_log.clear()
    floor(1)
    return Counter(r.kind for r in api_log.requests)


def test_a_load_run_asks_the_api_only_what_it_must(
    tmp_path: Path, api_log: RequestLog, state_events: list[tuple[str, str]]
) -> None:
    floor = _flow_floor(api_log)
    load_data(**ARGS, store=str(tmp_path / "warm"))  # the same for a first load_data run
    api_log.clear()
    state_events.clear()
    started = time.monotonic()
    with progress_context() as handle:
        load_data(**ARGS, store=str(tmp_path / "store"))
    elapsed = time.monotonic() - started
    assert handle.summary is not None and handle.summary["rows_added"] > 0
    requests = list(api_log.requests)

    assert [r for r in requests if r.in_task] == [], "a stage task called the API itself"

    main = Counter(r.kind for r in requests if r.thread == "MainThread")
    assert main - floor == Counter({"POST /artifacts/": 1}), (main, floor)  # the summary
    assert sum(main.values()) == sum(floor.values()) + 1, (main, floor)

    progress = Counter(r.kind for r in requests if r.thread == "progress-artifact")
    assert progress["POST /artifacts/"] == 1  # created once
    # (None at all when the sender only woke after the run: it then creates the final value.)
    assert progress["PATCH /artifacts/{id}"] <= 1 + elapsed / THROTTLE_S, progress
    if elapsed < THROTTLE_S:  # ended before the creation was due: created with its final value
        assert progress["PATCH /artifacts/{id}"] == 0, progress
    assert set(progress) <= {"POST /artifacts/", "PATCH /artifacts/{id}"}

    watcher = [r for r in requests if r.thread.startswith("candleflow-cancel-watcher")]
    assert {r.kind for r in watcher} <= {"GET /flow_runs/{id}"}
    assert len(watcher) <= elapsed / WATCH_S + 1, len(watcher)

    others = [
        r for r in requests
        if r.thread not in ("MainThread", "progress-artifact")
        and not r.thread.startswith("candleflow-cancel-watcher")
        and r.kind != "POST /logs/"  # the log worker's batches, if anything was logged
    ]  # fmt: skip
    assert others == []
    assert not [r for r in requests if "/admin/storage" in r.path]

    # Each stage is still a task run with its states, sent as events: three per stage.
    assert sorted(state_events) == sorted(
        (stage, state) for stage in STAGES for state in ("PENDING", "RUNNING", "COMPLETED")
    )


def test_the_run_graph_keeps_the_stages_data_edges(tmp_path: Path) -> None:
    """Prefect links a stage to the stages whose results it takes, also when it gets a sequence
    it does not walk (the fetch stage's segments are the plan's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tests.flows.helpers import wait_for

    with progress_context() as handle:
        load_data(**ARGS, store=str(tmp_path))
    assert handle.flow_run_id is not None
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[handle.flow_run_id]))

    def task_runs() -> list[Any]:
        with get_client(sync_client=True) as client:
            return list(client.read_task_runs(flow_run_filter=run_filter))

    # The API records task runs from their events, shortly after they are sent.
    assert wait_for(lambda: len(task_runs()) == len(STAGES), timeout=30)
    runs = task_runs()
    stage_of = {run.id: run.name.rsplit("-", 1)[0] for run in runs}
    edges = {
        (stage_of[run.id], param, stage_of.get(source.id, "?"))
        for run in runs
        for param, sources in run.task_inputs.items()
        for source in sources
    }
    assert {
        ("check_head_timestamp", "instrument", "validate_symbol"),
        ("analyze_gaps", "head", "check_head_timestamp"),
        ("plan_segments", "plan", "analyze_gaps"),
        ("fetch_segments", "instrument", "validate_symbol"),
        ("fetch_segments", "segments", "plan_segments"),
        ("merge_bars", "existing", "load_local"),
    } <= edges, edges
