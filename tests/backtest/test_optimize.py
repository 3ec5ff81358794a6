"""Grid, random and Bayesian search: batching, indicator sharing, determinism, split, progress,
cancellation, and Bayes against random search."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from candleflow.backtest import BacktestConfig, Metrics, run_backtest
from candleflow.errors import InvalidRequest
from candleflow.optimize.search import (
    BatchEvaluator,
    Categorical,
    Integer,
    Real,
    objective_value,
    optimize,
)
from candleflow.progress import CancelToken, ListSink, ProgressEvent, ProgressTracker
from tests.backtest.conftest import synthetic_bars

WINDOWS = {"fast": range(5, 55, 5), "slow": range(5, 55, 5)}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic_bars(5_000, seed=7)


def test_grid_batches_through_an_injected_evaluator_and_shares_indicators(
    bars: pd.DataFrame,
) -> None:
    evaluator = BatchEvaluator(bars, "sma_cross")
    batches: list[int] = []

    def evaluate_batch(param_sets: Sequence[dict[str, object]]) -> list[Metrics]:
        batches.append(len(param_sets))
        return evaluator(param_sets)  # type: ignore[arg-type]

    fanned = optimize(bars, "sma_cross", WINDOWS, method="grid", batch_size=8, objective="return",
                      evaluate_batch=evaluate_batch)  # fmt: skip
    local = optimize(bars, "sma_cross", WINDOWS, method="grid", objective="return")

    assert batches == [8, 8, 8, 8, 8, 5]  # 45 feasible cells (fast < slow) in batches of 8
    assert len(evaluator.bars.cache) == 10  # one SMA per distinct window for the whole grid
    assert [e.params for e in fanned.evaluations] == [e.params for e in local.evaluations]
    assert fanned.best == local.best
    assert local.infeasible == 55
    best = max(local.evaluations, key=lambda e: e.metrics.total_return)
    assert local.best == best


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_searches_are_deterministic_for_a_seed(bars: pd.DataFrame, method: str) -> None:
    space = {"fast": Integer(2, 30), "slow": Integer(10, 80, step=5)}

    def run(seed: int) -> list[dict[str, object]]:
        result = optimize(bars, "sma_cross", space, method=method, iterations=8, seed=seed)  # type: ignore[arg-type]
        assert result.iterations == 8
        assert all(e.params["fast"] < e.params["slow"] for e in result.evaluations)  # type: ignore[operator]
        return [dict(e.params) for e in result.evaluations]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_random_search_with_a_constraint_and_mixed_dimensions(bars: pd.DataFrame) -> None:
    result = optimize(
        bars,
        "bollinger_breakout",
        {"window": Integer(5, 60), "k": Real(0.5, 3.0), "long_only": Categorical((True, False))},
        method="random",
        iterations=12,
        constraint=lambda p: p["window"] % 2 == 0,  # type: ignore[operator]
        objective="calmar",
        seed=1,
    )
    assert result.iterations == 12 and result.infeasible > 0
    assert all(e.params["window"] % 2 == 0 for e in result.evaluations)  # type: ignore[operator]
    assert {type(e.params["k"]) for e in result.evaluations} == {float}


def test_split_reports_in_and_out_of_sample(bars: pd.DataFrame) -> None:
    result = optimize(
        bars, "sma_cross", WINDOWS, method="grid", objective="sharpe", split=0.6, report_top=3
    )
    assert result.split_bar == 3_000 and result.best is not None
    assert result.best.metrics.bars == 3_000
    assert sum(e.out_of_sample is not None for e in result.evaluations) == 3
    oos = run_backtest(bars, "sma_cross", result.best.params, start=3_000).metrics
    assert result.best.out_of_sample == oos and oos.bars == 2_000
    table = result.to_frame(10)
    assert len(table) == 10 and {"fast", "slow", "objective", "oos_sharpe"} <= set(table.columns)
    assert table["objective"].is_monotonic_decreasing


def test_progress_shows_iterations_and_candles(bars: pd.DataFrame) -> None:
    sink = ListSink()
    tracker = ProgressTracker("optimize", [sink], min_interval=0)
    optimize(bars, "sma_cross", WINDOWS, method="random", iterations=6, progress=tracker,
             config=BacktestConfig(chunk_size=1_000))  # fmt: skip
    tracker.complete()
    lines = [f"{e.parent_position} · {e.child_position}" for e in sink.events if e.child_position]
    assert "Iteration 3/6 · Candle 2,000/5,000" in lines
    assert all(re.fullmatch(r"Iteration [1-6]/6 · Candle [\d,]+/5,000", line) for line in lines)
    assert sink.percentages == sorted(sink.percentages) and sink.percentages[-1] == 100.0
    assert all(round(p, 2) == p for p in sink.percentages)


def test_cancellation_returns_the_best_result_so_far() -> None:
    bars = synthetic_bars(20_000, seed=2)
    tracker = ProgressTracker("optimize", min_interval=0)

    def cancel_in_iteration_6(event: ProgressEvent) -> None:
        if event.parent_position == "Iteration 6/200" and event.child_position.startswith(
            "Candle 3,000/"
        ):
            tracker.cancel_token.cancel("stop")

    tracker.add_sink(cancel_in_iteration_6)
    space = {"fast": Integer(2, 50), "slow": Integer(10, 200)}
    result = optimize(bars, "sma_cross", space, method="random", iterations=200, seed=0,
                      progress=tracker, config=BacktestConfig(chunk_size=1_000))  # fmt: skip
    assert result.cancelled and result.iterations == 5  # the sixth stopped mid-run
    assert result.best is not None
    assert result.best.objective == max(e.objective for e in result.evaluations)
    # The same five, uncancelled, evaluate to the same metrics.
    again = optimize(bars, "sma_cross", space, method="random", iterations=5, seed=0)
    assert again.evaluations == result.evaluations


@pytest.mark.parametrize("when", ["asking for the 3rd point of batch 2", "evaluating batch 2"])
def test_bayes_stops_asking_and_telling_once_cancelled(
    bars: pd.DataFrame, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refit of skopt's model takes up to seconds: after a cancel the search does none."""
    from skopt import Optimizer  # type: ignore[import-untyped]

    token = CancelToken()
    calls = {"points": 0, "after_cancel": 0}
    ask, tell = Optimizer.ask, Optimizer.tell

    def counted_ask(self: Any, n_points: int | None = None, **kwargs: Any) -> Any:
        calls["after_cancel"] += token.cancelled
        calls["points"] += n_points or 1
        if when.startswith("asking") and calls["points"] == 8 + 3:
            token.cancel("stop")
        return ask(self, n_points, **kwargs)

    def counted_tell(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["after_cancel"] += token.cancelled
        return tell(self, *args, **kwargs)

    monkeypatch.setattr(Optimizer, "ask", counted_ask)
    monkeypatch.setattr(Optimizer, "tell", counted_tell)
    evaluator = BatchEvaluator(bars, "sma_cross")
    batches: list[int] = []

    def evaluate_batch(param_sets: Sequence[dict[str, object]]) -> list[Metrics]:
        batches.append(len(param_sets))
        if when.startswith("evaluating") and len(batches) == 2:
            token.cancel("stop")
        return evaluator(param_sets)  # type: ignore[arg-type]

    space = {"fast": Integer(2, 9), "slow": Integer(10, 200)}  # every point feasible
    # 8 initial points: batch 1 is all of them (a batch never straddles the initial points).
    result = optimize(bars, "sma_cross", space, method="bayes", iterations=40, batch_size=8,
                      n_initial_points=8, evaluate_batch=evaluate_batch,
                      cancel_token=token)  # fmt: skip
    assert calls["after_cancel"] == 0, "asked or told skopt after the cancel"
    assert result.cancelled and result.best is not None
    assert batches == ([8] if when.startswith("asking") else [8, 8])
    assert result.iterations == sum(batches)


@pytest.mark.parametrize("told", [2, 6])
def test_the_batch_ask_gives_skopts_constant_liar_points(told: int) -> None:
    from skopt import Optimizer
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    from candleflow.optimize.bayes import ask_batch as _ask_batch

    def optimizer() -> Any:
        opt = Optimizer([(0, 40), (0.0, 1.0)], base_estimator="GP", n_initial_points=4,
                        random_state=9, acq_optimizer="sampling",
                        acq_optimizer_kwargs={"n_points": 200})  # fmt: skip
        rng = np.random.default_rng(1)
        for _ in range(told):
            opt.tell([int(rng.integers(0, 41)), float(rng.uniform())], float(rng.normal()))
        return opt

    with threadpool_limits(limits=1, user_api="blas"):  # as the search runs it (and 10× faster)
        assert _ask_batch(optimizer(), 5, lambda: False) == optimizer().ask(n_points=5)
        assert _ask_batch(optimizer(), 5, lambda: True) == []


def test_objectives_by_name(bars: pd.DataFrame) -> None:
    metrics = run_backtest(bars).metrics
    assert objective_value(metrics, "return") == metrics.total_return
    assert objective_value(metrics, "max_drawdown") == -metrics.max_drawdown
    with pytest.raises(InvalidRequest, match="unknown objective"):
        optimize(bars, "sma_cross", WINDOWS, objective="luck")
    with pytest.raises(InvalidRequest, match="has no parameter"):
        optimize(bars, "sma_cross", {"window": Integer(2, 5)})


def test_bayes_is_at_least_as_good_as_random_on_average(goog: pd.DataFrame) -> None:
    space = {"fast": Integer(2, 50), "slow": Integer(10, 200)}

    def mean_best(method: str) -> float:
        values = [
            optimize(goog, "sma_cross", space, method=method, iterations=12, seed=seed)  # type: ignore[arg-type]
            for seed in range(5)
        ]
        return float(np.mean([r.best.objective for r in values if r.best is not None]))

    assert mean_best("bayes") >= mean_best("random")
