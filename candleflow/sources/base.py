"""The ``Source`` protocol every bar source implements, and the checks applied to what it returns.

A source resolves symbols to instruments, reports how far back its history goes, and fetches the
bars of one segment. It raises typed errors (``UnknownSymbol``, ``NoData``, ``SourceUnavailable``,
``PacingViolation``…) instead of returning empty results, and counts the requests it makes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from candleflow.errors import InvalidRequest
from candleflow.models import BAR_COLUMNS, INDEX_NAME, Instrument, Segment
from candleflow.timeframes import Timeframe


@runtime_checkable
class Source(Protocol):
    """What the load stages need from a source of bars."""

    name: str

    @property
    def api_calls(self) -> int:
        """Requests sent to the source so far (for progress and metadata)."""
        ...

    def validate(self, symbol: str, calendar: str = "XNYS") -> Instrument:
        """Resolve ``symbol``; raise ``UnknownSymbol`` when the source does not know it."""
        ...

    def head_timestamp(self, instrument: Instrument, timeframe: Timeframe) -> pd.Timestamp:
        """The earliest bar the source can deliver (tz-aware UTC)."""
        ...

    def fetch(self, instrument: Instrument, timeframe: Timeframe, segment: Segment) -> pd.DataFrame:
        """Bars starting in ``[segment.start, segment.end)`` as a bar frame (``NoData`` if none)."""
        ...

    def close(self) -> None:
        """Release connections; safe to call twice."""
        ...


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the canonical columns, dtypes and index."""
    index = pd.DatetimeIndex([], tz="UTC", name=INDEX_NAME)
    return pd.DataFrame({c: np.array([], dtype="float64") for c in BAR_COLUMNS}, index=index)


def normalize_bars(frame: pd.DataFrame, *, origin: str) -> pd.DataFrame:
    """Return ``frame`` as a canonical bar frame: UTC index named ``timestamp``, float64 columns.

    ``origin`` names where the frame came from, for error messages.
    """
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidRequest(
            f"{origin}: missing column(s) {', '.join(missing)}; bars need {', '.join(BAR_COLUMNS)}"
        )
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise InvalidRequest(f"{origin}: bars must be indexed by timestamps")
    index = frame.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    out = frame.loc[:, list(BAR_COLUMNS)].astype("float64")
    out.index = pd.DatetimeIndex(index, name=INDEX_NAME).as_unit("ns")
    return out
