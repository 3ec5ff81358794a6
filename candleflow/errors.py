"""The one exception hierarchy of candleflow.

Every error the core raises on purpose is a ``CandleflowError``. Messages name what was wrong,
the offending value, and what to do about it, so the CLI can print them as one line and map the
class to an exit code (``InvalidRequest`` and ``UnknownSymbol`` → 2, ``Cancelled`` → 130).
"""

from __future__ import annotations


class CandleflowError(Exception):
    """Base class of every error candleflow raises deliberately."""


class InvalidRequest(CandleflowError, ValueError):
    """The caller asked for something that cannot be done as asked (bad dates, timeframe, path…)."""


class UnknownSymbol(CandleflowError):
    """The source does not know the instrument."""

    def __init__(self, symbol: str, source: str = "", detail: str = "") -> None:
        where = f" on source {source!r}" if source else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"unknown symbol {symbol!r}{where}{extra}: check the spelling and the exchange/currency"
        )
        self.symbol = symbol
        self.source = source


class InvalidBars(InvalidRequest):
    """Bars fail the OHLC checks; nothing was stored.

    ``bad_rows`` is how many rows fail, ``total`` how many were offered.
    """

    def __init__(self, message: str, *, bad_rows: int, total: int) -> None:
        super().__init__(message)
        self.bad_rows = bad_rows
        self.total = total


class NoData(CandleflowError):
    """The source answered, but has no bars for the requested range."""


class SourceUnavailable(CandleflowError):
    """The source could not be reached, or the connection was lost."""


class PacingViolation(CandleflowError):
    """The source refused a request because too many were sent (IB error 162, pacing)."""


class StoreCorrupted(CandleflowError):
    """A file in the bar store cannot be read; the path is part of the message and ``path``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"store file {path} is unreadable ({reason}); move it aside and reload that range"
        )
        self.path = path
        self.reason = reason


class StoreBusy(CandleflowError, TimeoutError):
    """Another writer held a series lock for longer than ``lock_timeout``; ``path`` is the lock."""

    def __init__(self, path: str, series: str, timeout: float) -> None:
        super().__init__(
            f"series {series} stayed locked by another writer for {timeout:g}s (lock file {path}); "
            "retry when that load finishes, or give BarStore a larger lock_timeout"
        )
        self.path = path


class Cancelled(CandleflowError):
    """The operation was cancelled cooperatively; work completed before it has been kept.

    ``partial`` carries what the operation had achieved when it stopped (e.g. a load summary).
    """

    def __init__(self, message: str = "cancelled", partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial
