"""The ``Source`` protocol every bar source implements, and the checks applied to what it returns.

A source resolves symbols to instruments, reports how far back its history goes, and fetches the
bars of one segment. It raises typed errors (``UnknownSymbol``, ``NoData``, ``SourceUnavailable``,
``PacingViolation``…) instead of returning empty results, and counts the requests it makes.

A *finite* source (a file import) also knows its last bar: it implements ``tail_timestamp`` as
well (:class:`FiniteSource`), and the load plans only within ``[head, tail]`` — one pass over what
it holds, no retries, and a range outside it is a notice, not a failure. A source may describe a
series for its metadata (``series_meta``: e.g. the file, its format and the time zone its times
were read in).
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


@runtime_checkable
class FiniteSource(Source, Protocol):
    """A source holding a fixed set of bars (a file): it knows its last bar as well as its first."""

    def tail_timestamp(self, instrument: Instrument, timeframe: Timeframe) -> pd.Timestamp:
        """The start of the last bar the source holds (tz-aware UTC)."""
        ...


def is_finite(source: object) -> bool:
    """True for a source that holds a fixed set of bars (implements ``tail_timestamp``)."""
    return callable(getattr(source, "tail_timestamp", None))


def source_tail(
    source: Source, instrument: Instrument, timeframe: Timeframe
) -> pd.Timestamp | None:
    """The last bar of a finite source (``None``: the source keeps growing, up to now)."""
    tail = getattr(source, "tail_timestamp", None)
    return None if not callable(tail) else pd.Timestamp(tail(instrument, timeframe))


def series_meta(source: Source, instrument: Instrument, timeframe: Timeframe) -> dict[str, object]:
    """What ``source`` records about a series in its metadata (``{}`` when it says nothing)."""
    describe = getattr(source, "series_meta", None)
    return {} if not callable(describe) else dict(describe(instrument, timeframe))


__all__ = [
    "FiniteSource",
    "Source",
    "empty_bars",
    "is_finite",
    "normalize_bars",
    "series_meta",
    "source_tail",
]
