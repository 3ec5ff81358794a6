"""Indicator arithmetic on float64 arrays: the maths behind :mod:`candleflow.features.catalogue`.

Windowed sums, means and standard deviations, the SMA-seeded EMA and Wilder recurrences, and the
indicators built from them (returns, RSI, true range, MACD, Bollinger bands, volatility, volume
z-score). Inputs and outputs are plain numpy arrays aligned row for row, warm-up rows NaN; there
are no column names, specs or frames here — :mod:`candleflow.features.catalogue` maps these to
columns and documents each definition. Two properties make incremental feature updates exact: a
window's value is summed in a fixed order that depends only on the window (:func:`window_sums`),
and every recurrence can be continued from the state of the previous row (the ``*_from``
functions), giving the same bits as running through from row 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "F64",
    "bollinger",
    "ema",
    "ema_from",
    "gains_losses",
    "log_return",
    "macd",
    "macd_from",
    "nans",
    "ratio",
    "rolling_mean",
    "rolling_std",
    "rsi",
    "simple_return",
    "true_range",
    "volatility",
    "volume_zscore",
    "wilder",
    "wilder_from",
    "window_sums",
]

F64 = np.ndarray[Any, np.dtype[np.float64]]


def nans(n: int) -> F64:
    """``n`` NaNs."""
    return np.full(n, np.nan, dtype=np.float64)


def ratio(num: F64, den: F64) -> F64:
    """``num / den`` where ``den > 0``, else NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: F64 = np.where(den > 0, num / den, np.nan)
    return out


# -- windows ---------------------------------------------------------------------------------------


def window_sums(x: F64, n: int) -> F64:
    """Sum of each full window x[t-n+1..t] at row t (NaN before), added left to right.

    The order of additions depends only on the window, never on where the array starts, so a
    value is bit-identical in a full and in an incremental computation.
    """
    out = nans(len(x))
    m = len(x) - n + 1
    if m <= 0:
        return out
    acc = x[:m].copy()
    for j in range(1, n):
        acc += x[j : j + m]
    out[n - 1 :] = acc
    return out


def rolling_mean(x: F64, n: int) -> F64:
    """Mean of each full window of ``n`` rows (the SMA)."""
    return window_sums(x, n) / n


def rolling_std(x: F64, n: int, ddof: int) -> F64:
    """Standard deviation of each full window (two-pass: mean first, then squared deviations)."""
    out = nans(len(x))
    m = len(x) - n + 1
    if m <= 0:
        return out
    mean = rolling_mean(x, n)[n - 1 :]
    acc = (x[:m] - mean) ** 2
    for j in range(1, n):
        acc += (x[j : j + m] - mean) ** 2
    out[n - 1 :] = np.sqrt(acc / (n - ddof))
    return out


# -- recurrences -----------------------------------------------------------------------------------


def _recurse(first: float, x: F64, alpha: float) -> F64:
    """``[first, y1, y2, …]`` with y[i] = α·x[i-1] + (1−α)·y[i-1]; the state is y alone.

    pandas' adjust=False EWM runs exactly this recurrence in compiled code, so continuing from
    a stored y gives the same bits as running through.
    """
    if len(x) == 0:
        return np.array([first], dtype=np.float64)
    series = pd.Series(np.concatenate(([first], x)))
    out: F64 = series.ewm(alpha=alpha, adjust=False).mean().to_numpy(dtype=np.float64)
    return out


def ema(x: F64, n: int) -> F64:
    """EMA with α = 2/(n+1), seeded with the mean of the first n values at row n−1."""
    out = nans(len(x))
    if len(x) >= n:
        seed = window_sums(x[:n], n)[-1] / n
        out[n - 1 :] = _recurse(seed, x[n:], 2.0 / (n + 1))
    return out


def ema_from(prev: float, x: F64, n: int) -> F64:
    """The EMA of :func:`ema` continued over ``x`` from its value ``prev`` at the row before."""
    return _recurse(prev, x, 2.0 / (n + 1))[1:]


def wilder(x: F64, n: int) -> F64:
    """Wilder's average of ``x`` whose first value (index 0) is undefined: defined from row n."""
    out = nans(len(x))
    if len(x) > n:
        seed = window_sums(x[1 : n + 1], n)[-1] / n
        out[n:] = _recurse(seed, x[n + 1 :], 1.0 / n)
    return out


def wilder_from(prev: float, x: F64, n: int) -> F64:
    """Wilder's average continued over ``x`` from its value ``prev`` at the row before."""
    return _recurse(prev, x, 1.0 / n)[1:]


# -- indicators ------------------------------------------------------------------------------------


def simple_return(close: F64, k: int) -> F64:
    """close[t] / close[t-k] − 1."""
    out = nans(len(close))
    out[k:] = close[k:] / close[:-k] - 1.0
    return out


def log_return(close: F64, k: int) -> F64:
    """ln(close[t] / close[t-k])."""
    out = nans(len(close))
    out[k:] = np.log(close[k:] / close[:-k])
    return out


def gains_losses(close: F64) -> tuple[F64, F64]:
    """Gains and losses (both ≥ 0) of the close-to-close changes; row 0 is NaN."""
    change = np.concatenate(([np.nan], np.diff(close)))
    return np.maximum(change, 0.0), np.maximum(-change, 0.0)


def rsi(avg_gain: F64, avg_loss: F64) -> F64:
    """100 − 100/(1 + AG/AL) from the Wilder averages of gains and losses."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # AL = 0 < AG gives RS = inf → 100; 0/0 gives NaN: both follow from the formula.
        out: F64 = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


def true_range(high: F64, low: F64, close: F64) -> F64:
    """max(high−low, |high−close[t-1]|, |low−close[t-1]|) from row 1; row 0 is NaN."""
    tr = nans(len(close))
    prev = close[:-1]
    tr[1:] = np.maximum(
        high[1:] - low[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev))
    )
    return tr


def macd(close: F64, fast: int, slow: int, signal: int) -> tuple[F64, F64, F64, F64, F64]:
    """``(line, signal, histogram, ema_fast, ema_slow)``; the signal line is seeded once the
    MACD line is defined (row slow−1)."""
    ema_fast, ema_slow = ema(close, fast), ema(close, slow)
    line = ema_fast - ema_slow
    sig = nans(len(close))
    if len(close) >= slow:
        sig[slow - 1 :] = ema(line[slow - 1 :], signal)
    return line, sig, line - sig, ema_fast, ema_slow


def macd_from(
    close: F64,
    fast: int,
    slow: int,
    signal: int,
    *,
    prev_fast: float,
    prev_slow: float,
    prev_signal: float,
) -> tuple[F64, F64, F64, F64, F64]:
    """:func:`macd` continued over ``close`` from the two EMAs and the signal at the row before."""
    ema_fast = ema_from(prev_fast, close, fast)
    ema_slow = ema_from(prev_slow, close, slow)
    line = ema_fast - ema_slow
    sig = ema_from(prev_signal, line, signal)
    return line, sig, line - sig, ema_fast, ema_slow


def bollinger(close: F64, n: int, k: float) -> tuple[F64, F64, F64, F64]:
    """``(mid, upper, lower, %b)``: SMA ± k·population σ; %b NaN for a zero-width band."""
    mid = rolling_mean(close, n)
    sd = rolling_std(close, n, ddof=0)
    upper, lower = mid + k * sd, mid - k * sd
    return mid, upper, lower, ratio(close - lower, upper - lower)


def volatility(close: F64, n: int, periods_per_year: float | None = None) -> F64:
    """Sample σ of the last n one-bar log returns, times √periods_per_year if given."""
    logret = np.concatenate(([np.nan], np.log(close[1:] / close[:-1])))
    sd = rolling_std(logret, n, ddof=1)
    if periods_per_year is not None:
        sd = sd * math.sqrt(periods_per_year)
    return sd


def volume_zscore(volume: F64, n: int) -> F64:
    """(volume − mean)/sample σ over the last n volumes; NaN where σ is 0 or undefined."""
    return ratio(volume - rolling_mean(volume, n), rolling_std(volume, n, ddof=1))
