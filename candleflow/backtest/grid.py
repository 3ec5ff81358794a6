"""A fused compiled grid of ``sma_cross`` backtests: the optimizer's fast path for that strategy.

Each distinct SMA window is taken once from the :class:`~candleflow.backtest.IndicatorCache`
(the very arrays the strategy reads), then one compiled call loops over a chunk of
(fast, slow, long_only) cells: the strict-cross targets of
:func:`~candleflow.backtest.strategies.cross_targets`, the engine's own fill step
(:func:`~candleflow.backtest.engine.fill_at_open` and
:func:`~candleflow.backtest.engine.mark_at_close`, inlined) and the equity-curve statistics of
:mod:`.metrics`, so every cell's :class:`Metrics` equals what
:func:`~candleflow.backtest.backtest_metrics` gives for it, bit for bit (the tests check every
cell).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from numba import njit

from candleflow.backtest.engine import BacktestConfig, PreparedBars, fill_at_open, mark_at_close
from candleflow.backtest.metrics import Metrics, _years, annualisation, metrics_from_stats
from candleflow.backtest.strategies import STRATEGIES, FloatArray, ParamValue, StrategySpec
from candleflow.timeframes import Timeframe, parse_timeframe

__all__ = ["SmaCrossGrid", "is_sma_cross"]

IntArray = npt.NDArray[np.int64]

# Columns of the kernel's per-cell statistics.
_FINAL, _MEAN, _STD, _MAX_DD, _TRADES, _EXPOSED_BARS, _OPEN = range(7)
_WINS, _GROSS_PROFIT, _GROSS_LOSS = range(7, 10)
_N_STATS = 10
_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE


def is_sma_cross(spec: StrategySpec) -> bool:
    """Whether ``spec`` is the built-in ``sma_cross`` strategy (the one this grid computes)."""
    return spec is STRATEGIES["sma_cross"]


@njit(cache=True, nogil=True)
def _block_sum(values: FloatArray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """numpy's pairwise_sum of ``n`` ≤ 128 values: sequential below 8, else 8 accumulators."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += values[i]
        return res
    r0 = values[lo]
    r1 = values[lo + 1]
    r2 = values[lo + 2]
    r3 = values[lo + 3]
    r4 = values[lo + 4]
    r5 = values[lo + 5]
    r6 = values[lo + 6]
    r7 = values[lo + 7]
    i = 8
    while i < n - (n % 8):
        k = lo + i
        r0 += values[k]
        r1 += values[k + 1]
        r2 += values[k + 2]
        r3 += values[k + 3]
        r4 += values[k + 4]
        r5 += values[k + 5]
        r6 += values[k + 6]
        r7 += values[k + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += values[lo + i]
        i += 1
    return float(res)


@njit(cache=True, nogil=True)
def _numpy_sum(values: FloatArray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """``values[lo:lo + n].sum()`` as numpy computes it for a contiguous float64 array (its
    pairwise summation: blocks of ≤ 128 values, halved recursively at multiples of 8, added to
    the identity 0), bit for bit (a test compares them). The recursion is walked with an explicit
    stack (a cached recursive numba function can crash when loaded from the cache)."""
    if n <= _PAIRWISE_BLOCK:
        return _block_sum(values, lo, n)
    starts = np.empty(64, dtype=np.int64)
    sizes = np.empty(64, dtype=np.int64)
    stage = np.zeros(64, dtype=np.int64)  # 0: not split yet, 1: left pending, 2: right pending
    left = np.empty(64)
    top = 0
    starts[0] = lo
    sizes[0] = n
    while True:
        start = starts[top]
        size = sizes[top]
        if size > _PAIRWISE_BLOCK:  # split: evaluate the left half first
            half = size // 2
            half -= half % 8
            stage[top] = 1
            top += 1
            starts[top] = start
            sizes[top] = half
            stage[top] = 0
            continue
        value = _block_sum(values, start, size)
        top -= 1
        while True:
            if top < 0:
                return value
            if stage[top] == 1:  # the left half is done: keep it, evaluate the right half
                left[top] = value
                stage[top] = 2
                half = sizes[top] // 2
                half -= half % 8
                starts[top + 1] = starts[top] + half
                sizes[top + 1] = sizes[top] - half
                stage[top + 1] = 0
                top += 1
                break
            value = left[top] + value  # both halves done
            top -= 1


@njit(cache=True, nogil=True)
def _sma_cross_cells(
    open_: FloatArray,
    close: FloatArray,
    smas: FloatArray,
    fast_row: IntArray,
    slow_row: IntArray,
    down: FloatArray,
    begin: int,
    end: int,
    cash: float,
    commission: float,
    slippage: float,
    size: float,
    whole_units: bool,
    reenter: bool,
) -> FloatArray:  # pragma: no cover - compiled
    """Per cell, the statistics row (``_N_STATS`` columns) :func:`metrics_from_stats` needs.

    One pass per cell does what ``cross_targets``, ``engine._simulate_chunk`` and the first
    pass of ``metrics._curve_stats`` do: the strict cross decides the instruction, the engine's
    fill step (``fill_at_open``, ``mark_at_close``) fills it, and the curve statistics follow
    with the same float operations in the same order; the bar returns are kept for
    ``_curve_stats``' second pass.
    """
    cells = fast_row.shape[0]
    count = end - begin
    stats = np.empty((cells, _N_STATS))
    returns = np.empty(count)
    cell_pnl = np.empty(count + 1)  # a cell closes at most one trade per bar
    profits = np.empty(count + 1)
    first_signal = max(begin + 1, 2)  # target[0] is NaN; bar begin fills nothing
    for c in range(cells):
        a = smas[fast_row[c]]
        b = smas[slow_row[c]]
        short = down[c]
        trades = 0
        balance = cash
        units = 0.0
        entry = 0.0
        entry_fee = 0.0
        dead = False
        exposed = 0
        total = 0.0
        peak = cash
        max_drawdown = 0.0
        previous = 0.0
        value = 0.0
        below_or_equal = a[first_signal - 2] <= b[first_signal - 2]
        above_or_equal = a[first_signal - 2] >= b[first_signal - 2]
        for i in range(begin, end):
            if dead:
                value = 0.0
            else:
                if i >= first_signal:
                    # cross_targets' strict rule on bar i - 1, whose close decided the
                    # instruction filled at this open (NaN compares false: no cross)
                    cur_a = a[i - 1]
                    cur_b = b[i - 1]
                    up = below_or_equal & (cur_a > cur_b)
                    down_ = above_or_equal & (cur_a < cur_b)
                    below_or_equal = cur_a <= cur_b
                    above_or_equal = cur_a >= cur_b
                    if up | down_:
                        balance, units, entry, entry_fee, closed, _price, net_pnl, _fee, _opened = (
                            fill_at_open(1.0 if up else short, open_[i], balance, units, entry,
                                         entry_fee, commission, slippage, size, whole_units,
                                         reenter)
                        )  # fmt: skip
                        if closed:
                            cell_pnl[trades] = net_pnl
                            trades += 1
                value, wiped, net_pnl, _fee = mark_at_close(close[i], balance, units, entry,
                                                            entry_fee, commission)  # fmt: skip
                if wiped:
                    if units != 0.0:
                        cell_pnl[trades] = net_pnl
                        trades += 1
                    balance = 0.0
                    units = 0.0
                    entry = 0.0
                    entry_fee = 0.0
                    dead = True
                if units != 0.0:
                    exposed += 1
            # _curve_stats, first pass
            if i > begin:
                r = value / previous - 1.0 if previous > 0.0 else 0.0
                returns[i - begin] = r
                total += r
            peak = max(peak, value)
            if peak > 0.0:
                max_drawdown = max(max_drawdown, 1.0 - value / peak)
            previous = value
        if count < 3:
            mean = 0.0
            std = 0.0
        else:
            mean = total / (count - 1)
            squares = 0.0
            for k in range(1, count):
                deviation = returns[k] - mean
                squares += deviation * deviation
            std = math.sqrt(squares / (count - 2))
        stats[c, _FINAL] = value
        stats[c, _MEAN] = mean
        stats[c, _STD] = std
        stats[c, _MAX_DD] = max_drawdown
        stats[c, _TRADES] = trades
        stats[c, _EXPOSED_BARS] = exposed
        stats[c, _OPEN] = 1.0 if units != 0.0 else 0.0
        # compute_metrics' numpy sums of the winning and the losing trades, in trade order
        wins = 0
        losses = 0
        for k in range(trades):
            if cell_pnl[k] > 0.0:
                profits[wins] = cell_pnl[k]
                wins += 1
            elif cell_pnl[k] < 0.0:
                cell_pnl[losses] = cell_pnl[k]  # k ≥ losses: compacting in place
                losses += 1
        stats[c, _WINS] = wins
        stats[c, _GROSS_PROFIT] = _numpy_sum(profits, 0, wins)
        stats[c, _GROSS_LOSS] = -_numpy_sum(cell_pnl, 0, losses)
    return stats


class SmaCrossGrid:
    """Backtests of ``sma_cross`` cells on bars ``start``..``stop - 1``, many per compiled call.

    ``windows`` are every SMA window the cells will use (each array is gathered once); calling
    the grid with a sequence of resolved parameter sets returns their :class:`Metrics`.
    """

    def __init__(
        self,
        bars: PreparedBars,
        windows: Sequence[int],
        *,
        config: BacktestConfig | None = None,
        start: int = 0,
        stop: int | None = None,
        timeframe: str | Timeframe | None = None,
    ) -> None:
        self.bars = bars
        self.config = config if config is not None else BacktestConfig()
        self.begin, self.end = bars.bar_range(start, stop)
        unique = sorted({int(w) for w in windows})
        self.rows = {w: k for k, w in enumerate(unique)}
        self.smas = np.empty((len(unique), len(bars)))
        for k, w in enumerate(unique):
            self.smas[k] = bars.cache.sma(w)
        count = self.end - self.begin
        index = bars.index[self.begin : self.end]
        tf = parse_timeframe(timeframe) if timeframe is not None else None
        ppy = self.config.periods_per_year
        self.periods_per_year = ppy if ppy is not None else annualisation(index, tf)
        self.years = _years(index, count, self.periods_per_year)

    @property
    def bar_count(self) -> int:
        return self.end - self.begin

    def __call__(self, cells: Sequence[Mapping[str, ParamValue]]) -> list[Metrics]:
        if not cells:
            return []
        fast = np.array([self.rows[int(p["fast"])] for p in cells], dtype=np.int64)
        slow = np.array([self.rows[int(p["slow"])] for p in cells], dtype=np.int64)
        down = np.array([0.0 if p["long_only"] else -1.0 for p in cells])
        cfg = self.config
        stats = _sma_cross_cells(
            self.bars.open,
            self.bars.close,
            self.smas,
            fast,
            slow,
            down,
            self.begin,
            self.end,
            cfg.cash,
            cfg.commission,
            cfg.slippage,
            cfg.size,
            cfg.whole_units,
            cfg.reenter,
        )
        bars = self.bar_count
        results: list[Metrics] = []
        for row in stats.tolist():
            results.append(
                metrics_from_stats(
                    row[_FINAL],
                    row[_MEAN],
                    row[_STD],
                    row[_MAX_DD],
                    trades=int(row[_TRADES]),
                    wins=int(row[_WINS]),
                    gross_profit=row[_GROSS_PROFIT],
                    gross_loss=row[_GROSS_LOSS],
                    initial_equity=cfg.cash,
                    exposed_bars=int(row[_EXPOSED_BARS]),
                    open_trades=int(row[_OPEN]),
                    bars=bars,
                    periods_per_year=self.periods_per_year,
                    years=self.years,
                )
            )
        return results
