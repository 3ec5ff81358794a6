"""The ``Source`` protocol every bar source implements, and the checks applied to what it returns.

A source resolves symbols to instruments, reports how far back its history goes, and fetches the
bars of one segment. It raises typed errors (``UnknownSymbol``, ``NoData``, ``SourceUnavailable``,
``PacingViolation``…) instead of returning empty results, and counts the requests it makes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd

from candleflow.models import Instrument, Segment
from candleflow.store.frames import empty_bars, normalize_bars
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


__all__ = ["Source", "empty_bars", "normalize_bars"]
