"""The backtest engine: a numba-compiled fill kernel run over chunks of candles with carried state.

Rules of the simulation (chosen to equal backtesting.py's ``Backtest(..., exclusive_orders=True)``
with market orders, ``trade_on_close=False``, ``hedging=False``):

* ``target[i]`` (see :mod:`candleflow.backtest.strategies`) is decided at the close of bar ``i``
  and filled at the **open of bar i + 1**; an instruction on the last bar is never filled.
  Instructions equal to the current side are ignored (unless ``reenter``). A reversal closes
  the old position and opens the new one at the same open.
* **Slippage** moves every fill against the trader by that fraction of the open (a buy pays
  ``open × (1 + slippage)``, a sell gets ``open × (1 − slippage)``). backtesting.py's ``spread``
  differs: it only adjusts the entry price.
* **Commission** is a fraction of each fill's notional, charged at entry (on the slipped price) and
  again at exit, as backtesting.py does since 0.4.
* **Sizing**: a new position uses ``size`` × the equity (= cash, the old position being closed),
  in units of ``equity × size / (fill price + open × commission)`` — the commission is reserved
  so the position can be paid for — floored to whole units when ``whole_units`` (an order for 0
  units is dropped, like backtesting.py's "insufficient margin" cancel).
* Equity is ``cash + units × close − units × entry price`` at every close (the open position is
  marked to market; its exit commission is not deducted). When it reaches ≤ 0 the position is
  closed at that close and the account stays at 0 (backtesting.py's out-of-money rule).

The kernel runs ``chunk_size`` candles per call; between calls the driver advances a progress
span (unit "Candle") and polls the cancel token, so both cost one Python call per chunk.

Why one module over 600 lines: the fill step, the compiled kernel and its chunk driver are one
simulation whose rules must read together (the fused grid inlines the same fill step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from numba import njit

from candleflow.backtest.metrics import Metrics, compute_metrics
from candleflow.backtest.strategies import (
    FloatArray,
    IndicatorCache,
    ParamValue,
    StrategySpec,
    get_strategy,
)
from candleflow.errors import Cancelled, InvalidRequest
from candleflow.progress import CancelToken, ProgressTracker, Span
from candleflow.timeframes import Timeframe, parse_timeframe

__all__ = [
    "TRADE_COLUMNS",
    "BacktestConfig",
    "BacktestResult",
    "OpenPosition",
    "PreparedBars",
    "backtest_metrics",
    "run_backtest",
    "simulate",
]

# State carried between chunks (a float64 vector so one array crosses the numba boundary).
_CASH, _UNITS, _ENTRY, _ENTRY_BAR, _ENTRY_FEE, _N_TRADES, _DEAD, _EXPOSED = range(8)
_STATE_SIZE = 8
#: Columns of the trade array and of ``BacktestResult.trades`` (bars are positions in ``bars``).
TRADE_COLUMNS: tuple[str, ...] = (
    "entry_bar",
    "exit_bar",
    "size",
    "entry_price",
    "exit_price",
    "pnl",
    "return",
    "commission",
)
_N_TRADE_COLUMNS = len(TRADE_COLUMNS)


# -- the fill step -------------------------------------------------------------------------------
# The rules above in one place: the engine's kernel and the fused grid (candleflow.backtest.grid)
# both inline these (numba IR inlining, so each kernel keeps the account in registers).
# numba's cache does not follow imports: after changing them, touch grid.py (or clear its
# __pycache__) or the grid's cached kernel keeps the old rule (tests/backtest/test_grid.py fails).


@njit(inline="always")
def side(x: float) -> float:  # pragma: no cover - compiled
    """The sign of ``x``: 1.0, -1.0 or 0.0 (long, short, flat)."""
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


@njit(inline="always")
def exit_position(
    units: float, entry: float, entry_fee: float, price: float, commission: float
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """Closing ``units`` (entered at ``entry``, paying ``entry_fee``) at ``price``: the cash it
    returns (P&L less the exit fee), the trade's net P&L (less both fees), and the exit fee."""
    gain = units * (price - entry)
    fee = abs(units) * price * commission
    return gain - fee, gain - (fee + entry_fee), fee


@njit(inline="always")
def fill_at_open(
    want: float,
    price: float,
    cash: float,
    units: float,
    entry: float,
    entry_fee: float,
    commission: float,
    slippage: float,
    size: float,
    whole_units: bool,
    reenter: bool,
) -> tuple[float, float, float, float, bool, float, float, float, bool]:  # pragma: no cover
    """An instruction to hold ``want`` (1.0 long, -1.0 short, 0.0 flat) filled at the open
    ``price`` by an account of ``cash`` holding ``units`` entered at ``entry`` (module rules).

    Returns ``(cash, units, entry, entry_fee, closed, exit_price, net_pnl, exit_fee, opened)``:
    the account after the fill; whether a position was closed, at what price, with what net P&L
    and exit fee; and whether one was opened (at the new ``entry``).
    """
    have = side(units)
    closed = False
    opened = False
    exit_price = 0.0
    net_pnl = 0.0
    exit_fee = 0.0
    if want != have or (reenter and want != 0.0):
        if have != 0.0:
            exit_price = price * (1.0 - have * slippage)
            returned, net_pnl, exit_fee = exit_position(units, entry, entry_fee, exit_price,
                                                        commission)  # fmt: skip
            cash += returned
            closed = True
            units = 0.0
            entry = 0.0
            entry_fee = 0.0
        if want != 0.0:
            fill = price * (1.0 + want * slippage)
            budget = max(cash, 0.0) * size
            per_unit = fill + price * commission
            amount = budget // per_unit if whole_units else budget / per_unit
            if amount > 0.0:
                entry_fee = amount * fill * commission
                cash -= entry_fee
                units = want * amount
                entry = fill
                opened = True
    return cash, units, entry, entry_fee, closed, exit_price, net_pnl, exit_fee, opened


@njit(inline="always")
def mark_at_close(
    price: float, cash: float, units: float, entry: float, entry_fee: float, commission: float
) -> tuple[float, bool, float, float]:  # pragma: no cover - compiled
    """The equity at the close ``price`` and the out-of-money rule: ``(equity, wiped, net_pnl,
    exit_fee)``. At equity ≤ 0 the account is wiped out (equity 0; an open position is closed
    at ``price`` with that net P&L and exit fee) and stays at 0."""
    value = cash + (price * units - units * entry)
    if value <= 0.0:
        net_pnl = 0.0
        exit_fee = 0.0
        if units != 0.0:
            _, net_pnl, exit_fee = exit_position(units, entry, entry_fee, price, commission)
        return 0.0, True, net_pnl, exit_fee
    return value, False, 0.0, 0.0


@njit(inline="always")
def _record_trade(
    trades: FloatArray,
    k: int,
    entry_bar: float,
    exit_bar: int,
    units: float,
    entry: float,
    exit_price: float,
    net_pnl: float,
    fees: float,
) -> int:  # pragma: no cover - compiled
    trades[k, 0] = entry_bar
    trades[k, 1] = exit_bar
    trades[k, 2] = units
    trades[k, 3] = entry
    trades[k, 4] = exit_price
    trades[k, 5] = net_pnl
    trades[k, 6] = net_pnl / (abs(units) * entry)
    trades[k, 7] = fees
    return k + 1


@njit(cache=True, nogil=True)
def _simulate_chunk(
    open_: FloatArray,
    close: FloatArray,
    target: FloatArray,
    begin: int,
    lo: int,
    hi: int,
    state: FloatArray,
    equity: FloatArray,
    trades: FloatArray,
    commission: float,
    slippage: float,
    size: float,
    whole_units: bool,
    reenter: bool,
) -> None:  # pragma: no cover - compiled
    """Bars ``lo``..``hi - 1`` of a run that started flat at ``begin`` (module rules); the
    account is read from ``state`` and written back at the end."""
    cash = state[_CASH]
    units = state[_UNITS]
    entry = state[_ENTRY]
    entry_bar = state[_ENTRY_BAR]
    entry_fee = state[_ENTRY_FEE]
    n_trades = int(state[_N_TRADES])
    dead = state[_DEAD] != 0.0
    exposed = state[_EXPOSED]
    for i in range(lo, hi):
        if dead:
            equity[i] = 0.0
            continue
        if i > begin and not np.isnan(target[i - 1]):
            held, held_entry, held_fee = units, entry, entry_fee
            cash, units, entry, entry_fee, closed, exit_price, net_pnl, exit_fee, opened = (
                fill_at_open(side(target[i - 1]), open_[i], cash, units, entry, entry_fee,
                             commission, slippage, size, whole_units, reenter)
            )  # fmt: skip
            if closed:
                n_trades = _record_trade(trades, n_trades, entry_bar, i, held, held_entry,
                                         exit_price, net_pnl, exit_fee + held_fee)  # fmt: skip
            if opened:
                entry_bar = i
        value, wiped, net_pnl, exit_fee = mark_at_close(close[i], cash, units, entry, entry_fee,
                                                        commission)  # fmt: skip
        if wiped:
            if units != 0.0:
                n_trades = _record_trade(trades, n_trades, entry_bar, i, units, entry, close[i],
                                         net_pnl, exit_fee + entry_fee)  # fmt: skip
            cash = 0.0
            units = 0.0
            entry = 0.0
            entry_fee = 0.0
            dead = True
        equity[i] = value
        if units != 0.0:
            exposed += 1.0
    state[_CASH] = cash
    state[_UNITS] = units
    state[_ENTRY] = entry
    state[_ENTRY_BAR] = entry_bar
    state[_ENTRY_FEE] = entry_fee
    state[_N_TRADES] = n_trades
    state[_DEAD] = 1.0 if dead else 0.0
    state[_EXPOSED] = exposed


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """Account and execution settings of a backtest (see the module docstring for the rules).

    ``cash`` > 0; ``commission`` and ``slippage`` are fractions in [0, 0.1); ``size`` is the
    fraction of equity committed per position, in (0, 1]; ``whole_units`` floors positions to
    whole units; ``reenter`` makes a same-side instruction close the position and open a fresh
    one sized on the current equity (what backtesting.py's ``exclusive_orders`` does) instead of
    being ignored; ``chunk_size`` is the number of candles between progress/cancel checks;
    ``periods_per_year`` overrides the Sharpe annualisation (see :mod:`.metrics`).
    """

    cash: float = 10_000.0
    commission: float = 0.0
    slippage: float = 0.0
    size: float = 1.0
    whole_units: bool = True
    reenter: bool = False
    chunk_size: int = 131_072
    periods_per_year: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cash) and self.cash > 0):
            raise InvalidRequest(f"cash={self.cash!r} is invalid: use a positive amount")
        for name in ("commission", "slippage"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 0.1):
                raise InvalidRequest(
                    f"{name}={value!r} is invalid: use a fraction in [0, 0.1), e.g. 0.001 = 0.1 %"
                )
        if not (math.isfinite(self.size) and 0.0 < self.size <= 1.0):
            raise InvalidRequest(
                f"size={self.size!r} is invalid: use the fraction of equity per position, "
                "0 < size ≤ 1"
            )
        if self.chunk_size < 1:
            raise InvalidRequest(f"chunk_size={self.chunk_size!r} is invalid: use ≥ 1 candles")
        if self.periods_per_year is not None and not (
            math.isfinite(self.periods_per_year) and self.periods_per_year > 0
        ):
            raise InvalidRequest(
                f"periods_per_year={self.periods_per_year!r} is invalid: use a positive number"
            )


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """The position still open at the end: signed ``size`` in units, marked at the last close."""

    entry_bar: int
    entry_time: pd.Timestamp | None
    size: float
    entry_price: float
    unrealized_pnl: float


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """What one backtest produced.

    ``equity`` and ``position`` (Series indexed like the simulated bars) and ``trades`` (the
    closed trades: :data:`TRADE_COLUMNS` plus ``entry_time``/``exit_time``) are built on first
    access from the kernel's arrays, so a run that only needs ``metrics`` pays nothing for them.
    ``cancelled`` is True for the partial result carried by :class:`~candleflow.errors.Cancelled`.
    """

    strategy: str
    params: Mapping[str, ParamValue]
    config: BacktestConfig
    metrics: Metrics
    open_position: OpenPosition | None
    index: pd.Index = field(repr=False)
    equity_values: FloatArray = field(repr=False)
    start: int = field(repr=False)
    trade_values: FloatArray = field(repr=False)
    bar_index: pd.Index = field(repr=False)
    cancelled: bool = False

    @cached_property
    def equity(self) -> pd.Series:
        return pd.Series(self.equity_values, index=self.index, name="equity", copy=False)

    @cached_property
    def position(self) -> pd.Series:
        """Units held at each close, rebuilt from the trades (entry bar ≤ bar < exit bar)."""
        n = len(self.index)
        change = np.zeros(n + 1)
        rows = self.trade_values
        np.add.at(change, rows[:, 0].astype(np.int64) - self.start, rows[:, 2])
        np.add.at(change, rows[:, 1].astype(np.int64) - self.start, -rows[:, 2])
        if self.open_position is not None:
            change[self.open_position.entry_bar - self.start] += self.open_position.size
        return pd.Series(np.cumsum(change[:n]), index=self.index, name="position", copy=False)

    @cached_property
    def trades(self) -> pd.DataFrame:
        rows = self.trade_values
        entry = rows[:, 0].astype(np.int64)
        exit_ = rows[:, 1].astype(np.int64)
        columns: dict[str, object] = {
            "entry_bar": entry,
            "exit_bar": exit_,
            "entry_time": self.bar_index[entry],
            "exit_time": self.bar_index[exit_],
        }
        for k, name in enumerate(TRADE_COLUMNS[2:], start=2):
            columns[name] = rows[:, k]
        return pd.DataFrame(columns)


@dataclass(frozen=True, slots=True)
class _Simulation:
    equity: FloatArray
    trades: FloatArray
    state: FloatArray
    done: int  # bars simulated, counted from `begin`


def _open_span(progress: Span | ProgressTracker | None, total: int) -> Span | None:
    if progress is None:
        return None
    if isinstance(progress, ProgressTracker):
        return progress.stage("backtest", total=total, unit="Candle")
    return progress.child("backtest", total=total, unit="Candle")


def simulate(
    open_: FloatArray,
    close: FloatArray,
    target: FloatArray,
    config: BacktestConfig,
    *,
    begin: int = 0,
    end: int | None = None,
    progress: Span | ProgressTracker | None = None,
    cancel_token: CancelToken | None = None,
    on_candles: Callable[[int], None] | None = None,
) -> _Simulation:
    """Run the kernel over bars ``begin``..``end - 1`` in chunks; raises ``Cancelled`` (with the
    partial :class:`_Simulation` as ``partial``) when the token is set at a chunk boundary.
    ``on_candles(n)`` is told after each chunk how many candles it simulated (a caller that
    keeps its own count, such as the optimizer's per-evaluation span)."""
    n = open_.shape[0]
    stop = n if end is None else end
    total = stop - begin
    state = np.zeros(_STATE_SIZE)
    state[_CASH] = config.cash
    equity = np.empty(n)
    events = int(np.count_nonzero(~np.isnan(target[begin:stop])))
    trades = np.empty((events + 1, _N_TRADE_COLUMNS))
    args = (config.commission, config.slippage, config.size, config.whole_units, config.reenter)
    span = _open_span(progress, total)
    if span is None and cancel_token is None and on_candles is None:
        _simulate_chunk(open_, close, target, begin, begin, stop, state, equity, trades, *args)
        return _Simulation(equity, trades, state, total)
    if cancel_token is None and span is not None:
        cancel_token = span.tracker.cancel_token
    chunk = config.chunk_size
    with span if span is not None else _NoSpan():
        for lo in range(begin, stop, chunk):
            if cancel_token is not None and cancel_token.cancelled:
                partial = _Simulation(equity, trades, state, lo - begin)
                raise Cancelled(cancel_token.reason or "cancelled", partial=partial)
            hi = min(lo + chunk, stop)
            _simulate_chunk(open_, close, target, begin, lo, hi, state, equity, trades, *args)
            if span is not None:
                span.advance(hi - lo)
            if on_candles is not None:
                on_candles(hi - lo)
    return _Simulation(equity, trades, state, total)


class _NoSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass(frozen=True, slots=True, eq=False)
class PreparedBars:
    """A bar frame checked once and split into the arrays the kernel reads, with its indicator
    cache; build it with :meth:`from_frame` and reuse it for many backtests of the same bars."""

    open: FloatArray
    close: FloatArray
    index: pd.Index
    cache: IndicatorCache

    @classmethod
    def from_frame(cls, bars: pd.DataFrame, cache: IndicatorCache | None = None) -> PreparedBars:
        missing = [c for c in ("open", "close") if c not in bars.columns]
        if missing:
            raise InvalidRequest(
                f"bars lack column(s) {', '.join(missing)}: pass a bar frame with "
                "open/high/low/close"
            )
        if len(bars) < 2:
            raise InvalidRequest(f"a backtest needs at least 2 bars, got {len(bars)}")
        open_ = np.ascontiguousarray(bars["open"].to_numpy(dtype=np.float64))
        close = np.ascontiguousarray(bars["close"].to_numpy(dtype=np.float64))
        for prices in (open_, close):
            if not np.isfinite(prices).all() or (prices <= 0).any():
                raise InvalidRequest(
                    "some open/close prices are missing, infinite or ≤ 0: strip those rows with "
                    "bars.dropna() (and check the source) before backtesting"
                )
        if cache is None:
            cache = IndicatorCache(close)
        elif cache.close.shape[0] != len(bars):
            raise InvalidRequest(
                f"indicator cache holds {cache.close.shape[0]} bars, not {len(bars)}: "
                "build it from these bars"
            )
        return cls(open_, close, bars.index, cache)

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def bar_range(self, start: int, stop: int | None) -> tuple[int, int]:
        n = len(self)
        end = n if stop is None else stop
        if not 0 <= start < end <= n:
            raise InvalidRequest(
                f"bar range start={start}, stop={stop} is invalid for {n} bars: "
                f"use 0 ≤ start < stop ≤ {n}"
            )
        return start, end


def _metrics(
    sim: _Simulation,
    bars: PreparedBars,
    config: BacktestConfig,
    begin: int,
    timeframe: Timeframe | None,
) -> Metrics:
    end = begin + sim.done
    return compute_metrics(
        sim.equity[begin:end],
        sim.trades[: int(sim.state[_N_TRADES]), 5],
        exposed_bars=int(sim.state[_EXPOSED]),
        initial_equity=config.cash,
        open_trades=1 if sim.state[_UNITS] != 0.0 and sim.done > 0 else 0,
        index=bars.index[begin:end],
        timeframe=timeframe,
        periods_per_year=config.periods_per_year,
    )


def _result(
    sim: _Simulation,
    bars: PreparedBars,
    spec: StrategySpec,
    params: Mapping[str, ParamValue],
    config: BacktestConfig,
    begin: int,
    timeframe: Timeframe | None,
    cancelled: bool,
) -> BacktestResult:
    end = begin + sim.done
    units = float(sim.state[_UNITS])
    open_position = None
    if units != 0.0 and sim.done > 0:
        entry_bar = int(sim.state[_ENTRY_BAR])
        entry = float(sim.state[_ENTRY])
        open_position = OpenPosition(
            entry_bar=entry_bar,
            entry_time=bars.index[entry_bar] if isinstance(bars.index, pd.DatetimeIndex) else None,
            size=units,
            entry_price=entry,
            unrealized_pnl=units * (float(bars.close[end - 1]) - entry),
        )
    return BacktestResult(
        strategy=spec.name,
        params=dict(params),
        config=config,
        metrics=_metrics(sim, bars, config, begin, timeframe),
        open_position=open_position,
        index=bars.index[begin:end],
        equity_values=sim.equity[begin:end],
        start=begin,
        trade_values=sim.trades[: int(sim.state[_N_TRADES])],
        bar_index=bars.index,
        cancelled=cancelled,
    )


def _run(
    bars: PreparedBars,
    spec: StrategySpec,
    params: Mapping[str, object] | None,
    config: BacktestConfig | None,
    timeframe: str | Timeframe | None,
    start: int,
    stop: int | None,
    progress: Span | ProgressTracker | None,
    cancel_token: CancelToken | None,
    details: bool,
    on_candles: Callable[[int], None] | None = None,
) -> BacktestResult | Metrics:
    resolved = spec.resolve(params)
    cfg = config if config is not None else BacktestConfig()
    begin, end = bars.bar_range(start, stop)
    tf = parse_timeframe(timeframe) if timeframe is not None else None
    target = spec.signals(bars.cache, resolved)
    try:
        sim = simulate(
            bars.open,
            bars.close,
            target,
            cfg,
            begin=begin,
            end=end,
            progress=progress,
            cancel_token=cancel_token,
            on_candles=on_candles,
        )
    except Cancelled as exc:
        partial = exc.partial
        if isinstance(partial, _Simulation) and partial.done > 0:
            exc.partial = _result(partial, bars, spec, resolved, cfg, begin, tf, cancelled=True)
        else:
            exc.partial = None
        raise
    if details:
        return _result(sim, bars, spec, resolved, cfg, begin, tf, cancelled=False)
    return _metrics(sim, bars, cfg, begin, tf)


def backtest_metrics(
    bars: PreparedBars,
    strategy: str | StrategySpec,
    params: Mapping[str, object] | None = None,
    *,
    config: BacktestConfig | None = None,
    timeframe: str | Timeframe | None = None,
    start: int = 0,
    stop: int | None = None,
    progress: Span | ProgressTracker | None = None,
    cancel_token: CancelToken | None = None,
    on_candles: Callable[[int], None] | None = None,
) -> Metrics:
    """Like :func:`run_backtest` but on :class:`PreparedBars` and returning only the metrics —
    no equity Series or trade table is built (the optimizer's inner loop). ``on_candles(n)``
    is told the candles of each chunk as it is simulated (see :func:`simulate`)."""
    result = _run(
        bars,
        get_strategy(strategy),
        params,
        config,
        timeframe,
        start,
        stop,
        progress,
        cancel_token,
        details=False,
        on_candles=on_candles,
    )
    assert isinstance(result, Metrics)  # details=False
    return result


def run_backtest(
    bars: pd.DataFrame | PreparedBars,
    strategy: str | StrategySpec = "sma_cross",
    params: Mapping[str, object] | None = None,
    *,
    config: BacktestConfig | None = None,
    cache: IndicatorCache | None = None,
    timeframe: str | Timeframe | None = None,
    start: int = 0,
    stop: int | None = None,
    progress: Span | ProgressTracker | None = None,
    cancel_token: CancelToken | None = None,
) -> BacktestResult:
    """Backtest ``strategy`` with ``params`` on ``bars`` (a bar frame, :mod:`candleflow.models`).

    Indicators are computed on all of ``bars`` (they look only backwards) and taken from
    ``cache`` when given, so repeated runs share them; the account starts flat at bar ``start``
    and the simulation ends at bar ``stop - 1`` (an in-sample / out-of-sample split runs the same
    bars with two ranges). ``progress`` is a tracker (a "backtest" stage is opened) or a span (a
    child span is opened), counting candles. Cancellation (``cancel_token``, or the tracker's)
    raises :class:`~candleflow.errors.Cancelled` at the next chunk boundary with the partial
    :class:`BacktestResult` (``cancelled=True``) as ``partial``.
    """
    spec = get_strategy(strategy)
    prepared = bars if isinstance(bars, PreparedBars) else PreparedBars.from_frame(bars, cache)
    result = _run(
        prepared,
        spec,
        params,
        config,
        timeframe,
        start,
        stop,
        progress,
        cancel_token,
        details=True,
    )
    assert isinstance(result, BacktestResult)  # details=True
    return result
