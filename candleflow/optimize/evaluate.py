"""Evaluating parameter sets: objectives by name, and the one backtest loop behind every
evaluator (:func:`evaluate_params`; :class:`BatchEvaluator` is the search's in-process default, a
Prefect task calls the function for its batch).

A watched evaluation (a span or a :class:`~candleflow.optimize.monitor.BatchMeter` given) is one
candle child span from its signals to its metrics, counted block by block as the kernel
simulates (:func:`~candleflow.optimize.monitor.candle_block`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

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
from candleflow.optimize.monitor import BatchMeter, candle_block
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
    meter: BatchMeter | None = None,
) -> list[Metrics]:
    """Backtest each parameter set on bars ``start``..``stop - 1``, sharing one indicator cache;
    the one implementation behind every evaluator (a Prefect task calls it for its batch).

    Each backtest is a candle child span of ``progress`` (unit "Candle") and/or is counted by
    ``meter``, candle block by candle block. Cancellation (``cancel_token``, or the span's
    tracker's) raises :class:`~candleflow.errors.Cancelled` at the next block, whose
    ``partial`` is the list finished so far.
    """
    prepared = bars if isinstance(bars, PreparedBars) else PreparedBars.from_frame(bars)
    spec = get_strategy(strategy)
    begin, end = prepared.bar_range(start, stop)
    candles = end - begin
    cfg = config if config is not None else BacktestConfig()
    token = cancel_token
    if token is None and progress is not None:
        token = progress.tracker.cancel_token
    watched = progress is not None or meter is not None
    if watched:
        cfg = replace(cfg, chunk_size=candle_block(candles, cfg.chunk_size))
    results: list[Metrics] = []
    for params in param_sets:
        try:
            with _watching(progress, meter, candles) as count:
                metrics = backtest_metrics(
                    prepared,
                    spec,
                    params,
                    config=cfg,
                    timeframe=timeframe,
                    start=start,
                    stop=stop,
                    cancel_token=token,
                    on_candles=count,
                )
        except Cancelled as exc:
            raise Cancelled(str(exc), partial=results) from exc
        results.append(metrics)
    return results


@contextlib.contextmanager
def _watching(
    span: Span | None, meter: BatchMeter | None, candles: int
) -> Iterator[Callable[[int], None] | None]:
    """One evaluation as a candle child span of ``span`` and/or in ``meter``; yields what to
    tell of each simulated block (None when nothing watches)."""
    if span is None and meter is None:
        yield None
        return
    with (
        span.child("backtest", total=candles, unit="Candle")
        if span is not None
        else (contextlib.nullcontext()) as child
    ):
        if meter is not None:
            meter.begin(candles)
        if child is not None and meter is not None:
            advance, count = child.advance, meter.candles

            def both(n: int) -> None:
                advance(n)
                count(n)

            tell: Callable[[int], None] = both
        elif child is not None:
            tell = child.advance
        else:
            assert meter is not None
            tell = meter.candles
        finished = False
        try:
            yield tell
            finished = True
        finally:
            if meter is not None:
                meter.end(finished)


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
