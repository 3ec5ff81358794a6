"""The fused sma_cross grid equals the per-cell path, cell for cell, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from candleflow.backtest import (
    BacktestConfig,
    BacktestResult,
    PreparedBars,
    backtest_metrics,
    run_backtest,
)
from candleflow.backtest.grid import SmaCrossGrid
from candleflow.backtest.strategies import STRATEGIES
from candleflow.optimize.search import Integer, objective_value, optimize
from tests.backtest.conftest import synthetic_bars

SPACE = {"fast": Integer(2, 11), "slow": Integer(5, 14)}  # 10 × 10 windows
CONFIGS = [
    BacktestConfig(),
    BacktestConfig(commission=0.002, slippage=0.0005),
    BacktestConfig(commission=0.001, slippage=0.001, size=0.5, whole_units=False, reenter=True),
]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("series", ["eurusd", "synthetic"])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("long_only", [False, True])
@pytest.mark.parametrize("objective", ["sharpe", "final_equity", "profit_factor"])
def test_fused_grid_equals_the_per_cell_path(
    eurusd: pd.DataFrame, series: str, config: BacktestConfig, long_only: bool, objective: str
) -> None:
    bars = eurusd if series == "eurusd" else synthetic_bars(20_000, seed=3)
    fixed = {"long_only": long_only}
    result = optimize(bars, "sma_cross", SPACE, method="grid", iterations=None,
                      objective=objective, fixed=fixed, config=config)  # fmt: skip
    assert result.iterations == sum(f < s for f in range(2, 12) for s in range(5, 15))
    prepared = PreparedBars.from_frame(bars)
    for evaluation in result.evaluations:
        expected = backtest_metrics(prepared, "sma_cross", evaluation.params, config=config)
        got = evaluation.metrics
        assert got.final_equity == expected.final_equity
        assert got.trades == expected.trades
        assert _same(evaluation.objective, objective_value(expected, objective))
        for name, value in expected.to_dict().items():
            assert _same(float(getattr(got, name)), float(value)), name


def _crash_bars(n: int = 3_000, seed: int = 1) -> pd.DataFrame:
    """A volatile random walk with a spike (x8 within ten bars) that wipes out shorts."""
    bars = synthetic_bars(n, seed=seed)
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
    close[n // 2 : n // 2 + 10] = close[n // 2 - 1] * np.linspace(1.0, 8.0, 10)
    open_ = np.concatenate(([close[0]], close[:-1]))
    return bars.assign(open=open_, high=np.maximum(open_, close), low=np.minimum(open_, close),
                       close=close)  # fmt: skip


def test_every_cell_equals_its_own_backtest_through_every_fill_rule(
    eurusd: pd.DataFrame, goog: pd.DataFrame
) -> None:
    """Each cell of a grid, metric for metric and bit for bit, against the engine's per-cell
    path — on data and settings that take every rule of the fill step (reversals, commission
    and slippage, fractional units, orders too small to fill, accounts wiped out), so a rule
    changed in only one of the two kernels fails here."""
    cells = [
        {"fast": f, "slow": s, "long_only": lo}
        for f in range(2, 30, 3)
        for s in range(5, 120, 9)
        if f < s
        for lo in (False, True)
    ]
    windows = sorted({int(c["fast"]) for c in cells} | {int(c["slow"]) for c in cells})
    configs = [*CONFIGS, BacktestConfig(cash=300.0, commission=0.001)]  # GOOG: some orders < 1 unit
    seen = {"wiped out": 0, "order too small": 0, "reversed": 0}
    for bars in (eurusd, goog, _crash_bars()):
        prepared = PreparedBars.from_frame(bars)
        for config in configs:
            got = SmaCrossGrid(prepared, windows, config=config)(cells)
            for params, metrics in zip(cells, got, strict=True):
                result = run_backtest(prepared, "sma_cross", params, config=config)
                expected = result.metrics.to_dict()
                assert metrics.to_dict().keys() == expected.keys()
                for name, value in expected.items():
                    assert _same(float(getattr(metrics, name)), float(value)), (
                        f"{name} of {params} with {config}: grid {getattr(metrics, name)!r}, "
                        f"engine {value!r} (if you changed the fill step in engine.py, touch "
                        "grid.py: numba's cache does not follow imports)"
                    )
                trades = result.trades
                seen["wiped out"] += result.metrics.final_equity == 0.0
                seen["reversed"] += bool((trades["exit_bar"].to_numpy()[:-1]
                                          == trades["entry_bar"].to_numpy()[1:]).any())  # fmt: skip
                seen["order too small"] += _an_order_was_dropped(result, prepared)
    assert all(seen.values()), seen


def _an_order_was_dropped(result: BacktestResult, bars: PreparedBars) -> bool:
    """Whether a cross the account was flat for opened nothing (0 whole units affordable)."""
    targets = STRATEGIES["sma_cross"].signals(bars.cache, result.params)
    position = result.position.to_numpy()
    for i in np.flatnonzero(~np.isnan(targets[:-1]) & (targets[:-1] != 0.0)):
        if position[i] == 0.0 and position[i + 1] == 0.0 and result.metrics.final_equity > 0:
            return True
    return False


def test_fused_grid_on_a_sub_range_and_in_chunks(eurusd: pd.DataFrame) -> None:
    prepared = PreparedBars.from_frame(eurusd)
    config = BacktestConfig(commission=0.001, slippage=0.0002)
    cells = [
        {"fast": f, "slow": s, "long_only": lo}
        for f in (3, 7, 10)
        for s in (12, 20, 40)
        for lo in (False, True)
    ]
    grid = SmaCrossGrid(prepared, [3, 7, 10, 12, 20, 40], config=config, start=1000, stop=4000)
    got = grid(cells[:5]) + grid(cells[5:])
    for params, metrics in zip(cells, got, strict=True):
        expected = backtest_metrics(
            prepared, "sma_cross", params, config=config, start=1000, stop=4000
        )
        assert metrics.to_dict().keys() == expected.to_dict().keys()
        assert all(
            _same(float(a), float(b))
            for a, b in zip(metrics.to_dict().values(), expected.to_dict().values(), strict=True)
        )


def test_optimize_grid_uses_the_fused_path(
    eurusd: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import candleflow.optimize.search as module

    def per_cell(*args: object, **kwargs: object) -> None:
        raise AssertionError("per-cell path used")

    reference = optimize(eurusd, "sma_cross", SPACE, method="grid", iterations=None, split=0.6)
    monkeypatch.setattr(module.BatchEvaluator, "__call__", per_cell)
    result = optimize(eurusd, "sma_cross", SPACE, method="grid", iterations=None, split=0.6)
    assert result.evaluations == reference.evaluations  # split: in-sample fused, OOS per cell
    assert all(e.out_of_sample is not None for e in result.top(10))
    with pytest.raises(AssertionError, match="per-cell"):
        optimize(eurusd, "sma_cross", SPACE, method="random", iterations=3)


def test_fused_grid_progress_and_cancellation(eurusd: pd.DataFrame) -> None:
    from candleflow.progress import ListSink, ProgressEvent, ProgressTracker

    sink = ListSink()
    tracker = ProgressTracker("optimize", [sink], min_interval=0)
    config = BacktestConfig(chunk_size=5 * len(eurusd))  # 5 cells per compiled call
    done: list[int] = []

    def cancel_after_20(event: ProgressEvent) -> None:
        done.append(event.items_done)
        if event.items_done == 20:
            tracker.cancel_token.cancel("stop")

    tracker.add_sink(cancel_after_20)
    result = optimize(eurusd, "sma_cross", SPACE, method="grid", iterations=None,
                      config=config, progress=tracker)  # fmt: skip
    assert result.cancelled and result.iterations == 20
    assert done[1:5] == [5, 10, 15, 20]  # advanced per compiled chunk of 5 cells
    full = optimize(eurusd, "sma_cross", SPACE, method="grid", iterations=20, config=config)
    assert result.evaluations == full.evaluations


def test_the_kernels_sum_is_numpys_bit_for_bit() -> None:
    import numpy as np

    from candleflow.backtest.grid import _numpy_sum

    rng = np.random.default_rng(0)
    for n in [*range(0, 300), 511, 1000, 4097]:
        values = rng.standard_normal(n + 3) * rng.uniform(0.01, 1000.0)
        assert _numpy_sum(values, 3, n) == values[3:].sum()
