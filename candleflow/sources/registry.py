"""Bar sources by name: the one place that turns ``--source NAME`` into a :class:`Source`.

``make_source("synthetic", seed=0, delay=0.0, cancel_wait=token.wait)``,
``make_source("files", path="bars/")``, ``make_source("ib", ib_host="127.0.0.1", ib_port=4002,
client_id=1, time_scale=1.0, cancel_token=token)``. Options a source does not use are ignored when
they are unset (``None``) or at their default, so a caller can pass the same keyword set for every
source (``cancel_wait``, ``cancel_token`` and ``request_gate`` are always optional); a set option
that does not apply raises ``InvalidRequest`` naming it, as does an unknown source name (listing
the valid ones).

Every ``ib`` source of a process that talks to the same gateway shares one pacing limiter
(``shared_limiter("ib:HOST:PORT")``): IB counts requests per connection to the gateway's account,
not per source object, so pacing must hold across all the fetches a process makes. Across
processes, the caller passes a ``request_gate`` (a :class:`~candleflow.sources.pacing.RequestGate`,
e.g. the orchestrator's shared rate limit); other sources ignore it. Building an
``ib`` source checks that something listens at ``HOST:PORT`` and raises ``SourceUnavailable``
saying what to start when nothing does — at once, instead of after the adapter's reconnect
attempts.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from candleflow.errors import InvalidRequest, SourceUnavailable
from candleflow.sources.base import Source

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_IB_HOST",
    "DEFAULT_IB_PORT",
    "LOCAL_SOURCES",
    "SOURCE_NAMES",
    "check_gateway",
    "make_source",
]

#: Accepted source names, in the order they are listed to users.
SOURCE_NAMES: Final = ("synthetic", "files", "ib")
#: Sources that answer without a network or an account: validating a symbol on them is instant.
LOCAL_SOURCES: Final = frozenset({"synthetic", "files"})

#: Where the ``ib`` source looks for a gateway by default: IB Gateway's paper-trading port on this
#: machine, which is also where ``candleflow ib-sim`` listens by default.
DEFAULT_IB_HOST: Final = "127.0.0.1"
DEFAULT_IB_PORT: Final = 4002
DEFAULT_CLIENT_ID: Final = 1
#: Seconds the gateway check waits for a TCP connection (loopback refusals are instant).
GATEWAY_CHECK_TIMEOUT: Final = 3.0

# Options every caller may pass, with the value that means "not set".
_NEUTRAL: Final[Mapping[str, object]] = {
    "path": None,
    "seed": 0,
    "delay": 0.0,
    "calendar_tz": None,
    "ib_host": DEFAULT_IB_HOST,
    "ib_port": DEFAULT_IB_PORT,
    "client_id": DEFAULT_CLIENT_ID,
    "time_scale": 1.0,
}
# Options a source uses if it can and that are otherwise dropped: ``cancel_wait(seconds) -> bool``
# lets a source's waits end early on cancellation; ``cancel_token`` (a ``CancelToken``) does the
# same for sources that also wait inside their pacing limiter; ``request_gate`` (a ``RequestGate``)
# shares pacing with other processes for sources that pace their requests.
_HINTS: Final = frozenset({"cancel_wait", "cancel_token", "request_gate"})


def _synthetic(options: dict[str, Any]) -> Source:
    from candleflow.sources.synthetic import SyntheticSource

    for name in ("symbols", "unknown"):
        value = options.get(name)
        if isinstance(value, str | bytes) or not (value is None or isinstance(value, Collection)):
            raise InvalidRequest(
                f"option {name} of source 'synthetic' must be a list of symbols, got {value!r}"
            )
    return SyntheticSource(**options)


def _files(options: dict[str, Any]) -> Source:
    from candleflow.sources.files import FileSource

    path = options.pop("path", None)
    if path in (None, ""):
        raise InvalidRequest("source 'files' needs a path: give --path FILE_OR_DIR")
    return FileSource(path, **options)


def check_gateway(host: str, port: int, timeout: float = GATEWAY_CHECK_TIMEOUT) -> None:
    """Raise ``SourceUnavailable`` (naming ``host:port`` and what to start) if nothing listens.

    Only a TCP connect, closed at once: TWS and IB Gateway drop a socket that never sends the API
    handshake without side effects, and the check costs no client id.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout:g}s"
        elif isinstance(exc, socket.gaierror):
            reason = f"unknown host: {exc.strerror or exc}"
        else:
            reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        raise SourceUnavailable(
            f"no IB gateway at {host}:{port} ({reason}): start TWS or IB Gateway with API "
            f"connections enabled on port {port}, or run `candleflow ib-sim --port {port}` for "
            f"the offline simulator; then rerun (--ib-host/--ib-port choose the gateway)"
        ) from None


def _ib(options: dict[str, Any]) -> Source:
    from candleflow.sources.ib import IBSource
    from candleflow.sources.pacing import shared_limiter

    host = str(options.pop("ib_host", DEFAULT_IB_HOST)).strip()
    port = _integer(options.pop("ib_port", DEFAULT_IB_PORT), "ib_port", "--ib-port")
    client_id = _integer(options.pop("client_id", DEFAULT_CLIENT_ID), "client_id", "--client-id")
    time_scale = options.pop("time_scale", 1.0)
    if not host:
        raise InvalidRequest("ib_host is empty: give the gateway's host name or address")
    if not 1 <= port <= 65535:
        raise InvalidRequest(f"ib_port must be a TCP port 1-65535, got {port}: give --ib-port")
    if client_id < 0:
        raise InvalidRequest(f"client_id must be >= 0, got {client_id}: give --client-id")
    if (
        isinstance(time_scale, bool)
        or not isinstance(time_scale, int | float)
        or not math.isfinite(time_scale)
        or time_scale <= 0
    ):
        raise InvalidRequest(
            f"time_scale must be a positive number, got {time_scale!r} (1 = IB's real pacing "
            f"windows; smaller only against a simulator started with the same --time-scale)"
        )
    check_gateway(host, port)
    limiter = shared_limiter(f"ib:{host}:{port}", time_scale=float(time_scale))
    return IBSource(host, port, client_id, limiter=limiter, **options)


def _integer(value: object, name: str, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(f"{name} must be an integer, got {value!r}: give {flag} N")
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer, got {value!r}: give {flag} N") from None


# name → (factory, options the factory accepts)
_FACTORIES: Final[Mapping[str, tuple[Callable[[dict[str, Any]], Source], frozenset[str]]]] = {
    "synthetic": (
        _synthetic,
        frozenset({"seed", "delay", "cancel_wait", "head", "symbols", "unknown", "fail", "now"}),
    ),
    "files": (_files, frozenset({"path", "calendar_tz"})),
    "ib": (
        _ib,
        frozenset(
            {"ib_host", "ib_port", "client_id", "time_scale", "timeout"}
            | {"cancel_token", "request_gate"}
        ),
    ),
}


def make_source(name: str, **options: Any) -> Source:
    """The source called ``name`` (synthetic, files, ib), built from the options it uses."""
    key = name.strip().lower() if isinstance(name, str) else ""
    entry = _FACTORIES.get(key)
    if entry is None:
        raise InvalidRequest(f"unknown source {name!r}: use one of {', '.join(SOURCE_NAMES)}")
    factory, accepted = entry
    used: dict[str, Any] = {}
    for option, value in options.items():
        if option in accepted:
            if value is not None:
                used[option] = value
        elif option in _HINTS:
            continue
        elif option not in _NEUTRAL:
            raise InvalidRequest(
                f"unknown option {option!r} for source {key!r}: it accepts "
                f"{', '.join(sorted(accepted))}"
            )
        elif value is not None and value != _NEUTRAL[option]:
            raise InvalidRequest(
                f"option {option}={value!r} does not apply to source {key!r}; "
                f"it accepts {', '.join(sorted(accepted))}"
            )
    return factory(used)
