"""Backtests: strategies give target positions, a compiled chunked kernel fills them, metrics.

``run_backtest(bars, "sma_cross", {"fast": 10, "slow": 20})`` is the entry point; the rules of
signals (strict crosses, repeated signals ignored) are in :mod:`.strategies`, the fill rules
(next open, commission, slippage, sizing) in :mod:`.engine`, the metric definitions in
:mod:`.metrics`.
"""

from __future__ import annotations

from candleflow.backtest.engine import (
    TRADE_COLUMNS,
    BacktestConfig,
    BacktestResult,
    OpenPosition,
    PreparedBars,
    backtest_metrics,
    run_backtest,
    simulate,
)
from candleflow.backtest.metrics import METRIC_NAMES, Metrics, compute_metrics
from candleflow.backtest.strategies import (
    STRATEGIES,
    IndicatorCache,
    Param,
    StrategySpec,
    cross_targets,
    get_strategy,
)

__all__ = [
    "METRIC_NAMES",
    "STRATEGIES",
    "TRADE_COLUMNS",
    "BacktestConfig",
    "BacktestResult",
    "IndicatorCache",
    "Metrics",
    "OpenPosition",
    "Param",
    "PreparedBars",
    "StrategySpec",
    "backtest_metrics",
    "compute_metrics",
    "cross_targets",
    "get_strategy",
    "run_backtest",
    "simulate",
]
