"""Typed options of each source, parsed once where they enter (the CLI, a flow's parameters, a
script), and the single check of each kind of option value.

:func:`parse_source_options` turns a source name and raw keyword options into one frozen record —
:class:`SyntheticOptions`, :class:`FilesOptions` or :class:`IBOptions` — that
:func:`~candleflow.sources.registry.make_source` builds the source from. Every caller may pass
the same keywords for every source: an option a source does not use is ignored when unset
(``None``) or at its default (:data:`NEUTRAL`). A set option that does not apply, an unknown
option, an unknown source or a bad value raises ``InvalidRequest`` whose ``param`` is the
option's name here (``"ib_port"``) and ``value`` what was given, so each face names it in its
own words (the CLI ``--ib-port``, the load-data flow its ``ib_port`` parameter). The ``parse_*``
helpers check one kind of value each; the sources' constructors use them too.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Final, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from candleflow.errors import InvalidRequest
from candleflow.models import Segment, parse_symbol

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_IB_HOST",
    "DEFAULT_IB_PORT",
    "NEUTRAL",
    "SOURCE_NAMES",
    "FilesOptions",
    "IBOptions",
    "SourceOptions",
    "SyntheticOptions",
    "option_values",
    "parse_integer",
    "parse_path",
    "parse_seconds",
    "parse_source_name",
    "parse_source_options",
    "parse_time_zone",
]

#: Accepted source names, in the order they are listed to users.
SOURCE_NAMES: Final = ("synthetic", "files", "ib")
#: Where the ``ib`` source looks for a gateway by default: IB Gateway's paper-trading port on this
#: machine, which is also where ``candleflow ib-sim`` listens by default.
DEFAULT_IB_HOST: Final = "127.0.0.1"
DEFAULT_IB_PORT: Final = 4002
DEFAULT_CLIENT_ID: Final = 1

#: Options every caller may pass for any source, with the value that means "not set".
#: Most historical requests one IB source keeps in flight (one connection each).
MAX_LANES: Final = 4

NEUTRAL: Final[Mapping[str, object]] = {
    "path": None,
    "seed": 0,
    "delay": 0.0,
    "calendar_tz": None,
    "strict": False,
    "ib_host": DEFAULT_IB_HOST,
    "ib_port": DEFAULT_IB_PORT,
    "client_id": DEFAULT_CLIENT_ID,
    "time_scale": 1.0,
    "ib_exchange": None,
    "currency": None,
    "lanes": 1,
}


# ----------------------------------------------------------------------------- one value each


def parse_source_name(name: object) -> str:
    """A source name, stripped and lower-cased: one of :data:`SOURCE_NAMES`."""
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in SOURCE_NAMES:
        raise InvalidRequest(
            f"unknown source {name!r}: use one of {', '.join(SOURCE_NAMES)}",
            param="source",
            value=name,
        )
    return key


def parse_integer(value: object, param: str) -> int:
    """An integer, or the text of one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(f"{param} must be an integer, got {value!r}", param, value)
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{param} must be an integer, got {value!r}", param, value) from None


def parse_seconds(value: object, param: str, *, positive: bool = False) -> float:
    """A finite number of seconds, ≥ 0 (``positive``: > 0)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        kind = "positive" if positive else "non-negative"
        raise InvalidRequest(
            f"{param} must be a {kind} number of seconds, got {value!r}", param, value
        )
    return float(value)


def parse_path(value: object, param: str = "path") -> Path:
    """An existing file or directory of bars to import."""
    if value is None or value == "":
        raise InvalidRequest(
            "source 'files' needs a path: the CSV/Parquet file, or the folder of SYMBOL.csv / "
            "SYMBOL.parquet files, to import",
            param,
            None,
        )
    if not isinstance(value, str | os.PathLike):
        raise InvalidRequest(f"{param} must be a file or folder path, got {value!r}", param, value)
    path = Path(value).expanduser()
    if not path.exists():
        raise InvalidRequest(
            f"{path}: no such file or directory; give a CSV/Parquet file or a directory "
            "of SYMBOL.csv / SYMBOL.parquet files",
            param,
            value,
        )
    return path


def parse_time_zone(value: object, param: str = "calendar_tz") -> ZoneInfo | None:
    """An IANA time zone (``None``: the exchange calendar's own)."""
    if value is None:
        return None
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidRequest(
            f"unknown time zone {value!r}: use an IANA name such as 'America/New_York', or "
            "leave it unset to use the calendar's zone",
            param,
            value,
        ) from None


def _symbols(value: object, param: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise InvalidRequest(
            f"option {param} of source {source!r} must be a list of symbols, got {value!r}",
            param,
            value,
        )
    try:
        return tuple(parse_symbol(s) for s in value)
    except InvalidRequest as exc:
        raise InvalidRequest(f"option {param} of source {source!r}: {exc}", param, value) from None


def _callable(value: object, param: str) -> Any:
    if value is not None and not callable(value):
        raise InvalidRequest(f"option {param} must be a function, got {value!r}", param, value)
    return value


def _time_scale(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidRequest(
            f"time_scale must be a positive number, got {value!r}: 1 keeps IB's real pacing "
            "windows; a smaller one only against a simulator started with the same time scale",
            "time_scale",
            value,
        )
    return float(value)


# ----------------------------------------------------------------------------- the records

#: The synthetic source's earliest bar: one date for every symbol, or a date per symbol.
Head = pd.Timestamp | str | Mapping[str, pd.Timestamp | str]


@dataclass(frozen=True, slots=True)
class SyntheticOptions:
    """The ``synthetic`` source: ``seed`` (the same seed gives the same bars), ``delay`` seconds
    per request, and for demos and tests ``head`` (the earliest bar: a date, or ``{symbol:
    date}``; ``None``: the source's default), ``symbols`` (the only ones it knows; ``None``: any),
    ``unknown`` (symbols it rejects), ``fail(segment)`` (an exception for that fetch to raise)
    and ``now()`` (its clock)."""

    name: ClassVar[str] = "synthetic"

    seed: int = 0
    delay: float = 0.0
    head: Head | None = None
    symbols: tuple[str, ...] | None = None
    unknown: tuple[str, ...] = ()
    fail: Callable[[Segment], BaseException | None] | None = None
    now: Callable[[], pd.Timestamp] | None = None

    @classmethod
    def parse(
        cls,
        *,
        seed: object = 0,
        delay: object = 0.0,
        head: object = None,
        symbols: object = None,
        unknown: object = (),
        fail: object = None,
        now: object = None,
    ) -> SyntheticOptions:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidRequest(f"seed must be an integer, got {seed!r}", "seed", seed)
        if head is not None and not isinstance(head, str | dt.date | Mapping):
            raise InvalidRequest(
                f"option head must be a date or a mapping of symbols to dates, got {head!r}",
                "head",
                head,
            )
        return cls(
            seed=seed,
            delay=parse_seconds(delay, "delay"),
            head=cast(Head | None, head),
            symbols=None if symbols is None else _symbols(symbols, "symbols", cls.name),
            unknown=_symbols(unknown, "unknown", cls.name),
            fail=_callable(fail, "fail"),
            now=_callable(now, "now"),
        )


@dataclass(frozen=True, slots=True)
class FilesOptions:
    """The ``files`` source: ``path`` (a CSV/Parquet file, or a folder of per-symbol files),
    ``calendar_tz`` (the zone of naive intraday times in them; ``None``: the exchange calendar's)
    and ``strict`` (refuse a file with any row breaking the price rules, instead of dropping and
    counting those rows)."""

    name: ClassVar[str] = "files"

    path: str
    calendar_tz: str | None = None
    strict: bool = False

    @classmethod
    def parse(
        cls, *, path: object = None, calendar_tz: object = None, strict: object = False
    ) -> FilesOptions:
        zone = parse_time_zone(calendar_tz)
        if not isinstance(strict, bool):
            raise InvalidRequest(f"strict must be true or false, got {strict!r}", "strict", strict)
        return cls(str(parse_path(path)), None if zone is None else str(zone), strict)


@dataclass(frozen=True, slots=True)
class IBOptions:
    """The ``ib`` source: the gateway (TWS, IB Gateway or ``candleflow ib-sim``) at
    ``ib_host``:``ib_port``, the API ``client_id`` (unused by other clients of that gateway),
    ``time_scale`` (> 0; IB's pacing windows × it, equal to a simulator's ``--time-scale``, 1 for
    a real gateway), the ``timeout`` of each request in seconds (``None``: the adapter's) and the
    ``lanes``: historical requests kept in flight at once, one connection each (1-4; client ids
    ``client_id + 1000·k`` for the extra ones)."""

    name: ClassVar[str] = "ib"

    ib_host: str = DEFAULT_IB_HOST
    ib_port: int = DEFAULT_IB_PORT
    client_id: int = DEFAULT_CLIENT_ID
    time_scale: float = 1.0
    timeout: float | None = None
    ib_exchange: str | None = None
    currency: str | None = None
    lanes: int = 1

    @classmethod
    def parse(
        cls,
        *,
        ib_host: object = DEFAULT_IB_HOST,
        ib_port: object = DEFAULT_IB_PORT,
        client_id: object = DEFAULT_CLIENT_ID,
        time_scale: object = 1.0,
        timeout: object = None,
        ib_exchange: object = None,
        currency: object = None,
        lanes: object = 1,
    ) -> IBOptions:
        host = str(ib_host).strip()
        if not host:
            raise InvalidRequest(
                "ib_host is empty: give the gateway's host name or address", "ib_host", ib_host
            )
        port = parse_integer(ib_port, "ib_port")
        if not 1 <= port <= 65535:
            raise InvalidRequest(f"ib_port must be a TCP port 1-65535, got {port}", "ib_port", port)
        client = parse_integer(client_id, "client_id")
        if client < 0:
            raise InvalidRequest(f"client_id must be >= 0, got {client}", "client_id", client)
        count = parse_integer(lanes, "lanes")
        if not 1 <= count <= MAX_LANES:
            raise InvalidRequest(
                f"lanes must be 1-{MAX_LANES} (historical requests in flight, one IB connection "
                f"each), got {count}",
                "lanes",
                count,
            )
        return cls(
            ib_host=host,
            ib_port=port,
            client_id=client,
            time_scale=_time_scale(time_scale),
            timeout=None if timeout is None else parse_seconds(timeout, "timeout", positive=True),
            ib_exchange=_contract_word(ib_exchange, "ib_exchange", "an IB exchange, e.g. CME"),
            currency=_contract_word(currency, "currency", "a currency code, e.g. EUR"),
            lanes=count,
        )


def _contract_word(value: object, name: str, what: str) -> str | None:
    """An optional contract field (exchange, currency): upper-case letters and digits."""
    if value is None or value == "":
        return None
    text = str(value).strip().upper()
    if not text.isalnum():
        raise InvalidRequest(f"{name} must be {what}, got {value!r}", name, value)
    return text


SourceOptions = SyntheticOptions | FilesOptions | IBOptions
_RECORDS: Final[Mapping[str, type[SyntheticOptions] | type[FilesOptions] | type[IBOptions]]] = {
    record.name: record for record in (SyntheticOptions, FilesOptions, IBOptions)
}


def option_values(options: SourceOptions) -> dict[str, object]:
    """The record's options by name (what :func:`parse_source_options` takes back)."""
    return {f.name: getattr(options, f.name) for f in fields(options)}


def parse_source_options(source: str, **raw: Any) -> SourceOptions:
    """The options record of ``source`` (synthetic, files, ib) from raw keyword options."""
    record = _RECORDS[parse_source_name(source)]
    accepted = [f.name for f in fields(record)]
    used: dict[str, Any] = {}
    for option, value in raw.items():
        if option in accepted:
            if value is not None:
                used[option] = value
        elif option not in NEUTRAL:
            raise InvalidRequest(
                f"unknown option {option!r} for source {record.name!r}: it accepts "
                f"{', '.join(sorted(accepted))}",
                option,
                value,
            )
        elif value is not None and value != NEUTRAL[option]:
            raise InvalidRequest(
                f"option {option}={value!r} does not apply to source {record.name!r}; "
                f"it accepts {', '.join(sorted(accepted))}",
                option,
                value,
            )
    return record.parse(**used)
