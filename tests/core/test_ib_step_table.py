"""Golden test of the IB step-size table the planner and the simulator rely on.

Transcribed from IB's "Historical Data Limitations" page (TWS API documentation, section "Step
Sizes"), not read back from ``candleflow.timeframes``: each row names a request duration and the
range of bar sizes it allows. The largest duration allowing a bar size is that bar size's
maximum span per request. Units as candleflow reads them: D = 1 day, W = 7, M = 30, Y = 365.
"""

from __future__ import annotations

import pandas as pd
import pytest

from candleflow.timeframes import TIMEFRAMES

#: IB's legal bar sizes, smallest first (the documented list).
BAR_SIZES = [
    "1 secs", "5 secs", "10 secs", "15 secs", "30 secs", "1 min", "2 mins", "3 mins", "5 mins",
    "10 mins", "15 mins", "20 mins", "30 mins", "1 hour", "2 hours", "3 hours", "4 hours",
    "8 hours", "1 day", "1 week", "1 month",
]  # fmt: skip
#: Duration → (smallest, largest) bar size it allows — IB's table, row by row.
STEP_SIZES = [
    ("60 S", "1 secs", "1 min"),
    ("120 S", "1 secs", "2 mins"),
    ("1800 S", "1 secs", "30 mins"),
    ("3600 S", "5 secs", "1 hour"),
    ("14400 S", "10 secs", "3 hours"),
    ("28800 S", "30 secs", "8 hours"),
    ("1 D", "1 min", "1 day"),
    ("2 D", "2 mins", "1 day"),
    ("1 W", "3 mins", "1 week"),
    ("1 M", "30 mins", "1 month"),
    ("1 Y", "1 day", "1 month"),
]
#: The same, read per bar size for candleflow's timeframes (hand-checked against the rows above).
GOLDEN = {
    "1 min": ("1 D", 1), "2 mins": ("2 D", 2), "3 mins": ("1 W", 7), "5 mins": ("1 W", 7),
    "10 mins": ("1 W", 7), "15 mins": ("1 W", 7), "20 mins": ("1 W", 7), "30 mins": ("1 M", 30),
    "1 hour": ("1 M", 30), "2 hours": ("1 M", 30), "3 hours": ("1 M", 30),
    "4 hours": ("1 M", 30), "8 hours": ("1 M", 30), "1 day": ("1 Y", 365),
}  # fmt: skip
_UNIT_DAYS = {"D": 1, "W": 7, "M": 30, "Y": 365}


def _length(duration: str) -> pd.Timedelta:
    count, unit = duration.split()
    if unit == "S":
        return pd.Timedelta(seconds=int(count))
    return pd.Timedelta(days=int(count) * _UNIT_DAYS[unit])


def _largest_allowed(bar_size: str) -> str:
    position = BAR_SIZES.index(bar_size)
    allowed = [d for d, low, high in STEP_SIZES
               if BAR_SIZES.index(low) <= position <= BAR_SIZES.index(high)]  # fmt: skip
    return max(allowed, key=_length)


def test_the_golden_answers_follow_from_the_transcribed_table() -> None:
    for bar_size, (duration, days) in GOLDEN.items():
        assert _largest_allowed(bar_size) == duration, bar_size
        assert _length(duration) == pd.Timedelta(days=days)


@pytest.mark.parametrize("bar_size", sorted(GOLDEN))
def test_each_timeframe_uses_ibs_largest_step(bar_size: str) -> None:
    (tf,) = [tf for tf in TIMEFRAMES.values() if tf.ib_bar_size == bar_size]
    duration, days = GOLDEN[bar_size]
    assert tf.ib_max_duration == duration
    assert tf.max_span == pd.Timedelta(days=days)


def test_every_timeframe_is_in_the_golden_table() -> None:
    assert sorted(tf.ib_bar_size for tf in TIMEFRAMES.values()) == sorted(GOLDEN)
