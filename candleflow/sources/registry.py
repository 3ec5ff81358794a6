"""Bar sources by name: the one place that turns a source's options into a :class:`Source`.

``make_source(parse_source_options("ib", ib_port=4002, time_scale=0.01), cancel_token=token)``:
the options are parsed once where they enter (:mod:`candleflow.sources.options`, typed records
per source), and ``make_source`` builds the source from the record plus what it may use at run
time — ``cancel_wait(seconds) -> bool`` (a synthetic source's waits end on cancellation),
``cancel_token`` (an IB source's gate, pacing and reconnect waits too) and ``request_gate`` (IB
pacing shared with other processes); a source ignores what it does not use.
``make_source("synthetic", seed=1)`` — a name with raw options — parses them first.

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

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from candleflow.errors import SourceUnavailable
from candleflow.sources.base import Source
from candleflow.sources.options import (
    DEFAULT_CLIENT_ID,
    DEFAULT_IB_HOST,
    DEFAULT_IB_PORT,
    SOURCE_NAMES,
    FilesOptions,
    IBOptions,
    SourceOptions,
    SyntheticOptions,
    option_values,
    parse_source_options,
)

if TYPE_CHECKING:
    from candleflow.progress import CancelToken
    from candleflow.sources.pacing import RequestGate

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_IB_HOST",
    "DEFAULT_IB_PORT",
    "LOCAL_SOURCES",
    "SOURCE_NAMES",
    "FilesOptions",
    "IBOptions",
    "SourceOptions",
    "SyntheticOptions",
    "check_gateway",
    "make_source",
    "parse_source_options",
]

#: Sources that answer without a network or an account: validating a symbol on them is instant.
LOCAL_SOURCES: Final = frozenset({"synthetic", "files"})
#: Seconds the gateway check waits for a TCP connection (loopback refusals are instant).
GATEWAY_CHECK_TIMEOUT: Final = 3.0


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
            f"the offline simulator; then rerun against that host and port"
        ) from None


def make_source(
    options: SourceOptions | str,
    /,
    *,
    cancel_wait: Callable[[float], bool] | None = None,
    cancel_token: CancelToken | None = None,
    request_gate: RequestGate | None = None,
    **raw: Any,
) -> Source:
    """The source ``options`` describe (a record of :mod:`candleflow.sources.options`).

    Given a source name, or a record with ``raw`` options overriding some of it, the options are
    parsed first (:func:`parse_source_options`), with the same errors.
    """
    if isinstance(options, str) or raw:
        name = options if isinstance(options, str) else options.name
        base = {} if isinstance(options, str) else option_values(options)
        options = parse_source_options(name, **{**base, **raw})
    if isinstance(options, SyntheticOptions):
        from candleflow.sources.synthetic import SyntheticSource

        extra = {} if options.head is None else {"head": options.head}
        return SyntheticSource(
            options.seed, symbols=options.symbols, unknown=options.unknown, delay=options.delay,
            fail=options.fail, now=options.now, cancel_wait=cancel_wait, **extra,
        )  # fmt: skip
    if isinstance(options, FilesOptions):
        from candleflow.sources.files import FileSource

        return FileSource(options.path, calendar_tz=options.calendar_tz, strict=options.strict)
    return _ib(options, cancel_token, request_gate)


def _ib(
    options: IBOptions, cancel_token: CancelToken | None, request_gate: RequestGate | None
) -> Source:
    from candleflow.sources.ib import IBSource
    from candleflow.sources.pacing import shared_limiter

    host, port = options.ib_host, options.ib_port
    check_gateway(host, port)
    limiter = shared_limiter(f"ib:{host}:{port}", time_scale=options.time_scale)
    extra: dict[str, Any] = {} if options.timeout is None else {"timeout": options.timeout}
    extra.update(exchange=options.ib_exchange, currency=options.currency, lanes=options.lanes)
    return IBSource(
        host, port, options.client_id, limiter=limiter, cancel_token=cancel_token,
        request_gate=request_gate, **extra,
    )  # fmt: skip
