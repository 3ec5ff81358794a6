"""What the core tests share: UTC timestamps from text, a plain valid bar frame on any index, and a
``BarStore`` on ``tmp_path``. (The randomised bars of the store's crash tests live in
``store_writer.py``, which runs as a subprocess too.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candleflow.store.bar_store import BarStore


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def ramp_bars(index: pd.DatetimeIndex) -> pd.DataFrame:
    """Valid bars on ``index``: prices rising 0.01 a bar from 100, volume 1,000."""
    n = len(index)
    price = 100.0 + np.arange(n) * 0.01
    return pd.DataFrame(
        {
            "open": price,
            "high": price + 0.5,
            "low": price - 0.5,
            "close": price + 0.1,
            "volume": np.full(n, 1000.0),
        },
        index=pd.DatetimeIndex(index, name="timestamp"),
    )


@pytest.fixture
def store(tmp_path: Path) -> BarStore:
    return BarStore(tmp_path / "store")
