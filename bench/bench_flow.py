"""Flow overhead: the ``load_data`` flow vs. the core stages called directly, on the same work.

Two cases, each a ``full`` load from the synthetic source into a fresh local store (issue 15):

- small: one year of 1h bars (12 segments) — the orchestration's fixed cost per run dominates;
  goal ≤ 0.15 s per run;
- large: two years of 1m bars (~500 segments, ~195k bars) — what the orchestration adds to a
  long run; goal ≤ 5 % of the direct run.

Both sides of a case run it ``repeats`` times, alternating (a busy moment of the machine hits
both), each run after a short pause for the API to finish the previous run's backlog; the medians
are compared. Wall time is what the goals speak of; the CPU seconds beside it (this process, and
the API server) vary less on a busy machine and show what the orchestration costs. The flows run
on a throw-away ephemeral Prefect API whose start-up and first migration are excluded (one
warm-up run), as they are paid once per process, not per run. ``BENCH_FLOW_VERBOSE=1`` prints
every run's wall time too.

The small case also runs the flow from a caller that holds one Prefect client for all its runs
(as a parent flow does for its subflows, or a script with ``SyncClientContext``): a bare call
builds a client per run (a TLS context from the CA bundle, a CSRF token, a new connection).
Last, Prefect's floor: the same flow options with eight tasks that do nothing, on the same API —
what the orchestration of eight stages costs before any work or any request of ours.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    title: str
    args: dict[str, Any]
    repeats: int
    goal_s: float | None = None  # overhead per run, seconds
    goal_pct: float | None = None  # overhead per run, % of the direct run


CASES = (
    Case(
        "small",
        "1 year of 1h bars",
        {"symbol": "AAPL", "timeframe": "1h", "start": "2024-01-01", "end": "2024-12-31"},
        repeats=7,
        goal_s=0.15,
    ),
    Case(
        "large",
        "2 years of 1m bars",
        {"symbol": "AAPL", "timeframe": "1m", "start": "2023-01-01", "end": "2024-12-31"},
        repeats=5,
        goal_pct=5.0,
    ),
)


@dataclass(frozen=True, slots=True)
class Sample:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process (every thread: the work, Prefect's, ours)
    server_cpu: float  # CPU seconds of the API server (the ephemeral API is a child process)


def _server_cpu() -> float:
    """CPU seconds used so far by this process's children (the ephemeral API server)."""
    try:
        import psutil
    except ImportError:  # psutil comes with prefect's server; without it, report nothing
        return 0.0
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _timed(run: Callable[[], object]) -> Sample:
    # A moment for the API to finish what the previous run left it (events, logs), so that
    # neither side pays for the other's backlog.
    time.sleep(0.3)
    server, cpu, wall = _server_cpu(), time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Sample(wall, cpu, _server_cpu() - server)


def _direct(case: Case, root: Path) -> Sample:
    from candleflow.loading.pipeline import LoadRequest, run_load
    from candleflow.sources.synthetic import SyntheticSource
    from candleflow.store.bar_store import BarStore

    args = case.args
    request = LoadRequest.parse(
        args["symbol"], args["timeframe"], start=args["start"], end=args["end"], mode="full"
    )
    return _timed(lambda: run_load(request, SyntheticSource(), BarStore(root)))


def _flow(case: Case, root: Path) -> Sample:
    from flows.load_data import load_data

    return _timed(lambda: load_data(**case.args, mode="full", store=str(root)))


def _held_flows(case: Case, root: Path) -> list[Sample]:
    """``case.repeats`` flow runs from a caller that holds one Prefect client for all of them
    (``SyncClientContext``, as a parent flow does for its subflows): each run reuses its
    connection instead of building a client (a TLS context, a CSRF token, a connection)."""
    from prefect.context import SyncClientContext

    with SyncClientContext.get_or_create():
        _flow(case, root / f"{case.name}-warm-held")
        return [_flow(case, root / f"{case.name}-h{i}") for i in range(case.repeats)]


def _floor_flows(repeats: int) -> list[Sample]:
    """Prefect's own cost: a flow with our result options and eight tasks that do nothing (the
    stages' count), ``repeats`` runs after a warm-up — what any eight-stage flow pays."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from tasks.results import IN_MEMORY_RESULTS

    @task(cache_policy=NO_CACHE)
    def stage(n: int) -> int:
        return n

    @flow(name="bench-floor", flow_run_name="floor", log_prints=False, **IN_MEMORY_RESULTS)
    def eight_empty_stages() -> int:
        return sum(stage(n) for n in range(8))

    eight_empty_stages()
    return [_timed(eight_empty_stages) for _ in range(repeats)]


def _median(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.wall for s in samples),
        statistics.median(s.cpu for s in samples),
        statistics.median(s.server_cpu for s in samples),
    )


def _measure(case: Case, root: Path) -> tuple[Sample, Sample]:
    """Medians (direct, flow) of ``case.repeats`` runs each, alternating, after one warm-up of
    each."""
    _direct(case, root / f"{case.name}-warm-direct")
    _flow(case, root / f"{case.name}-warm-flow")
    direct: list[Sample] = []
    flow: list[Sample] = []
    for i in range(case.repeats):
        direct.append(_direct(case, root / f"{case.name}-d{i}"))
        flow.append(_flow(case, root / f"{case.name}-f{i}"))
    if os.environ.get("BENCH_FLOW_VERBOSE"):
        print("  direct", [round(s.wall, 3) for s in direct])
        print("  flow  ", [round(s.wall, 3) for s in flow])
    return _median(direct), _median(flow)


def _verdict(case: Case, overhead: float, pct: float) -> str:
    if case.goal_s is not None:
        ok = overhead <= case.goal_s
        return f"goal ≤ {case.goal_s:.2f} s: {'met' if ok else 'NOT met'}"
    assert case.goal_pct is not None
    ok = pct <= case.goal_pct
    return f"goal ≤ {case.goal_pct:.0f} %: {'met' if ok else 'NOT met'}"


def main() -> None:
    home = tempfile.mkdtemp(prefix="candleflow-bench-prefect-")
    os.environ.update(
        PREFECT_HOME=home,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="ERROR",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with (
        tempfile.TemporaryDirectory() as tmp,
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        root = Path(tmp)
        started = time.perf_counter()
        _flow(CASES[0], root / "first")
        print(f"first flow run (API start + migration): {time.perf_counter() - started:7.2f} s "
              "(excluded)")  # fmt: skip
        for case in CASES:
            d, f = _measure(case, root)
            overhead = f.wall - d.wall
            pct = 100 * overhead / d.wall
            print(f"{case.name}: full load, {case.title}, synthetic source, local store "
                  f"({case.repeats} runs each, medians)")  # fmt: skip
            print(f"  core stages called directly: {d.wall:7.3f} s   (CPU {d.cpu:6.3f} s)")
            print(f"  load_data flow:              {f.wall:7.3f} s   (CPU {f.cpu:6.3f} s, "
                  f"API server CPU {f.server_cpu:6.3f} s)")  # fmt: skip
            print(f"  flow overhead: {overhead:6.3f} s per run · {pct:5.1f} % · "
                  f"{_verdict(case, overhead, pct)}")  # fmt: skip
            print(f"  CPU the flow adds: {f.cpu - d.cpu:6.3f} s here + "
                  f"{f.server_cpu:6.3f} s in the API server")  # fmt: skip
            if case.goal_s is not None:  # a caller running many short loads
                held = _median(_held_flows(case, root))
                print(f"  load_data flow, the caller holding one Prefect client: {held.wall:7.3f} s"
                      f" · overhead {held.wall - d.wall:6.3f} s per run")  # fmt: skip
        floor = _median(_floor_flows(CASES[0].repeats))
        print(f"Prefect's floor: a flow of 8 tasks that do nothing: {floor.wall:7.3f} s per run "
              f"(CPU {floor.cpu:6.3f} s, API server CPU {floor.server_cpu:6.3f} s) — below it no "
              "eight-stage flow goes on this machine")  # fmt: skip


if __name__ == "__main__":
    main()
