"""Strategies: the strict-cross rule, indicator values against hand-worked numbers, validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from candleflow.backtest import (
    BacktestConfig,
    IndicatorCache,
    cross_targets,
    get_strategy,
    run_backtest,
)
from candleflow.errors import InvalidRequest

NAN = np.nan


def test_a_cross_is_strict_and_equal_values_are_no_cross() -> None:
    fast = np.array([1.0, 2.0, 2.0, 3.0, 2.0, 2.0, 1.0, 1.0, 2.0, 1.0])
    slow = np.full(10, 2.0)
    target = cross_targets(fast, slow, up=1.0, down=-1.0)
    # below → equal: nothing; equal → above: up (bar 3); above → equal → equal: nothing;
    # equal → below: down (bar 6); below → equal → below: down again (bar 9), which the engine
    # then ignores because it is already short.
    expected = [NAN, NAN, NAN, 1.0, NAN, NAN, -1.0, NAN, NAN, -1.0]
    np.testing.assert_array_equal(target, expected)


def test_warm_up_nans_give_no_signal() -> None:
    fast = np.array([NAN, NAN, 3.0, 1.0])
    slow = np.array([NAN, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(cross_targets(fast, slow, up=1, down=-1), [NAN, NAN, NAN, -1])


def test_sma_equals_the_plain_mean() -> None:
    close = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    np.testing.assert_allclose(IndicatorCache(close).sma(3), [NAN, NAN, 2.0, 3.0, 17 / 3])


def test_wilder_rsi_by_hand() -> None:
    # Changes +1, +1, −1, +1 with window 2: first averages gain 1, loss 0 → 100; then
    # gain (1 + 0)/2 = 0.5, loss (0 + 1)/2 = 0.5 → 50; then gain 0.75, loss 0.25 → RS 3 → 75.
    rsi = IndicatorCache(np.array([1.0, 2.0, 3.0, 2.0, 3.0])).rsi(2)
    np.testing.assert_allclose(rsi, [NAN, NAN, 100.0, 50.0, 75.0])


def test_bollinger_band_is_population_std() -> None:
    close = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 20.0, 10.0])
    cache = IndicatorCache(close)
    std = cache.std(3)
    assert std[5] == pytest.approx(np.std([10.0, 10.0, 20.0]))  # ddof=0: 4.714…
    target = get_strategy("bollinger_breakout").targets(cache, {"window": 3, "k": 1.0})
    # Bar 5 closes at 20 above SMA + σ = 13.33 + 4.71 (bar 4 was at its band, 10 ≤ 10): long.
    assert target[5] == 1.0 and np.isnan(target[:5]).all()


def test_rsi_reversion_enters_on_extremes() -> None:
    close = np.array([10.0, 11, 12, 13, 14, 15, 16, 10, 9, 8, 7, 12, 13])
    cache = IndicatorCache(close)
    target = get_strategy("rsi_reversion").targets(
        cache, {"window": 3, "lower": 30, "upper": 70, "long_only": True}
    )
    rsi = cache.rsi(3)
    for i in range(1, len(close)):
        if rsi[i - 1] >= 30 > rsi[i]:
            assert target[i] == 1.0
        elif rsi[i - 1] <= 70 < rsi[i]:
            assert target[i] == 0.0
        else:
            assert np.isnan(target[i])
    assert np.count_nonzero(~np.isnan(target)) >= 2


@pytest.mark.parametrize(
    ("strategy", "params", "message"),
    [
        ("sma_cross", {"fast": 20, "slow": 10}, "fast < slow"),
        ("sma_cross", {"fast": 10, "slow": 10}, "fast < slow"),
        ("sma_cross", {"fast": "ten"}, "not a valid int"),
        ("sma_cross", {"fast": 1}, "out of range"),
        ("sma_cross", {"speed": 3}, "has no parameter speed"),
        ("rsi_reversion", {"lower": 70, "upper": 30}, "lower < upper"),
        ("bollinger_breakout", {"k": 0}, "out of range"),
    ],
)
def test_invalid_parameters_are_refused(
    strategy: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        get_strategy(strategy).resolve(params)


def test_parse_params_and_defaults() -> None:
    spec = get_strategy("sma_cross")
    assert spec.parse_params("fast=5, slow=30,long_only=true") == {
        "fast": 5,
        "slow": 30,
        "long_only": True,
    }
    assert spec.resolve({}) == {"fast": 10, "slow": 20, "long_only": False}
    with pytest.raises(InvalidRequest, match="name=value"):
        spec.parse_params("fast:5")
    with pytest.raises(InvalidRequest, match="unknown strategy"):
        get_strategy("macd_magic")


def test_bad_inputs_are_refused() -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="1D", tz="UTC")
    bars = pd.DataFrame({"open": [1.0, np.nan, 1.0], "close": [1.0, 1.0, 1.0]}, index=index)
    with pytest.raises(InvalidRequest, match="dropna"):
        run_backtest(bars)
    with pytest.raises(InvalidRequest, match="commission"):
        BacktestConfig(commission=-0.01)
    with pytest.raises(InvalidRequest, match="size"):
        BacktestConfig(size=1.5)
    good = bars.fillna(1.0)
    with pytest.raises(InvalidRequest, match="bar range"):
        run_backtest(good, start=2, stop=2)


@pytest.mark.parametrize("name", ["sma_cross", "rsi_reversion", "bollinger_breakout"])
def test_every_strategy_runs_and_long_only_never_goes_short(name: str) -> None:
    from tests.backtest.conftest import synthetic_bars

    bars = synthetic_bars(5_000, seed=3)
    both = run_backtest(bars, name)
    long_only = run_backtest(bars, name, {"long_only": True})
    assert both.metrics.trades > 0 and (both.position < 0).any()
    assert long_only.metrics.trades > 0 and (long_only.position >= 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_sma_is_bit_identical_to_pandas_rolling_mean(seed: int) -> None:
    rng = np.random.default_rng(seed)
    walk = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 20_000)))
    series = [
        walk,
        np.round(walk, 2),  # ticks: many exact ties between windows
        np.repeat([1.0, 2.0, 2.0, 3.0, -1.0], 500),  # runs of equal values, sign changes
        np.where(rng.random(20_000) < 0.01, np.nan, walk),  # gaps
    ]
    for values in series:
        cache = IndicatorCache(values)
        for window in (2, 3, 5, 10, 20, 37, 50, 200):
            expected = pd.Series(values).rolling(window).mean().to_numpy()
            np.testing.assert_array_equal(cache.sma(window), expected)


def test_precomputed_features_seed_the_cache() -> None:
    close = np.arange(1.0, 31.0)
    seeded = np.full(30, 5.0)
    cache = IndicatorCache(close, seed={"sma:10": seeded})
    assert np.array_equal(cache.sma(10), seeded)  # used, not recomputed
    assert len(cache) == 1
    with pytest.raises(InvalidRequest, match="same bars"):
        IndicatorCache(close, seed={"sma:10": seeded[:5]})
