"""Candle-level progress of the optimize flow, on the thread runner and on Dask (a LocalCluster
the test starts on 127.0.0.1), with an injected slow backtest (every block of candles sleeps
first; on Dask installed in each worker process): for grid, random and bayes the events a sink
sees are monotonic, come at least once a second (scaled by the test time factor), show
"Iteration i/N · Candle a/b" with 0 < a < b while evaluations run — on Dask, the workers' own
counts while they run — and end at 100.00 %; a cancel freezes the figure (sink and artifact)
where it struck."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candleflow.progress import ListSink, ProgressEvent
from candleflow.progress.wording import HoldOnCancel, optimize_position
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from flows.optimize import optimize
from tasks.progress import progress_context
from tests.backtest.slow_backtest import install, slow_kernel
from tests.backtest.test_optimize_progress import check_events
from tests.flows.helpers import artifacts
from tests.timing import Running

SYMBOL, TF = "AAPL", "5m"
DELAY = 0.25  # seconds per block of candles: an evaluation takes about a second
POSITION = re.compile(r"Iteration (\d+)/\d+ · Candle ([\d,]+)/")
METHODS: dict[str, dict[str, Any]] = {
    "grid": {"space": "fast=5:6,slow=20:21"},
    "random": {},
    "bayes": {},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A year of 5-minute bars (about 19,600: three blocks of candles per evaluation)."""
    root = tmp_path_factory.mktemp("optimize-progress-store")
    bars = SyntheticSource(seed=0).bars(SYMBOL, TF, "2023-01-01", "2023-12-31")
    BarStore(root).write("synthetic", SYMBOL, TF, bars)
    return root, len(bars)


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """A 2-worker LocalCluster on 127.0.0.1 whose workers run the slow kernel."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            processes=True,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(install, DELAY)
        yield cluster.scheduler_address


def _params(store: tuple[Path, int], method: str, **extra: Any) -> dict[str, Any]:
    params = dict(symbol=SYMBOL, timeframe=TF, method=method, iterations=4, batch_size=2,
                  concurrency=2, seed=1, store=str(store[0]), **METHODS[method])  # fmt: skip
    return {**params, **extra}


def _run(params: dict[str, Any], *sinks: Any) -> tuple[Any, Any]:
    with progress_context(extra_sinks=list(sinks)) as handle:
        state = optimize(**params, return_state=True)
    return state, handle


@pytest.mark.parametrize("method", list(METHODS))
def test_threads_show_candles_mid_evaluation_and_end_at_100(
    store: tuple[Path, int], method: str
) -> None:
    sink = ListSink()
    with slow_kernel(DELAY):
        state, handle = _run(_params(store, method), sink)
    assert state.is_completed(), state
    check_events(sink.events, 4, complete=True, candles=store[1])
    assert artifacts(handle.flow_run_id)[0].data == 100


@pytest.mark.parametrize("method", list(METHODS))
def test_dask_workers_report_candles_while_they_run(
    store: tuple[Path, int], dask_address: str, method: str
) -> None:
    sink = ListSink()
    box: dict[str, Any] = {}
    started = threading.Event()
    params = _params(store, method, dask=True, dask_address=dask_address)

    def run() -> Any:
        with progress_context(extra_sinks=[sink]) as handle:
            box["handle"] = handle
            started.set()
            return optimize(**params, return_state=True)

    running = Running(run, "optimize on Dask")
    assert started.wait(60)
    handle = box["handle"]
    # The progress artifact, read through the API while the workers run.
    seen: set[float] = set()
    while not handle.finished.is_set():
        if handle.flow_run_id is not None:
            seen.update(a.data for a in artifacts(handle.flow_run_id))
        handle.finished.wait(0.2)
    state = running.result(600, "optimize on Dask")
    assert state.is_completed(), state
    check_events(sink.events, 4, complete=True, candles=store[1])
    assert artifacts(handle.flow_run_id)[0].data == 100
    assert any(2.0 < value < 97.0 for value in seen), f"the artifact never moved mid-run: {seen}"


def _cancel_mid_evaluation(handle_box: dict[str, Any]) -> Any:
    def sink(event: ProgressEvent) -> None:
        match = POSITION.match(optimize_position(event)) if event.stage == "optimize" else None
        handle = handle_box.get("handle")
        # Mid-evaluation, after a first round (so there is a best result to report).
        mid = match and event.items_done >= 4 and int(match.group(2).replace(",", "")) > 0
        if mid and handle is not None and not handle.token.cancelled:
            handle_box["struck"] = event.percentage
            handle.token.cancel("interrupted (Ctrl+C)")  # what the CLI's Ctrl+C does

    return sink


@pytest.mark.parametrize("dask", [False, True], ids=["threads", "dask"])
def test_a_cancel_freezes_the_figure_where_it_struck(
    store: tuple[Path, int], dask_address: str, dask: bool
) -> None:
    held = ListSink()
    box: dict[str, Any] = {}
    started = threading.Event()
    extra = {"dask": True, "dask_address": dask_address} if dask else {}
    params = _params(store, "random", **{**extra, "iterations": 40})

    def run() -> Any:
        with progress_context(extra_sinks=[HoldOnCancel(held), _cancel_mid_evaluation(box)]) as h:
            box["handle"] = h
            started.set()
            return optimize(**params, return_state=True)

    with slow_kernel(DELAY) if not dask else contextlib.nullcontext():
        state = Running(run, "optimize").result(600, "the cancelled optimize flow")
    assert started.is_set() and "struck" in box, "never cancelled"
    assert state.is_cancelled(), state
    summary = box["handle"].summary
    assert summary is not None and 4 <= summary["iterations"] < 40

    events = held.events
    first = next(e for e in events if e.cancelled)
    assert first.stage == "optimize" and first.percentage >= box["struck"]
    after = events[events.index(first) :]
    assert {e.percentage for e in after} == {first.percentage}, "the figure moved on"
    assert any(e.stage == "report" for e in after), "the best so far was still reported"
    progress = artifacts(box["handle"].flow_run_id)[0]
    assert progress.data == pytest.approx(first.percentage)
    assert progress.description.startswith(f"Cancelled at {first.percentage:.2f}%")
