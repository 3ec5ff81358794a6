"""Engine and metrics on a five-bar series whose every figure is worked out by hand below."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from candleflow.backtest import BacktestConfig, StrategySpec, run_backtest

# bar:       0      1      2      3      4
OPEN = [100.0, 100.0, 110.0, 100.0, 120.0]
CLOSE = [100.0, 110.0, 99.0, 120.0, 120.0]
# Long at bar 1's open, flat at bar 2's open, short at bar 3's open, still short at the end.
TARGET = [1.0, 0.0, -1.0, np.nan, np.nan]


def fixed(target: list[float]) -> StrategySpec:
    """A strategy that returns ``target`` whatever the bars (to drive the engine by hand)."""
    return StrategySpec(
        "fixed", "test", (), lambda cache, p: np.array(target, dtype=float), lambda p: None
    )


@pytest.fixture
def bars() -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=5, freq="1D", tz="UTC", name="timestamp")
    frame = pd.DataFrame({"open": OPEN, "close": CLOSE}, index=index)
    frame["high"] = frame[["open", "close"]].max(axis=1)
    frame["low"] = frame[["open", "close"]].min(axis=1)
    frame["volume"] = 1.0
    return frame


def test_hand_computed_metrics(bars: pd.DataFrame) -> None:
    config = BacktestConfig(cash=1000.0, periods_per_year=252)
    result = run_backtest(bars, fixed(TARGET), config=config)

    # Bar 1: buy floor(1000 / 100) = 10 at 100; equity 1000 + 10·(110 − 100) = 1100.
    # Bar 2: sell 10 at 110 → cash 1100, flat. Bar 3: short floor(1100 / 100) = 11 at 100;
    # equity 1100 − 11·(120 − 100) = 880, unchanged at bar 4.
    assert result.equity.tolist() == [1000.0, 1100.0, 1100.0, 880.0, 880.0]
    assert result.position.tolist() == [0.0, 10.0, 0.0, -11.0, -11.0]
    m = result.metrics
    assert m.final_equity == 880.0
    assert m.total_return == pytest.approx(-0.12)
    assert m.trades == 1 and m.open_trades == 1
    assert result.trades[["entry_bar", "exit_bar", "size", "pnl"]].values.tolist() == [
        [1, 2, 10.0, 100.0]
    ]
    assert result.open_position is not None
    assert result.open_position.size == -11.0 and result.open_position.unrealized_pnl == -220.0
    assert m.win_rate == 1.0
    assert m.profit_factor == math.inf  # a profit and no loss
    assert m.max_drawdown == pytest.approx(0.2)  # 1100 → 880
    assert m.exposure == pytest.approx(3 / 5)
    returns = [0.1, 0.0, -0.2, 0.0]
    sharpe = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(252)
    assert m.sharpe == pytest.approx(sharpe)
    assert m.sharpe == pytest.approx(-3.15394, abs=1e-5)
    cagr = 0.88 ** (365.25 / 4) - 1  # four days from the first bar to the last
    assert m.cagr == pytest.approx(cagr)
    assert m.calmar == pytest.approx(cagr / 0.2)


def test_commission_is_charged_on_entry_and_exit_and_reserved_when_sizing(
    bars: pd.DataFrame,
) -> None:
    result = run_backtest(bars, fixed(TARGET), config=BacktestConfig(cash=1000.0, commission=0.01))
    # Bar 1: floor(1000 / (100 + 1)) = 9 units, fee 9 → cash 991. Bar 2: P&L 90, fee 9.9 →
    # cash 1071.1; the trade nets 90 − 9 − 9.9 = 71.1. Bar 3: floor(1071.1 / 101) = 10 short,
    # fee 10 → cash 1061.1; equity 1061.1 − 10·20 = 861.1.
    assert result.equity.round(6).tolist() == [1000.0, 1081.0, 1071.1, 861.1, 861.1]
    assert result.trades["pnl"].round(6).tolist() == [71.1]
    assert result.trades["commission"].round(6).tolist() == [18.9]


def test_slippage_moves_every_fill_against_the_trader(bars: pd.DataFrame) -> None:
    result = run_backtest(bars, fixed(TARGET), config=BacktestConfig(cash=1000.0, slippage=0.01))
    # Buy at 101 → 9 units, equity 1000 + 9·(110 − 101) = 1081; sell at 110·0.99 = 108.9 →
    # P&L 71.1, cash 1071.1; short at 99: floor(1071.1 / 99) = 10 units; equity
    # 1071.1 − 10·(120 − 99) = 861.1.
    assert result.trades[["entry_price", "exit_price"]].round(6).values.tolist() == [[101.0, 108.9]]
    assert result.equity.round(6).tolist() == [1000.0, 1081.0, 1071.1, 861.1, 861.1]


def test_fractional_size(bars: pd.DataFrame) -> None:
    config = BacktestConfig(cash=1000.0, size=0.5, whole_units=False)
    result = run_backtest(bars, fixed(TARGET), config=config)
    # 500 / 100 = 5 units long (P&L 50, cash 1050), then 525 / 100 = 5.25 units short.
    assert result.position.tolist() == [0.0, 5.0, 0.0, -5.25, -5.25]
    assert result.metrics.final_equity == pytest.approx(1050.0 - 5.25 * 20)


def test_repeated_same_side_signals_are_ignored_unless_reenter(bars: pd.DataFrame) -> None:
    target = [1.0, 1.0, 1.0, 1.0, np.nan]
    once = run_backtest(bars, fixed(target), config=BacktestConfig(cash=1000.0))
    assert once.metrics.trades == 0 and once.position.tolist() == [0.0, 10.0, 10.0, 10.0, 10.0]
    again = run_backtest(bars, fixed(target), config=BacktestConfig(cash=1000.0, reenter=True))
    # Closed and re-opened at bars 2, 3 and 4 (at 110, 100, 120: P&L +100, −100, +200), each
    # time floor(equity / open) = 10 units.
    assert again.metrics.trades == 3
    assert again.trades["pnl"].tolist() == [100.0, -100.0, 200.0]
    assert again.metrics.final_equity == 1200.0


def test_an_instruction_on_the_last_bar_is_never_filled(bars: pd.DataFrame) -> None:
    result = run_backtest(bars, fixed([np.nan] * 4 + [1.0]))
    assert result.metrics.trades == 0 and result.metrics.final_equity == 10_000.0
    assert result.metrics.sharpe == 0.0 and math.isnan(result.metrics.win_rate)


def test_wiped_out_account_stays_at_zero() -> None:
    index = pd.date_range("2024-01-01", periods=4, freq="1D", tz="UTC")
    frame = pd.DataFrame(
        {"open": [10.0, 10.0, 30.0, 5.0], "close": [10.0, 25.0, 40.0, 5.0]}, index=index
    )
    target = [-1.0, np.nan, 1.0, np.nan]
    result = run_backtest(frame, fixed(target), config=BacktestConfig(cash=100.0))
    # Short 10 at 10; at bar 1's close the short has lost 10·15 = 150 > 100: it is closed there
    # and the account stays at 0 (the later buy is not filled).
    assert result.equity.tolist() == [100.0, 0.0, 0.0, 0.0]
    assert result.trades["pnl"].tolist() == [-150.0]
    assert result.metrics.final_equity == 0.0 and result.metrics.cagr == -1.0
    assert result.metrics.max_drawdown == 1.0
