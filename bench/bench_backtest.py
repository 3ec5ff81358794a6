"""Benchmark of the backtest engine against its peers, measured in one run on the same data.

Prints single-backtest candles/s and 100-combination grid backtests/s (indicators included on
every side) for candleflow, backtesting.py and a pandas ``iterrows`` loop (vectorbt when it is
installed), with ratios; our kernel's candles/s beside a fused compiled SMA-cross loop's (the
practical ceiling of a one-pass simulation); and what the progress machinery costs (the same
run with and without a tracker). Run ``python -m bench.bench_backtest``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from candleflow.backtest import (
    BacktestConfig,
    IndicatorCache,
    PreparedBars,
    get_strategy,
    run_backtest,
    simulate,
)
from candleflow.optimize import optimize
from candleflow.progress import ListSink, ProgressTracker

FAST, SLOW = 10, 20
GRID = {"fast": range(2, 22, 2), "slow": range(30, 130, 10)}  # 100 cells, all fast < slow


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    index = pd.date_range("2020-01-01", periods=n, freq="1min", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "volume": 1.0,
        },
        index=index,
    )


def eurusd() -> pd.DataFrame:
    from backtesting.test import EURUSD

    bars = EURUSD.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]]
    bars = bars.astype(np.float64)
    bars.index = pd.DatetimeIndex(bars.index).tz_localize("UTC")
    return bars


# -- peers ------------------------------------------------------------------------------------


def _backtesting_frame(bars: pd.DataFrame) -> pd.DataFrame:
    frame = bars.rename(columns=str.capitalize)
    frame.index = frame.index.tz_localize(None)
    return frame


def backtesting_run(bars: pd.DataFrame, fast: int = FAST, slow: int = SLOW) -> float:
    from tests.backtest.reference import reference_run

    return float(
        reference_run(_backtesting_frame(bars), fast, slow, long_only=False)["Equity Final [$]"]
    )


def backtesting_grid(bars: pd.DataFrame) -> None:
    from tests.backtest.reference import reference_backtest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = reference_backtest(_backtesting_frame(bars), long_only=False)
        bt.optimize(n1=GRID["fast"], n2=GRID["slow"], maximize="Equity Final [$]")


def iterrows_run(bars: pd.DataFrame, fast: int = FAST, slow: int = SLOW) -> float:
    """The seeds' per-row loop: same rules (next open, whole units, exclusive orders)."""
    frame = bars.assign(
        fast=bars["close"].rolling(fast).mean(), slow=bars["close"].rolling(slow).mean()
    )
    cash, units, entry = 10_000.0, 0.0, 0.0
    prev_fast = prev_slow = np.nan
    pending = 0.0
    equity = cash
    for _, row in frame.iterrows():
        if pending and np.sign(units) != pending:
            price = row["open"]
            if units:
                cash += units * (price - entry)
            units = pending * ((cash * 1.0) // price)
            entry = price
            pending = 0.0
        equity = cash + units * (row["close"] - entry)
        if prev_fast <= prev_slow and row["fast"] > row["slow"]:
            pending = 1.0
        elif prev_fast >= prev_slow and row["fast"] < row["slow"]:
            pending = -1.0
        prev_fast, prev_slow = row["fast"], row["slow"]
    return equity


@njit(cache=True)
def _fused_sma_cross(open_: np.ndarray, close: np.ndarray, fast: int, slow: int) -> float:
    """One pass: rolling sums, strict crosses and fills at the next open (the ceiling)."""
    n = close.shape[0]
    cash, units, entry = 10_000.0, 0.0, 0.0
    sum_fast = sum_slow = 0.0
    prev_fast = prev_slow = np.nan
    pending = 0.0
    equity = cash
    for i in range(n):
        if pending != 0.0:
            if units != 0.0:
                cash += units * (open_[i] - entry)
            units = pending * (cash // open_[i])
            entry = open_[i]
            pending = 0.0
        equity = cash + units * (close[i] - entry)
        sum_fast += close[i]
        sum_slow += close[i]
        if i >= fast:
            sum_fast -= close[i - fast]
        if i >= slow:
            sum_slow -= close[i - slow]
        if i >= slow - 1:
            f = sum_fast / fast
            s = sum_slow / slow
            have = 1.0 if units > 0 else (-1.0 if units < 0 else 0.0)
            if prev_fast <= prev_slow and f > s and have != 1.0:
                pending = 1.0
            elif prev_fast >= prev_slow and f < s and have != -1.0:
                pending = -1.0
            prev_fast, prev_slow = f, s
    return equity


# -- report -----------------------------------------------------------------------------------


def _rate(label: str, count: float, seconds: float, unit: str) -> float:
    rate = count / seconds
    shown = f"{rate:,.0f}" if rate >= 100 else f"{rate:.2f}"
    print(f"  {label:<34} {shown:>14} {unit}/s   ({seconds * 1e3:9.2f} ms)")
    return rate


def _ratio(ours: float, theirs: float, peer: str) -> None:
    print(f"  {'':<34} candleflow is {ours / theirs:,.0f}× {peer}")


def single(bars: pd.DataFrame, name: str, peers_repeats: int) -> None:
    n = len(bars)
    print(f"single backtest, SMA({FAST},{SLOW}) long/short, {name}: {n:,} bars")
    run_backtest(bars, "sma_cross", {"fast": FAST, "slow": SLOW})  # warm (compile / cache load)
    ours = _rate(
        "candleflow (indicators + result)",
        n,
        best_of(lambda: run_backtest(bars, "sma_cross", {"fast": FAST, "slow": SLOW}), 5),
        "candles",
    )
    bt = _rate(
        "backtesting.py", n, best_of(lambda: backtesting_run(bars), peers_repeats), "candles"
    )
    _ratio(ours, bt, "backtesting.py")
    it = _rate("pandas iterrows loop", n, best_of(lambda: iterrows_run(bars), 1), "candles")
    _ratio(ours, it, "iterrows")
    _vectorbt_single(bars, ours)


def _vectorbt_single(bars: pd.DataFrame, ours: float) -> None:
    try:
        import vectorbt as vbt  # type: ignore[import-not-found]
    except ImportError:
        print("  vectorbt not installed")
        return

    def run() -> None:
        close = bars["close"]
        fast = vbt.MA.run(close, FAST)
        slow = vbt.MA.run(close, SLOW)
        vbt.Portfolio.from_signals(
            close,
            fast.ma_crossed_above(slow),
            fast.ma_crossed_below(slow),
            price=bars["open"].shift(-1),
            init_cash=10_000,
        )

    run()  # its compile time is excluded
    vb = _rate("vectorbt (warm)", len(bars), best_of(run, 3), "candles")
    _ratio(ours, vb, "vectorbt")


def grid(bars: pd.DataFrame, name: str, with_backtesting: bool) -> None:
    cells = len(GRID["fast"]) * len(GRID["slow"])
    print(f"grid of {cells} SMA crosses (indicators included), {name}: {len(bars):,} bars")
    seconds = best_of(
        lambda: optimize(bars, "sma_cross", GRID, method="grid", objective="final_equity"), 3
    )
    ours = _rate("candleflow optimize(grid)", cells, seconds, "backtests")
    if with_backtesting:
        bt = _rate(
            "backtesting.py Backtest.optimize",
            cells,
            best_of(lambda: backtesting_grid(bars), 1),
            "backtests",
        )
        _ratio(ours, bt, "backtesting.py")
    sample = [(2, 30), (10, 60), (20, 120)]
    start = time.perf_counter()
    for fast, slow in sample:
        iterrows_run(bars, fast, slow)
    it = _rate(
        f"pandas iterrows (rate of {len(sample)})",
        len(sample),
        time.perf_counter() - start,
        "backtests",
    )
    _ratio(ours, it, "iterrows")
    try:
        import vectorbt  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        print("  vectorbt not installed")


def ceiling(bars: pd.DataFrame) -> None:
    n = len(bars)
    print(f"kernel vs a fused compiled SMA-cross loop (one core), {n:,} bars")
    prepared = PreparedBars.from_frame(bars)
    target = get_strategy("sma_cross").targets(prepared.cache, {"fast": FAST, "slow": SLOW})
    config = BacktestConfig(chunk_size=n)
    simulate(prepared.open, prepared.close, target, config)
    kernel = _rate(
        "candleflow kernel (targets given)",
        n,
        best_of(lambda: simulate(prepared.open, prepared.close, target, config), 20),
        "candles",
    )
    _fused_sma_cross(prepared.open, prepared.close, FAST, SLOW)
    fused = _rate(
        "fused SMA-cross loop (ceiling)",
        n,
        best_of(lambda: _fused_sma_cross(prepared.open, prepared.close, FAST, SLOW), 20),
        "candles",
    )
    print(f"  {'':<34} kernel runs at {kernel / fused:.0%} of the ceiling")


def _interleaved(
    first: Callable[[], Any], second: Callable[[], Any], rounds: int
) -> tuple[float, float]:
    """Best times of two functions run alternately, so drift of a shared machine hits both."""
    first()
    second()
    a = b = float("inf")
    for _ in range(rounds):
        a = min(a, best_of(first, 1))
        b = min(b, best_of(second, 1))
    return a, b


def progress_overhead(bars: pd.DataFrame) -> None:
    n = len(bars)
    chunk = BacktestConfig().chunk_size
    print(f"progress machinery (tracker + ListSink, chunks of {chunk:,}), {n:,} bars")
    prepared = PreparedBars.from_frame(bars, IndicatorCache(bars["close"].to_numpy()))
    params = {"fast": FAST, "slow": SLOW}

    def plain() -> None:
        run_backtest(prepared, "sma_cross", params)

    def tracked() -> None:
        run_backtest(prepared, "sma_cross", params, progress=ProgressTracker("b", [ListSink()]))

    base, with_tracker = _interleaved(plain, tracked, 25)
    print(
        f"  run_backtest without tracker {base * 1e3:.2f} ms, with {with_tracker * 1e3:.2f} ms: "
        f"{100 * (with_tracker / base - 1):+.2f} % (A/B, noise included)"
    )

    def machinery() -> None:
        # Exactly what a tracked run adds: a tracker, a candle span, one advance per chunk.
        tracker = ProgressTracker("b", [ListSink()])
        with tracker.stage("backtest", total=n, unit="Candle") as span:
            for _ in range(0, n, chunk):
                tracker.cancel_token.cancelled  # noqa: B018 - the per-chunk poll
                span.advance(chunk)

    cost = min(best_of(machinery, 200) for _ in range(3))
    print(
        f"  the machinery alone: {cost * 1e6:.1f} µs per run = {100 * cost / base:.3f} % of the "
        "run (budget < 1 %)"
    )
    target = get_strategy("sma_cross").targets(prepared.cache, params)
    one, chunked = BacktestConfig(chunk_size=n), BacktestConfig()
    k_base, k_tracked = _interleaved(
        lambda: simulate(prepared.open, prepared.close, target, one),
        lambda: simulate(
            prepared.open,
            prepared.close,
            target,
            chunked,
            progress=ProgressTracker("b", [ListSink()]),
        ),
        25,
    )
    print(
        f"  kernel alone: {k_base * 1e3:.2f} ms in one call, {k_tracked * 1e3:.2f} ms chunked "
        f"with progress ({100 * (k_tracked / k_base - 1):+.2f} %)"
    )


def main() -> None:
    warnings.filterwarnings("ignore")
    large = synthetic(100_000)
    small = eurusd()
    single(small, "EURUSD 1h", peers_repeats=3)
    single(large, "synthetic 1m", peers_repeats=1)
    grid(small, "EURUSD 1h", with_backtesting=True)
    grid(large, "synthetic 1m", with_backtesting=False)
    ceiling(synthetic(1_000_000))
    progress_overhead(synthetic(1_000_000))


if __name__ == "__main__":
    main()
