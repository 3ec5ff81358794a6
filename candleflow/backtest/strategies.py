"""Strategies: bars (and optional precomputed features) in, target-position events out.

A strategy is a :class:`StrategySpec` — its parameters with types, defaults and documented legal
values, a validator that raises :class:`~candleflow.errors.InvalidRequest`, and a vectorised
function producing a float64 *target* array aligned with the bars. ``target[i]`` is decided at the
close of bar ``i`` and is acted on by the engine at the open of bar ``i + 1``:

* ``+1`` — be long, ``-1`` — be short, ``0`` — be flat, ``NaN`` — no instruction (keep whatever
  position is held).
* **Repeated same-side signals are ignored while already in that position**: a ``+1`` while long
  (or ``-1`` while short, ``0`` while flat) does nothing — no new trade, no resizing (unless
  ``BacktestConfig(reenter=True)``). A ``+1`` while short closes the short and opens a long at
  the same open.

Crosses are **strict**, the same rule for every strategy here: ``a`` crosses *above* ``b`` at bar
``i`` when ``a[i-1] <= b[i-1]`` and ``a[i] > b[i]``; it crosses *below* when ``a[i-1] >= b[i-1]``
and ``a[i] < b[i]``. Equal values are therefore never a cross by themselves: a fast average that
touches the slow one and turns back gives no signal, and one that goes below → equal → above
crosses once, on the bar where it becomes strictly above. (backtesting.py's ``crossover`` needs
``a[i-1] < b[i-1]``, so it misses a cross that passes through an exact tie and later sees a second
cross the same way, on which it closes and re-opens. On EURUSD with SMA(10, 20) no tie occurs; in
a 10×10 grid of windows 9 of 45 cells hold one, and the tests reproduce all 45 cells with that
rule written out and ``BacktestConfig(reenter=True)``.) NaN (indicator warm-up) is never a cross.

Indicators come from an :class:`IndicatorCache` so an optimisation computes each window once per
grid; SMAs are computed exactly as pandas' rolling mean (bit-identical to backtesting.py's ``SMA``
helper), because crosses are decided by float comparisons and a last-bit difference could flip a
near-tie.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from numba import njit

from candleflow.errors import InvalidRequest

__all__ = [
    "STRATEGIES",
    "FloatArray",
    "IndicatorCache",
    "Param",
    "StrategySpec",
    "cross_targets",
    "get_strategy",
]

FloatArray = npt.NDArray[np.float64]
ParamValue = int | float | bool


@dataclass(frozen=True, slots=True)
class Param:
    """One strategy parameter: ``kind`` is ``int``, ``float`` or ``bool``; bounds are inclusive."""

    name: str
    kind: type
    default: ParamValue
    doc: str
    low: float | None = None
    high: float | None = None

    def coerce(self, value: object, strategy: str) -> ParamValue:
        """``value`` as this parameter's type, within bounds; strings like "10" or "true" work."""
        where = f"strategy {strategy!r} parameter {self.name}={value!r}"
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    text = value.strip().lower()
                    if text not in {"true", "false", "1", "0", "yes", "no"}:
                        raise ValueError(text)
                    return text in {"true", "1", "yes"}
                if isinstance(value, bool | int | np.integer | np.bool_):
                    return bool(value)
                raise ValueError(value)
            if self.kind is int:
                number = float(value) if isinstance(value, str) else value
                if isinstance(number, bool) or not float(number).is_integer():  # type: ignore[arg-type]
                    raise ValueError(value)
                result: ParamValue = int(number)  # type: ignore[call-overload]
            else:
                result = float(value)  # type: ignore[arg-type]
                if not np.isfinite(result):
                    raise ValueError(value)
        except (TypeError, ValueError):
            raise InvalidRequest(f"{where} is not a valid {self.kind.__name__}") from None
        if (self.low is not None and result < self.low) or (
            self.high is not None and result > self.high
        ):
            raise InvalidRequest(
                f"{where} is out of range: use {self.low} ≤ {self.name} ≤ {self.high}"
            )
        return result


class IndicatorCache:
    """Indicators of one bar series, each computed once and shared (thread-safe, read-mostly).

    Keys are ``"sma:10"``, ``"rsi:14"``, ``"std:20"`` (population standard deviation of the
    close over 20 bars). ``seed`` may hand in precomputed features under the same keys (arrays of
    the bars' length); values summed in another order (e.g. the feature store's) can differ in
    the last bit and so decide an exact tie differently.
    """

    def __init__(
        self, close: npt.ArrayLike, seed: Mapping[str, npt.ArrayLike] | None = None
    ) -> None:
        self.close: FloatArray = np.ascontiguousarray(close, dtype=np.float64)
        self._values: dict[str, FloatArray] = {}
        self._lock = threading.Lock()
        for key, values in (seed or {}).items():
            array = np.ascontiguousarray(values, dtype=np.float64)
            if array.shape != self.close.shape:
                raise InvalidRequest(
                    f"feature {key!r} has {array.shape[0]} values for {self.close.shape[0]} bars; "
                    "compute features on the same bars"
                )
            self._values[key] = array

    def __len__(self) -> int:
        return len(self._values)

    def _get(self, key: str, compute: Callable[[], FloatArray]) -> FloatArray:
        values = self._values.get(key)
        if values is None:
            values = compute()  # outside the lock: two threads may compute it, both get equal
            with self._lock:
                values = self._values.setdefault(key, values)
        return values

    def sma(self, window: int) -> FloatArray:
        return self._get(f"sma:{window}", lambda: _rolling_mean(self.close, window))

    def std(self, window: int) -> FloatArray:
        return self._get(
            f"std:{window}", lambda: _rolling(self.close, window).std(ddof=0).to_numpy()
        )

    def rsi(self, window: int) -> FloatArray:
        return self._get(f"rsi:{window}", lambda: _wilder_rsi(self.close, window))


def _rolling(close: FloatArray, window: int) -> pd.api.typing.Rolling[pd.Series]:
    return pd.Series(close).rolling(window)


@njit(cache=True, nogil=True)
def _rolling_mean(values: FloatArray, window: int) -> FloatArray:  # pragma: no cover - compiled
    """pandas' ``Series.rolling(window).mean()``, bit for bit (tests compare them).

    pandas keeps a running sum with separate Kahan compensations for the values entering and
    leaving the window, and returns the value itself over a run of equal values; crosses compare
    these floats, so a last-bit difference from backtesting.py's SMA could flip a near-tie.
    """
    n = values.shape[0]
    out = np.full(n, np.nan)
    nobs = 0
    negatives = 0
    total = 0.0
    comp_add = 0.0
    comp_remove = 0.0
    same = 0
    previous = np.nan
    for i in range(n):
        if i >= window:
            old = values[i - window]
            if not np.isnan(old):
                nobs -= 1
                y = -old - comp_remove
                t = total + y
                comp_remove = t - total - y
                total = t
                if np.signbit(old):
                    negatives -= 1
        value = values[i]
        if not np.isnan(value):
            nobs += 1
            y = value - comp_add
            t = total + y
            comp_add = t - total - y
            total = t
            if np.signbit(value):
                negatives += 1
            same = same + 1 if value == previous else 1
            previous = value
        if nobs >= window:
            mean = total / nobs
            if same >= nobs:
                mean = previous
            elif (negatives == 0 and mean < 0.0) or (negatives == nobs and mean > 0.0):
                mean = 0.0  # a sum of same-signed values cannot change sign
            out[i] = mean
    return out


@njit(cache=True, nogil=True)
def _wilder_rsi(close: FloatArray, window: int) -> FloatArray:  # pragma: no cover - compiled
    """Wilder's RSI: the first average is the simple mean of ``window`` changes, then
    ``avg = (avg * (window - 1) + x) / window``; 100 when there are no losses (50 if flat)."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n <= window:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(1, window + 1):
        change = close[i] - close[i - 1]
        if change > 0:
            gain += change
        else:
            loss -= change
    gain /= window
    loss /= window
    for i in range(window, n):
        if i > window:
            change = close[i] - close[i - 1]
            gain = (gain * (window - 1) + max(change, 0.0)) / window
            loss = (loss * (window - 1) + max(-change, 0.0)) / window
        if loss == 0.0:
            out[i] = 100.0 if gain > 0.0 else 50.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + gain / loss)
    return out


def cross_targets(above: FloatArray, below: FloatArray, *, up: float, down: float) -> FloatArray:
    """Target events from the strict crosses of ``above`` over/under ``below`` (module rule).

    Where ``above`` crosses above ``below`` the target is ``up``; where it crosses below, ``down``;
    elsewhere NaN. Either operand may be a scalar broadcast array.
    """
    a, b = np.broadcast_arrays(above, below)
    target = np.full(a.shape[0], np.nan)
    with np.errstate(invalid="ignore"):
        prev_a, prev_b, cur_a, cur_b = a[:-1], b[:-1], a[1:], b[1:]
        crossed_up = (prev_a <= prev_b) & (cur_a > cur_b)
        crossed_down = (prev_a >= prev_b) & (cur_a < cur_b)
    target[1:][crossed_up] = up
    target[1:][crossed_down] = down
    return target


Signals = Callable[[IndicatorCache, Mapping[str, Any]], FloatArray]
Check = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """A named strategy: documented parameters, a validator and a vectorised target function."""

    name: str
    doc: str
    params: tuple[Param, ...]
    signals: Signals
    check: Check

    def resolve(self, params: Mapping[str, object] | None = None) -> dict[str, ParamValue]:
        """Defaults filled in, values coerced and validated; unknown names raise InvalidRequest."""
        given = dict(params or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InvalidRequest(
                f"strategy {self.name!r} has no parameter {', '.join(unknown)}: "
                f"use {', '.join(known)}"
            )
        resolved = {
            name: p.coerce(given[name], self.name) if name in given else p.default
            for name, p in known.items()
        }
        self.check(resolved)
        return resolved

    def parse_params(self, text: str) -> dict[str, ParamValue]:
        """``"fast=10,slow=20"`` → resolved parameters (the CLI's ``--params``)."""
        pairs: dict[str, object] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise InvalidRequest(
                    f"malformed parameter {item!r} for strategy {self.name!r}: use name=value, "
                    "e.g. 'fast=10,slow=20'"
                )
            pairs[name.strip()] = value.strip()
        return self.resolve(pairs)

    def targets(self, cache: IndicatorCache, params: Mapping[str, object]) -> FloatArray:
        """The target array for validated ``params`` (see the module docstring)."""
        return self.signals(cache, self.resolve(params))

    def describe(self) -> str:
        lines = [f"{self.name}: {self.doc}"]
        lines += [
            f"  {p.name} ({p.kind.__name__}, default {p.default}): {p.doc}" for p in self.params
        ]
        return "\n".join(lines)


def _sma_cross(cache: IndicatorCache, p: Mapping[str, Any]) -> FloatArray:
    down = 0.0 if p["long_only"] else -1.0
    return cross_targets(cache.sma(p["fast"]), cache.sma(p["slow"]), up=1.0, down=down)


def _check_sma_cross(p: Mapping[str, Any]) -> None:
    if p["fast"] >= p["slow"]:
        raise InvalidRequest(
            f"sma_cross needs fast < slow, got fast={p['fast']}, slow={p['slow']}: "
            "swap them or pick a shorter fast window"
        )


def _rsi_reversion(cache: IndicatorCache, p: Mapping[str, Any]) -> FloatArray:
    rsi = cache.rsi(p["window"])
    n = rsi.shape[0]
    # Oversold: RSI falls through `lower` → long. Overbought: RSI rises through `upper` → short
    # (flat when long-only).
    long_entry = cross_targets(rsi, np.full(n, float(p["lower"])), up=np.nan, down=1.0)
    short_entry = cross_targets(
        rsi, np.full(n, float(p["upper"])), up=0.0 if p["long_only"] else -1.0, down=np.nan
    )
    return np.where(np.isnan(long_entry), short_entry, long_entry)


def _check_rsi(p: Mapping[str, Any]) -> None:
    if not p["lower"] < p["upper"]:
        raise InvalidRequest(
            f"rsi_reversion needs lower < upper, got lower={p['lower']}, upper={p['upper']}: "
            "e.g. lower=30, upper=70"
        )


def _bollinger_breakout(cache: IndicatorCache, p: Mapping[str, Any]) -> FloatArray:
    mid = cache.sma(p["window"])
    width = p["k"] * cache.std(p["window"])
    close = cache.close
    up = cross_targets(close, mid + width, up=1.0, down=np.nan)
    down = cross_targets(close, mid - width, up=np.nan, down=0.0 if p["long_only"] else -1.0)
    return np.where(np.isnan(up), down, up)


def _no_check(p: Mapping[str, Any]) -> None:
    return None


_LONG_ONLY = Param("long_only", bool, False, "never go short: the short signal only closes a long")

STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(
            "sma_cross",
            "long when SMA(fast) crosses above SMA(slow), short (or flat) when it crosses below",
            (
                Param("fast", int, 10, "fast SMA window in bars (2 ≤ fast < slow)", 2, 100_000),
                Param("slow", int, 20, "slow SMA window in bars (fast < slow)", 3, 100_000),
                _LONG_ONLY,
            ),
            _sma_cross,
            _check_sma_cross,
        ),
        StrategySpec(
            "rsi_reversion",
            "Wilder RSI(window) mean reversion: long when it falls through `lower`, short (or "
            "flat) when it rises through `upper`",
            (
                Param("window", int, 14, "RSI window in bars", 2, 100_000),
                Param("lower", float, 30.0, "oversold level, 0 < lower < upper", 0.0, 100.0),
                Param("upper", float, 70.0, "overbought level, lower < upper < 100", 0.0, 100.0),
                _LONG_ONLY,
            ),
            _rsi_reversion,
            _check_rsi,
        ),
        StrategySpec(
            "bollinger_breakout",
            "long when the close crosses above SMA + k·σ, short (or flat) when it crosses below "
            "SMA − k·σ (σ: population standard deviation of the close over `window`)",
            (
                Param("window", int, 20, "band window in bars", 2, 100_000),
                Param("k", float, 2.0, "band width in standard deviations (> 0)", 0.01, 100.0),
                _LONG_ONLY,
            ),
            _bollinger_breakout,
            _no_check,
        ),
    )
}


def get_strategy(strategy: str | StrategySpec) -> StrategySpec:
    """The strategy called ``strategy`` (or ``strategy`` itself if already a spec)."""
    if isinstance(strategy, StrategySpec):
        return strategy
    spec = STRATEGIES.get(str(strategy).strip().lower())
    if spec is None:
        raise InvalidRequest(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    return spec
