"""Shared fixtures of the backtest tests: backtesting.py's bundled data as candleflow bar frames,
and the reference SMA-cross strategies written for backtesting.py (a test-only dependency)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from candleflow.models import BAR_COLUMNS


def as_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """backtesting.py's OHLCV frame as a candleflow bar frame (UTC index, float64 columns)."""
    bars = frame.rename(columns=str.lower)[list(BAR_COLUMNS)].astype(np.float64)
    bars.index = pd.DatetimeIndex(bars.index).tz_localize("UTC")
    bars.index.name = "timestamp"
    return bars


@pytest.fixture(scope="session")
def eurusd() -> pd.DataFrame:
    from backtesting.test import EURUSD

    return as_bars(EURUSD)


@pytest.fixture(scope="session")
def goog() -> pd.DataFrame:
    from backtesting.test import GOOG

    return as_bars(GOOG)


def synthetic_bars(n: int, seed: int = 0) -> pd.DataFrame:
    """A random-walk bar frame of ``n`` one-minute bars (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="timestamp")
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
