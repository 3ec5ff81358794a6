"""The optimize flow under the Prefect harness: artifacts and report files, candle-level progress,
cancellation through the API with the best result so far, Dask against threads, the CLI."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from candleflow.backtest import Metrics, run_backtest
from candleflow.cli import main
from candleflow.errors import Cancelled as CancelledError
from candleflow.optimize.search import objective_value
from candleflow.progress import ListSink
from candleflow.progress.wording import describe_event
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from flows.optimize import TaskBatchEvaluator, optimize
from tasks.optimize import BatchOutcome
from tasks.progress import progress_context
from tests.flows.helpers import EventWaiter, artifacts, flow_run, wait_for

SYMBOL, TF = "AAPL", "1h"


def _store(root: Path, start: str, end: str) -> Path:
    bars = SyntheticSource(seed=0).bars(SYMBOL, TF, start, end)
    BarStore(root).write("synthetic", SYMBOL, TF, bars)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two years of hourly bars (about 3,500)."""
    return _store(tmp_path_factory.mktemp("optimize-store"), "2023-01-01", "2024-12-31")


def _bars(store: Path) -> Any:
    return BarStore(store).read("synthetic", SYMBOL, TF)


def _table(flow_run_id: Any) -> list[dict[str, Any]]:
    tables = artifacts(flow_run_id, ("table",))
    assert len(tables) == 1, "one top table per run"
    data = json.loads(tables[0].data)  # table artifacts are stored as JSON text
    assert isinstance(data, list)
    return data


def _check_is_best_first(rows: Sequence[Mapping[str, Any]]) -> None:
    objectives = [r["objective"] for r in rows]
    assert objectives == sorted(objectives, reverse=True)


def _rerun_objective(store: Path, row: Mapping[str, Any]) -> float:
    """The table row's parameters backtested by the core directly, scored by the objective."""
    params = {k: row[k] for k in ("fast", "slow", "long_only")}
    return objective_value(run_backtest(_bars(store), "sma_cross", params).metrics, "sharpe")


def test_the_flow_publishes_the_top_10_a_report_and_candle_level_progress(store: Path) -> None:
    sink = ListSink()
    with progress_context(extra_sinks=[sink], min_interval=0) as handle:
        state = optimize(SYMBOL, TF, method="bayes", iterations=24, batch_size=4,
                         store=str(store), return_state=True)  # fmt: skip
    assert state.is_completed(), state
    summary = handle.summary
    assert summary is not None and summary["iterations"] == 24 and not summary["cancelled"]
    assert summary["tasks"] >= 24 // 4

    rows = _table(handle.flow_run_id)
    assert len(rows) == 10
    _check_is_best_first(rows)
    assert {"fast", "slow", "objective", "sharpe", "total_return", "trades"} <= set(rows[0])
    assert {k: rows[0][k] for k in ("fast", "slow")} == {
        k: summary["best_params"][k] for k in ("fast", "slow")
    }
    assert _rerun_objective(store, rows[0]) == pytest.approx(rows[0]["objective"], abs=1e-6)

    png, html = Path(summary["report_png"]), Path(summary["report_html"])
    assert png.parent == store / "reports" / "optimize" / SYMBOL / TF
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html.read_text()
    assert "data:image/png;base64," in page and summary["best_params_text"] in page
    markdown = artifacts(handle.flow_run_id, ("markdown",))
    assert len(markdown) == 1 and str(html) in markdown[0].data and str(png) in markdown[0].data

    progress = artifacts(handle.flow_run_id)
    assert len(progress) == 1 and progress[0].data == 100

    events = sink.events
    percentages = [e.percentage for e in events]
    assert percentages == sorted(percentages) and events[-1].percentage == 100.0
    assert all(round(p, 2) == p for p in percentages)
    candle_events = [e for e in events if e.stage == "optimize" and e.child_position]
    assert candle_events, "no candle-level progress"
    description = describe_event(candle_events[-1])
    iteration, candle = description.split(" · ")
    assert iteration.startswith("Iteration ") and iteration.endswith("/24")
    assert candle.startswith("Candle ") and candle.endswith(f"/{len(_bars(store)):,}")


def test_an_empty_series_fails_saying_to_load_it_first(tmp_path: Path) -> None:
    state = optimize(SYMBOL, TF, iterations=4, store=str(tmp_path), return_state=True)
    assert state.is_failed()
    assert "candleflow load AAPL --timeframe 1h" in (state.message or "")


def _start_in_thread(**params: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    ready = threading.Event()

    def target() -> None:
        waiter = params.pop("waiter")
        with progress_context(extra_sinks=[waiter], min_interval=0) as handle:
            box["handle"] = handle
            ready.set()
            box["state"] = optimize(**params, return_state=True)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread, box


def test_cancelling_through_the_api_stops_early_with_the_best_result_so_far(
    store: Path,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    waiter = EventWaiter(lambda e: e.stage == "optimize" and e.items_done >= 40)
    thread, box = _start_in_thread(symbol=SYMBOL, timeframe=TF, method="bayes", iterations=200,
                                   store=str(store), waiter=waiter)  # fmt: skip
    assert waiter.reached.wait(120), "the search never got going"
    handle = box["handle"]
    with get_client(sync_client=True) as client:  # what the UI's Cancel button does
        client.set_flow_run_state(handle.flow_run_id, Cancelling(message="test"))

    def run_is_cancelled() -> bool:
        return bool(flow_run(handle.flow_run_id).state.is_cancelled())

    assert wait_for(run_is_cancelled, 120), f"not Cancelled: {flow_run(handle.flow_run_id).state}"
    thread.join(60)
    assert not thread.is_alive() and box["state"].is_cancelled()

    summary = handle.summary
    assert summary is not None and summary["cancelled"]
    assert 40 <= summary["iterations"] < 200
    rows = _table(handle.flow_run_id)
    assert 1 <= len(rows) <= 10
    _check_is_best_first(rows)
    assert rows[0]["objective"] == pytest.approx(summary["best_objective"], abs=1e-6)
    assert _rerun_objective(store, rows[0]) == pytest.approx(rows[0]["objective"], abs=1e-6)
    assert Path(summary["report_html"]).exists()
    progress = artifacts(handle.flow_run_id)[0]
    assert 0 < progress.data < 100 and progress.description.startswith("Cancelled")


def test_dask_finds_the_same_best_parameters_as_threads(tmp_path: Path) -> None:
    root = _store(tmp_path, "2024-01-01", "2024-04-30")
    params: dict[str, Any] = dict(symbol=SYMBOL, timeframe=TF, method="bayes", iterations=8,
                                  batch_size=2, concurrency=2, seed=3, store=str(root))  # fmt: skip
    summaries = []
    for dask in (False, True):
        with progress_context() as handle:
            state = optimize(**params, dask=dask, return_state=True)
        assert state.is_completed(), state
        assert handle.summary is not None
        summaries.append(handle.summary)
    threads, dask_run = summaries
    assert dask_run["best_params"] == threads["best_params"]
    assert dask_run["top"] == threads["top"]
    assert dask_run["iterations"] == threads["iterations"] == 8


def test_the_cli_runs_the_flow_and_prints_the_results_table(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["optimize", SYMBOL, "--store", str(store), "--iterations", "6",
                 "--method", "random", "--quiet"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "random search of sma_cross" in captured.out and "objective" in captured.out
    assert "report: " in captured.out and ".html" in captured.out


# ----------------------------------------------------------------------------- the evaluator


def _metrics(value: float) -> Metrics:
    nan = math.nan
    return Metrics(10_000.0, value, 0.0, 0.0, value, 0.0, nan, 0, 0, nan, nan, 0.0, 10, 252.0)


class _Done:
    def __init__(self, outcome: BatchOutcome) -> None:
        self.outcome = outcome

    def result(self) -> BatchOutcome:
        return self.outcome


def test_the_evaluator_splits_a_round_into_batches_and_keeps_order() -> None:
    batches: list[list[int]] = []

    def submit(param_sets: Sequence[Mapping[str, object]], batch: str) -> Any:
        values = [int(p["x"]) for p in param_sets]  # type: ignore[call-overload]
        batches.append(values)
        return _Done(BatchOutcome(tuple(_metrics(v) for v in values)))

    evaluator = TaskBatchEvaluator(submit, batch_size=4, concurrency=2)
    metrics = evaluator([{"x": i} for i in range(10)])
    assert [m.final_equity for m in metrics] == list(range(10))
    assert [len(b) for b in batches] == [3, 4, 3]  # ≤ batch_size each, as even as can be
    batches.clear()
    evaluator([{"x": 0}, {"x": 1}, {"x": 2}])
    assert batches == [[0, 1], [2]], "at least `concurrency` tasks when there are enough"
    assert evaluator.tasks == 5 and len(evaluator.evaluated) == 13


def test_a_cancelled_batch_ends_the_round_with_the_finished_prefix() -> None:
    outcomes = iter([
        BatchOutcome((_metrics(0), _metrics(1))),
        BatchOutcome((_metrics(2),), cancelled=True),
        BatchOutcome((_metrics(4), _metrics(5))),
    ])  # fmt: skip
    evaluator = TaskBatchEvaluator(lambda p, b: _Done(next(outcomes)), batch_size=2, concurrency=3)
    with pytest.raises(CancelledError) as caught:
        evaluator([{"x": i} for i in range(6)])
    assert [m.final_equity for m in caught.value.partial] == [0, 1, 2]
    assert [p["x"] for p, _ in evaluator.evaluated] == [0, 1, 2]
