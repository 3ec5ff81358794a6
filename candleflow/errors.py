"""The one exception hierarchy of candleflow.

Every error the core raises on purpose is a ``CandleflowError``. Messages name what was wrong,
the offending value, and what to do about it, so the CLI can print them as one line and map the
class to an exit code (``InvalidRequest`` and ``UnknownSymbol`` → 2, ``Cancelled`` → 130). An
``InvalidRequest`` about one parameter carries it as ``param`` (the core's name, e.g.
``"ib_port"``) and ``value``; the core's messages never name a face's spelling of it, and each
face adds its own (:meth:`InvalidRequest.naming`, :func:`params_named`): the CLI its flag, a flow
its parameter.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Mapping
from typing import ClassVar


class CandleflowError(Exception):
    """Base class of every error candleflow raises deliberately."""


class InvalidRequest(CandleflowError, ValueError):
    """The caller asked for something that cannot be done as asked (bad dates, timeframe, path…).

    ``param`` is the parameter at fault in the core's words (``None`` when the message is about
    no single one) and ``value`` what was given for it (``None``: nothing was).
    """

    def __init__(self, message: str, param: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.param = param
        self.value = value

    def naming(self, names: Mapping[str, str], given: str, missing: str) -> str:
        """This message with the parameter named as a face calls it.

        ``names`` maps the core's parameter names to the face's (a CLI flag, a flow parameter);
        ``given`` (with ``{name}`` and ``{value}``) is added in parentheses when a value was
        given, ``missing`` (with ``{name}``) when none was. Unchanged when the face has no name
        for the parameter.
        """
        name = names.get(self.param) if self.param is not None else None
        if name is None:
            return str(self)
        hint = missing if self.value is None else given
        return f"{self} ({hint.format(name=name, value=self.value)})"


@contextlib.contextmanager
def params_named(names: Mapping[str, str], face: str) -> Iterator[None]:
    """Within, an ``InvalidRequest`` about a parameter in ``names`` is raised again naming it as
    ``face`` calls it: "… (load_data parameter ib_time_scale=0.0)". The error raised is in the
    face's words already, so it carries no ``param`` (the original is its ``__cause__``)."""
    try:
        yield
    except InvalidRequest as exc:
        if exc.param is None or exc.param not in names or type(exc) is not InvalidRequest:
            raise
        message = exc.naming(names, f"{face} {{name}}={{value!r}}", f"give {face} {{name}}")
        raise InvalidRequest(message) from exc


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


class StoreWriteFailed(CandleflowError):
    """The operating system refused a write into the store (disk full, read-only, permissions).

    ``root`` is the store, ``path`` the file being written, ``reason`` the system's words. The
    write was atomic: the file at ``path`` still holds its previous version.
    """

    _FIXES: ClassVar[Mapping[int, str]] = {
        errno.ENOSPC: "free space on its disk or give another store root",
        errno.EDQUOT: "free space within the disk quota or give another store root",
        errno.EROFS: "its filesystem is mounted read-only: give a writable store root",
        errno.EACCES: "make it writable for this user or give another store root",
        errno.EPERM: "make it writable for this user or give another store root",
    }

    def __init__(self, root: str, path: str, reason: str, errno_: int | None = None) -> None:
        fix = self._FIXES.get(errno_ or 0, "check that it is writable and has space")
        super().__init__(
            f"cannot write to store {root} ({reason}, writing {path}); {fix} — "
            "the data stored before is unchanged"
        )
        self.root = root
        self.path = path
        self.reason = reason
        self.errno = errno_

    @classmethod
    def from_os_error(cls, root: str, path: str, exc: OSError) -> StoreWriteFailed:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return cls(root, path, reason, exc.errno)


class StoreUnavailable(CandleflowError):
    """The object store could not be reached or refused a read (endpoint down, credentials)."""

    def __init__(self, root: str, reason: str) -> None:
        super().__init__(
            f"cannot reach store {root} ({reason}); check AWS_ENDPOINT_URL, the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that the bucket exists"
        )
        self.root = root
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
