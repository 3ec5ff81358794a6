"""IB pacing shared across worker processes: a Prefect global concurrency limit as a rate limit.

IB allows 60 historical requests per rolling 10 minutes per account, but the core's
:class:`~candleflow.sources.pacing.PacingLimiter` sees one process. So, with a Prefect server, every
historical request of every flow run first takes a slot from one global concurrency limit *with
slot decay* (the server keeps it as a token bucket), named after the gateway:
``ib-pacing-127.0.0.1-4002`` (``ib-pacing-127.0.0.1-4002-x0.02`` for a simulator at
``--time-scale 0.02``, so a scaled test never shares the real gateway's limit). It is created on
first use when missing; two processes racing to create it both go on (the loser's 409 is fine).

Sizes (:func:`~candleflow.sources.pacing.shared_rate_budget`): a bucket of L requests refilled at d
per second lets ``L + d·T`` requests through in any T seconds, so "60, decaying at 60 per 600 s"
would allow 60 at once and one every 10 s after — up to 120 in the first 10 minutes. The budget
takes L = 30 and d = 30 / (W + slack), W = 600 s × time_scale and slack the longest a request may
wait between its slot and the gateway (the per-process limiter's short rules, the network), so
``L + d·(W + slack) <= 60``: 30 requests at once, then one every ~20.5 s at ``time_scale=1``.
Each request occupies :data:`SLOTS_PER_REQUEST` slots: the server stores the bucket as an integer
and drops the fraction of a slot decayed since the row last changed on every update (a grant or a
refused attempt), which with one slot per request cost a quarter of the rate with two workers;
with 100 slots the loss is at most 1/100 request per update. In the UI the limit of
``ib-pacing-…`` therefore reads 3000 slots, decaying at 100 × d per second.

The in-process limiter stays in front of the gateway (per-contract, identical-request and
open-request rules) and is the only one when this gate does not apply: outside a flow run, when
no Prefect API answers, when the limit cannot serve as a rate limit, or when
``CANDLEFLOW_IB_SHARED_PACING=off`` (default ``on``). Each of these is logged once per process
and never fails a load. A cancel (the run's ``CancelToken``) ends a wait for a slot at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Final

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.context import FlowRunContext, SettingsContext, TaskRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

from candleflow.errors import Cancelled, InvalidRequest
from candleflow.progress import CancelToken
from candleflow.sources.pacing import (
    IB_PACING,
    OPEN_GATE,
    RateBudget,
    RequestGate,
    shared_rate_budget,
)

__all__ = [
    "SHARED_PACING_ENV",
    "SLOTS_PER_REQUEST",
    "TRANSPORT_RETRIES",
    "PrefectRateGate",
    "busy_delay",
    "client_without_retries",
    "ib_request_gate",
    "pacing_limit_name",
    "shared_pacing_enabled",
]

logger = logging.getLogger(__name__)

#: Environment switch: ``on`` (default) shares IB pacing through the Prefect server, ``off``
#: leaves each process to its own limiter (only safe with one process per gateway).
SHARED_PACING_ENV: Final = "CANDLEFLOW_IB_SHARED_PACING"
#: Slots of the global concurrency limit one IB request occupies (see the module docstring).
SLOTS_PER_REQUEST: Final = 100

_ON: Final = frozenset({"", "on", "1", "true", "yes"})
_OFF: Final = frozenset({"off", "0", "false", "no"})
_LOCKED: Final = 423
#: "Service unavailable": a SQLite-backed API whose database was busy for a moment.
_BUSY: Final = 503
#: Retry delays after a busy answer: ``BUSY_FIRST_DELAY`` doubling per busy answer in a row, up to
#: ``BUSY_MAX_DELAY``, each drawn between half and one and a half times that (seconds).
BUSY_FIRST_DELAY: Final = 0.05
BUSY_MAX_DELAY: Final = 1.0
#: Transport failures in a row (a dropped keep-alive connection, a timeout, a restarting server)
#: retried like busy answers (~25 s in all) before the gate opens. A connection refused before
#: the API ever answered opens it at once: there is no API.
TRANSPORT_RETRIES: Final = 30
_LOGGED: set[tuple[str, str]] = set()
_LOGGED_LOCK = threading.Lock()


def _log_once(key: tuple[str, str], level: int, message: str, *args: object) -> None:
    with _LOGGED_LOCK:
        if key in _LOGGED:
            return
        _LOGGED.add(key)
    logger.log(level, message, *args)


def shared_pacing_enabled() -> bool:
    """Whether ``CANDLEFLOW_IB_SHARED_PACING`` asks for shared pacing (``on``, the default)."""
    value = os.environ.get(SHARED_PACING_ENV, "on").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise InvalidRequest(
        f"{SHARED_PACING_ENV}={value!r} is not a switch: set it to on (default) or off"
    )


def pacing_limit_name(host: str, port: int, time_scale: float = 1.0) -> str:
    """The global concurrency limit of gateway ``host:port``, e.g. ``ib-pacing-127.0.0.1-4002``."""
    safe_host = re.sub(r"[^A-Za-z0-9._-]", "_", host.strip())
    name = f"ib-pacing-{safe_host}-{int(port)}"
    return name if float(time_scale) == 1.0 else f"{name}-x{float(time_scale):g}"


class _Unusable(Exception):
    """The limit exists but cannot pace requests; the message says why and what to do."""


class PrefectRateGate:
    """A :class:`~candleflow.sources.pacing.RequestGate` taking one request's slots per ``acquire``.

    ``client`` makes a context-managed sync Prefect client (default: :func:`client_without_retries`;
    tests pass fakes). Refused attempts (423) wait the server's ``Retry-After`` on the token, so a
    cancel interrupts them. A busy answer (503: the SQLite API found its database locked, which
    happens under concurrent writes) is retried after a short, growing pause
    (:func:`busy_delay`) — Prefect's client would wait 2, 4, 8… s, with the IB request held
    behind it; so is a failed transport, :data:`TRANSPORT_RETRIES` times in a row. Any other
    failure opens the gate for good, logged once.
    """

    def __init__(
        self,
        name: str,
        budget: RateBudget,
        *,
        client: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.name = name
        self.budget = budget
        self._client = client or client_without_retries
        self._lock = threading.Lock()
        self._ready = False
        self._open_reason: str | None = None
        self._acquired = 0
        self._waited = 0.0
        self._busy = 0
        self._answered = False  # the API has answered at least once
        self._random = random.Random()

    def __repr__(self) -> str:
        budget = self.budget
        return f"PrefectRateGate({self.name!r}, burst={budget.burst}, rate={budget.rate:.4g}/s)"

    @property
    def limit_slots(self) -> int:
        """The limit's size in slots: the burst times :data:`SLOTS_PER_REQUEST`."""
        return self.budget.burst * SLOTS_PER_REQUEST

    @property
    def decay_slots(self) -> float:
        """The limit's slot decay per second: the rate times :data:`SLOTS_PER_REQUEST`."""
        return self.budget.rate * SLOTS_PER_REQUEST

    @property
    def acquired(self) -> int:
        """Requests let through with a slot of the shared limit."""
        with self._lock:
            return self._acquired

    @property
    def waited(self) -> float:
        """Seconds spent waiting for slots (refused attempts' ``Retry-After``)."""
        with self._lock:
            return self._waited

    @property
    def busy_answers(self) -> int:
        """Busy answers (503) retried so far."""
        with self._lock:
            return self._busy

    @property
    def open_reason(self) -> str | None:
        """Why the gate lets everything through (None while it shares pacing)."""
        with self._lock:
            return self._open_reason

    def acquire(self, token: CancelToken | None) -> None:
        """Take one request's slots, waiting while the server refuses; ``Cancelled`` on cancel."""
        vanished = 0
        busy_in_a_row = 0
        failed_in_a_row = 0
        while True:
            if token is not None:
                token.raise_if_cancelled()
            with self._lock:
                if self._open_reason is not None:
                    return
                ready = self._ready
            try:
                with self._client() as client:
                    if not ready:
                        self._ensure(client)
                    response = client.increment_concurrency_slots(
                        names=[self.name], slots=SLOTS_PER_REQUEST, mode="rate_limit"
                    )
            except httpx.HTTPStatusError as exc:
                self._answered = True
                status = exc.response.status_code
                if status not in (_LOCKED, _BUSY):
                    self._open(f"the Prefect API refused it ({_describe(exc)})")
                    return
                if status == _BUSY:
                    delay = busy_delay(busy_in_a_row, self._random)
                    busy_in_a_row += 1
                    with self._lock:
                        self._busy += 1
                else:
                    delay = _retry_after(exc.response, self.budget)
                _pause(token, delay)
                if status == _LOCKED:
                    with self._lock:
                        self._waited += delay
                continue
            except (httpx.HTTPError, OSError) as exc:
                refused = isinstance(exc, httpx.ConnectError | ConnectionRefusedError)
                if (refused and not self._answered) or failed_in_a_row >= TRANSPORT_RETRIES:
                    self._open(f"no Prefect API answers ({type(exc).__name__}: {exc})")
                    return
                delay = busy_delay(failed_in_a_row, self._random)
                failed_in_a_row += 1
                _pause(token, delay)
                continue
            except _Unusable as exc:
                self._open(str(exc))
                return
            self._answered = True
            if not response.json():
                # The server knows no such limit (deleted meanwhile): create it again.
                vanished += 1
                with self._lock:
                    self._ready = False
                if vanished > 2:
                    self._open("the limit disappears as soon as it is created")
                    return
                continue
            with self._lock:
                self._acquired += 1
            return

    def _ensure(self, client: Any) -> None:
        """Create the limit when missing (a lost creation race is fine); check one that exists."""
        try:
            limit = client.read_global_concurrency_limit_by_name(self.name)
        except ObjectNotFound:
            # A 409 means another process created it a moment ago, with the same sizes.
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=self.name,
                        limit=self.limit_slots,
                        slot_decay_per_second=self.decay_slots,
                    )
                )
        else:
            self._check(limit)
        with self._lock:
            self._ready = True
        budget = self.budget
        _log_once(
            (self.name, "shared"),
            logging.INFO,
            "IB requests share the Prefect global concurrency limit %r: %d at once, then one "
            "every %.3g s (%s=off turns this off)",
            self.name, budget.burst, budget.interval, SHARED_PACING_ENV,
        )  # fmt: skip

    def _check(self, limit: Any) -> None:
        fix = f"delete it (`prefect gcl delete {self.name}`) and candleflow recreates it"
        decay = float(limit.slot_decay_per_second or 0.0)
        if decay <= 0:
            raise _Unusable(f"it has no slot decay, so it cannot be a rate limit: {fix}")
        if int(limit.limit) < SLOTS_PER_REQUEST:
            raise _Unusable(
                f"it has {limit.limit} slots and a request takes {SLOTS_PER_REQUEST}: {fix}"
            )
        if not limit.active:
            _log_once(
                (self.name, "inactive"), logging.WARNING,
                "Prefect global concurrency limit %r is inactive: IB requests of several "
                "processes are not paced together until it is activated", self.name,
            )  # fmt: skip
        budget = self.budget
        most = (limit.limit + decay * (budget.window + budget.slack)) / SLOTS_PER_REQUEST
        if most > budget.limit + 1e-9:
            _log_once(
                (self.name, "unsafe"), logging.WARNING,
                "Prefect global concurrency limit %r (%d slots, decay %g/s) lets up to %.0f IB "
                "requests through in %g s, more than the %d IB allows: pacing violations are "
                "possible; %s with %d slots and decay %.6g/s",
                self.name, limit.limit, decay, most, budget.window, budget.limit, fix,
                self.limit_slots, self.decay_slots,
            )  # fmt: skip

    def _open(self, why: str) -> None:
        with self._lock:
            self._open_reason = why
        _log_once(
            (self.name, "open"), logging.WARNING,
            "IB pacing is not shared through Prefect global concurrency limit %r: %s; each "
            "process paces only its own requests", self.name, why,
        )  # fmt: skip


def ib_request_gate(
    source: str, host: str, port: int, time_scale: float = 1.0
) -> RequestGate | None:
    """The gate the ``ib`` source of this flow run passes (None for other sources).

    A :class:`PrefectRateGate` on :func:`pacing_limit_name` inside a flow or task run with
    ``CANDLEFLOW_IB_SHARED_PACING`` on; otherwise the open gate, logged once. A malformed
    ``time_scale`` or port gives None: ``make_source`` rejects them, naming the parameter.
    """
    if not isinstance(source, str) or source.strip().lower() != "ib":
        return None
    if (
        isinstance(time_scale, bool)
        or not isinstance(time_scale, int | float)
        or not math.isfinite(time_scale)
        or time_scale <= 0
        or isinstance(port, bool)
        or not isinstance(port, int)
    ):
        return None
    name = pacing_limit_name(host, port, time_scale)
    if not shared_pacing_enabled():
        _log_once(
            (name, "off"), logging.INFO,
            "%s=off: IB requests to %s:%s are paced per process only", SHARED_PACING_ENV, host,
            port,
        )  # fmt: skip
        return OPEN_GATE
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        _log_once(
            (name, "no-run"), logging.INFO,
            "not inside a Prefect flow run: IB requests to %s:%s are paced per process only",
            host, port,
        )  # fmt: skip
        return OPEN_GATE
    return PrefectRateGate(name, shared_rate_budget(IB_PACING, time_scale=float(time_scale)))


def busy_delay(in_a_row: int, rng: random.Random) -> float:
    """Seconds to wait after the ``in_a_row``-th busy answer in a row (0 for the first)."""
    base = min(BUSY_FIRST_DELAY * 2.0**in_a_row, BUSY_MAX_DELAY)
    return base * rng.uniform(0.5, 1.5)


#: Settings in force (by id, kept alive so the id stays theirs) → the same without retries.
_NO_RETRIES: dict[int, tuple[Any, SettingsContext]] = {}
_NO_RETRIES_LOCK = threading.Lock()


@contextlib.contextmanager
def client_without_retries() -> Iterator[Any]:
    """A sync Prefect client (the run's own when there is one) whose requests are not retried.

    The gate retries itself (:class:`PrefectRateGate`), at its own pace. The settings with
    ``PREFECT_CLIENT_MAX_RETRIES=0`` are built once per settings in force (building them costs
    ~30 ms) and entered as a context, which costs microseconds.
    """
    current = SettingsContext.get()
    assert current is not None  # prefect always has a root settings context
    with _NO_RETRIES_LOCK:
        seen, context = _NO_RETRIES.get(id(current.settings), (None, None))
        if seen is not current.settings or context is None:
            if len(_NO_RETRIES) >= 8:
                _NO_RETRIES.clear()
            settings = current.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
            context = SettingsContext(profile=current.profile, settings=settings)
            _NO_RETRIES[id(current.settings)] = (current.settings, context)
    with context.model_copy(), get_client(sync_client=True) as client:
        yield client


def _retry_after(response: httpx.Response, budget: RateBudget) -> float:
    """The server's ``Retry-After`` (seconds), kept between a millisecond and one window."""
    try:
        value = float(response.headers.get("Retry-After", budget.interval))
    except ValueError:
        value = budget.interval
    if not math.isfinite(value):
        value = budget.interval
    return min(max(value, 0.001), budget.window + budget.slack)


def _pause(token: CancelToken | None, seconds: float) -> None:
    """Wait ``seconds``; ``Cancelled`` as soon as ``token`` is set."""
    if token is None:
        time.sleep(seconds)
    elif token.wait(seconds):
        raise Cancelled(token.reason) from None  # not "during handling of" the refusal


def _describe(exc: httpx.HTTPStatusError) -> str:
    try:
        detail = exc.response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"HTTP {exc.response.status_code}" + (f": {detail}" if detail else "")
