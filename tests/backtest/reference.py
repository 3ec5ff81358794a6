"""backtesting.py's side of the cross-validation: the SMA-cross strategies as its users write them
(module-level classes, so its multiprocessing optimizer can pickle them)."""

from __future__ import annotations

import warnings

import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import SMA


class SmaCross(Strategy):  # type: ignore[misc]
    """Long on a cross up, short on a cross down (orders are exclusive: each closes the last)."""

    n1 = 10
    n2 = 20

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, self.n1)
        self.slow = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            self.buy()
        elif crossover(self.slow, self.fast):
            self.sell()


class SmaCrossLongOnly(SmaCross):
    """Long on a cross up, flat on a cross down."""

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()


def reference_backtest(
    frame: pd.DataFrame, *, long_only: bool, commission: float = 0.0
) -> Backtest:
    strategy = SmaCrossLongOnly if long_only else SmaCross
    return Backtest(frame, strategy, cash=10_000, commission=commission, exclusive_orders=True)


def reference_run(
    frame: pd.DataFrame, fast: int, slow: int, *, long_only: bool, commission: float = 0.0
) -> pd.Series:
    """backtesting.py's own result for an SMA cross."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = reference_backtest(frame, long_only=long_only, commission=commission)
        return bt.run(n1=fast, n2=slow)
