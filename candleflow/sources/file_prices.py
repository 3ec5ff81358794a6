"""The price rules an imported bar must pass, and what happens to the rows that break them.

A vendor file may hold impossible bars: a zero or negative price, a missing (NaN) or infinite
one, a high below the open or close, a low above them, a negative volume. By default such rows
are dropped and counted — one warning line names the file, the count per rule and the first
offending bar — so one bad print does not stop years of good ones; with ``strict`` any of them
refuses the whole file (``InvalidRequest``, nothing stored). Missing volume is allowed (FX and
index bars have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from candleflow.errors import InvalidRequest
from candleflow.store.frames import format_ts

__all__ = ["PRICE_RULES", "PriceCheck", "check_prices"]

_Mask = np.ndarray[Any, np.dtype[np.bool_]]

#: The rules, in the order a report lists them.
PRICE_RULES = (
    "non-positive price",
    "NaN price",
    "high < max(open, close)",
    "low > min(open, close)",
    "negative volume",
)


@dataclass(frozen=True, slots=True)
class PriceCheck:
    """What the price rules found in a frame: rows breaking each rule, rows to drop (breaking
    any), and the first of them."""

    counts: dict[str, int]
    bad: _Mask
    first: pd.Timestamp | None

    @property
    def dropped(self) -> int:
        return int(self.bad.sum())

    def describe(self) -> str:
        """ "2 non-positive price, 1 NaN price; first at 2024-01-02 14:30 UTC"."""
        rules = ", ".join(f"{n:,} {rule}" for rule, n in self.counts.items() if n)
        first = "" if self.first is None else f"; first at {format_ts(self.first)}"
        return rules + first


def _rules(frame: pd.DataFrame) -> dict[str, _Mask]:
    o, h, lo, c, v = (
        frame[col].to_numpy(dtype="float64") for col in ("open", "high", "low", "close", "volume")
    )
    prices = np.column_stack((o, h, lo, c))
    with np.errstate(invalid="ignore"):
        # NaN compares False, so a row with a missing price is reported by the NaN rule only.
        return {
            "non-positive price": (prices <= 0).any(axis=1),
            "NaN price": ~np.isfinite(prices).all(axis=1),
            "high < max(open, close)": h < np.maximum(o, c),
            "low > min(open, close)": lo > np.minimum(o, c),
            "negative volume": (v < 0) | np.isinf(v),
        }


def check_prices(frame: pd.DataFrame, origin: str, *, strict: bool = False) -> PriceCheck:
    """The price rules over ``frame`` (a canonical bar frame read from ``origin``).

    With ``strict``, any row breaking a rule raises ``InvalidRequest`` naming the file, the count
    per rule and the first offending bar.
    """
    masks = _rules(frame)
    bad = np.zeros(len(frame), dtype=bool)
    for mask in masks.values():
        bad |= mask
    first = pd.Timestamp(frame.index[int(np.argmax(bad))]) if bad.any() else None
    check = PriceCheck({rule: int(m.sum()) for rule, m in masks.items()}, bad, first)
    if strict and check.dropped:
        raise InvalidRequest(
            f"{origin}: {check.dropped:,} of {len(frame):,} rows break the price rules "
            f"({check.describe()}); nothing was stored: correct or delete those rows, or "
            "import without strict checking to drop them"
        )
    return check
