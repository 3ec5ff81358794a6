"""Performance metrics of one backtest, from its equity curve, exposure and closed-trade P&L.

Definitions (all fractions, not percentages; NaN where a ratio is undefined):

* ``total_return`` = final / initial − 1; ``cagr`` = (final / initial) ^ (1 / years) − 1, with
  ``years`` the span between the first and last bar's timestamps over 365.25 days (or
  bars / ``periods_per_year`` without timestamps); −1 when the account is wiped out.
* ``sharpe`` = mean / sample std (ddof=1) of the bar-to-bar simple returns of the equity curve
  × √periods_per_year, risk-free rate 0; 0.0 when the returns do not vary (e.g. no trade at
  all). ``periods_per_year`` is given, or measured from the timestamps (bars per 365.25 days
  actually present, so FX 24/5, equities 6.5 h/day and crypto 24/7 are each annualised by their
  own spacing), or derived from the timeframe (252 for daily bars, 252 × bars per 24 h intraday).
* ``max_drawdown`` is the largest fall from a running equity peak, as a positive fraction
  (0.25 = 25 % below the peak); ``calmar`` = cagr / max_drawdown (NaN when there is no drawdown).
* ``trades`` counts closed trades; ``open_trades`` the position still open at the end (0 or 1),
  which is marked to market in ``final_equity`` without an exit commission (as backtesting.py).
* ``win_rate`` = winning closed trades / closed trades (net P&L > 0); ``profit_factor`` = gross
  profit / gross loss of closed trades (inf with profits and no losses; NaN without trades).
* ``exposure`` = fraction of bars that end with a position open.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from numba import njit

from candleflow.timeframes import Timeframe

__all__ = ["METRIC_NAMES", "Metrics", "annualisation", "compute_metrics"]

_YEAR = pd.Timedelta(days=365.25)


@dataclass(frozen=True, slots=True)
class Metrics:
    """Summary of one backtest (see the module docstring for each definition)."""

    initial_equity: float
    final_equity: float
    total_return: float
    cagr: float
    sharpe: float
    max_drawdown: float
    calmar: float
    trades: int
    open_trades: int
    win_rate: float
    profit_factor: float
    exposure: float
    bars: int
    periods_per_year: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


METRIC_NAMES: tuple[str, ...] = tuple(Metrics.__dataclass_fields__)


def annualisation(
    index: pd.Index | None, timeframe: Timeframe | None = None, bars: int | None = None
) -> float:
    """Bars per year: measured from a DatetimeIndex, else from ``timeframe``, else 252."""
    if isinstance(index, pd.DatetimeIndex) and len(index) >= 2:
        span = index[-1] - index[0]
        if span > pd.Timedelta(0):
            return float((len(index) - 1) / (span / _YEAR))
    if timeframe is not None:
        return 252.0 if timeframe.is_daily else 252.0 * 1440.0 / timeframe.minutes
    del bars
    return 252.0


def _years(index: pd.Index | None, bars: int, periods_per_year: float) -> float:
    if isinstance(index, pd.DatetimeIndex) and len(index) >= 2:
        return float((index[-1] - index[0]) / _YEAR)
    return max(bars - 1, 0) / periods_per_year


@njit(cache=True, nogil=True)
def _curve_stats(
    equity: npt.NDArray[np.float64], initial: float
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """Mean and sample std of bar-to-bar returns and max drawdown from the running peak
    (counting the initial equity), in two passes."""
    n = equity.shape[0]
    total = 0.0
    peak = initial
    max_drawdown = 0.0
    for i in range(n):
        value = equity[i]
        if i > 0:
            previous = equity[i - 1]
            total += value / previous - 1.0 if previous > 0.0 else 0.0
        peak = max(peak, value)
        if peak > 0.0:
            max_drawdown = max(max_drawdown, 1.0 - value / peak)
    if n < 3:
        return 0.0, 0.0, max_drawdown
    mean = total / (n - 1)
    squares = 0.0
    for i in range(1, n):
        previous = equity[i - 1]
        deviation = (equity[i] / previous - 1.0 if previous > 0.0 else 0.0) - mean
        squares += deviation * deviation
    return mean, math.sqrt(squares / (n - 2)), max_drawdown


def compute_metrics(
    equity: npt.NDArray[np.float64],
    trade_pnl: npt.NDArray[np.float64],
    *,
    initial_equity: float,
    exposed_bars: int = 0,
    open_trades: int = 0,
    index: pd.Index | None = None,
    timeframe: Timeframe | None = None,
    periods_per_year: float | None = None,
) -> Metrics:
    """Metrics of an equity curve (one value per bar, at the close), its closed trades' P&L and
    the number of bars that ended with a position open."""
    bars = int(equity.shape[0])
    ppy = periods_per_year if periods_per_year is not None else annualisation(index, timeframe)
    final = float(equity[-1]) if bars else float(initial_equity)
    mean, std, max_drawdown = _curve_stats(equity, float(initial_equity))
    wins = trade_pnl[trade_pnl > 0]
    losses = trade_pnl[trade_pnl < 0]
    return metrics_from_stats(
        final,
        mean,
        std,
        max_drawdown,
        trades=int(trade_pnl.shape[0]),
        wins=int(wins.shape[0]),
        gross_profit=float(wins.sum()),
        gross_loss=float(-losses.sum()),
        initial_equity=initial_equity,
        exposed_bars=exposed_bars,
        open_trades=open_trades,
        bars=bars,
        periods_per_year=ppy,
        years=_years(index, bars, ppy),
    )


def metrics_from_stats(
    final: float,
    mean: float,
    std: float,
    max_drawdown: float,
    *,
    trades: int,
    wins: int,
    gross_profit: float,
    gross_loss: float,
    initial_equity: float,
    exposed_bars: int,
    open_trades: int,
    bars: int,
    periods_per_year: float,
    years: float,
) -> Metrics:
    """:func:`compute_metrics` from the equity curve's final value, :func:`_curve_stats`, the
    count of closed and winning trades and the numpy sums of the winning trades' P&L and of the
    losing trades' (negated) — the grid kernel computes those itself; ``years`` as
    :func:`_years` gives it."""
    ppy = periods_per_year
    total_return = final / initial_equity - 1.0
    if final <= 0:
        cagr = -1.0
    elif years > 0:
        cagr = (final / initial_equity) ** (1.0 / years) - 1.0
    else:
        cagr = 0.0

    sharpe = mean / std * math.sqrt(ppy) if std > 0 else 0.0
    calmar = cagr / max_drawdown if max_drawdown > 0 else math.nan

    win_rate = wins / trades if trades else math.nan
    if gross_loss > 0:
        profit_factor = gross_profit / gross_loss
    elif gross_profit > 0:
        profit_factor = math.inf
    else:
        profit_factor = math.nan
    exposure = exposed_bars / bars if bars else 0.0

    return Metrics(
        initial_equity=float(initial_equity),
        final_equity=final,
        total_return=total_return,
        cagr=float(cagr),
        sharpe=sharpe,
        max_drawdown=max_drawdown,
        calmar=calmar,
        trades=trades,
        open_trades=int(open_trades),
        win_rate=float(win_rate),
        profit_factor=float(profit_factor),
        exposure=exposure,
        bars=bars,
        periods_per_year=float(ppy),
    )
