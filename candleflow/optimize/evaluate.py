"""Evaluating parameter sets: objectives by name, and the one backtest loop behind every
evaluator (:func:`evaluate_params`; :class:`BatchEvaluator` is the search's in-process default, a
Prefect task calls the function for its batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from candleflow.backtest import (
    BacktestConfig,
    Metrics,
    PreparedBars,
    StrategySpec,
    backtest_metrics,
    get_strategy,
)
from candleflow.backtest.strategies import ParamValue
from candleflow.errors import Cancelled, InvalidRequest
from candleflow.progress import CancelToken, Span

__all__ = [
    "OBJECTIVES",
    "BatchEvaluator",
    "Params",
    "evaluate_params",
    "objective_field",
    "objective_value",
]

Params = dict[str, ParamValue]

#: Objective name → (Metrics field, sign); the search maximises sign × field.
OBJECTIVES: dict[str, tuple[str, float]] = {
    "sharpe": ("sharpe", 1.0),
    "return": ("total_return", 1.0),
    "total_return": ("total_return", 1.0),
    "cagr": ("cagr", 1.0),
    "calmar": ("calmar", 1.0),
    "final_equity": ("final_equity", 1.0),
    "win_rate": ("win_rate", 1.0),
    "profit_factor": ("profit_factor", 1.0),
    "max_drawdown": ("max_drawdown", -1.0),
}


def objective_value(metrics: Metrics, objective: str) -> float:
    """The value the search maximises for ``objective`` (see :data:`OBJECTIVES`)."""
    name, sign = objective_field(objective)
    return sign * float(getattr(metrics, name))


def objective_field(objective: str) -> tuple[str, float]:
    """The :class:`Metrics` field and sign of ``objective``; ``InvalidRequest`` if unknown."""
    try:
        return OBJECTIVES[objective.strip().lower()]
    except KeyError:
        raise InvalidRequest(
            f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}",
            "objective",
            objective,
        ) from None


def evaluate_params(
    bars: pd.DataFrame | PreparedBars,
    strategy: str | StrategySpec,
    param_sets: Sequence[Mapping[str, object]],
    *,
    config: BacktestConfig | None = None,
    start: int = 0,
    stop: int | None = None,
    timeframe: str | None = None,
    progress: Span | None = None,
    cancel_token: CancelToken | None = None,
) -> list[Metrics]:
    """Backtest each parameter set on bars ``start``..``stop - 1``, sharing one indicator cache;
    the one implementation behind every evaluator (a Prefect task calls it for its batch).

    Each backtest opens a candle child span under ``progress``. On cancellation it raises
    :class:`~candleflow.errors.Cancelled` whose ``partial`` is the list finished so far.
    """
    prepared = bars if isinstance(bars, PreparedBars) else PreparedBars.from_frame(bars)
    results: list[Metrics] = []
    for params in param_sets:
        try:
            metrics = backtest_metrics(
                prepared,
                strategy,
                params,
                config=config,
                timeframe=timeframe,
                start=start,
                stop=stop,
                progress=progress,
                cancel_token=cancel_token,
            )
        except Cancelled as exc:
            raise Cancelled(str(exc), partial=results) from exc
        results.append(metrics)
    return results


class BatchEvaluator:
    """The default in-process ``evaluate_batch``: the bars prepared (and their indicators
    cached) once for the whole search."""

    def __init__(
        self,
        bars: pd.DataFrame | PreparedBars,
        strategy: str | StrategySpec,
        *,
        config: BacktestConfig | None = None,
        start: int = 0,
        stop: int | None = None,
        timeframe: str | None = None,
        progress: Span | None = None,
        cancel_token: CancelToken | None = None,
    ) -> None:
        self.bars = bars if isinstance(bars, PreparedBars) else PreparedBars.from_frame(bars)
        self.strategy = get_strategy(strategy)
        self.config = config
        self.start = start
        self.stop = stop
        self.timeframe = timeframe
        self.progress = progress
        self.cancel_token = cancel_token

    def __call__(self, param_sets: Sequence[Params]) -> list[Metrics]:
        return evaluate_params(
            self.bars,
            self.strategy,
            param_sets,
            config=self.config,
            start=self.start,
            stop=self.stop,
            timeframe=self.timeframe,
            progress=self.progress,
            cancel_token=self.cancel_token,
        )
