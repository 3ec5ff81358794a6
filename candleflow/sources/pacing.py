"""IB's historical-data pacing rules as data, one sliding-window implementation, and its two users.

IB refuses historical requests (error 162, "pacing violation") when a client makes more than 60
requests in any 600 s, repeats an identical request within 15 s, makes six or more requests for
the same contract, exchange and tick type within 2 s (``BID_ASK`` counts twice everywhere), or has
more than 50 requests open (DESIGN §4.3). :class:`PacingRules` holds those numbers,
:class:`PacingWindows` is the one implementation of the windows, and it has two users:

* :class:`PacingLimiter` — the client side. ``acquire(key)`` blocks (interruptibly, on an
  injectable clock) until the request is allowed, then records it, so violations cannot happen.
  It waits for windows that are ``margin`` real seconds longer than the rules', which absorbs the
  delay between deciding to send and the gateway receiving. Thread-safe; :func:`shared_limiter`
  hands every fetch in a process the same limiter for one gateway.
* :class:`PacingJudge` — the simulator side: says whether an incoming request breaks a rule.

``time_scale`` shrinks every window: with ``time_scale=0.01`` the 600 s window lasts 6 s, so tests
exercise the real rules quickly. ``margin`` is never scaled.

The limiter sees one process. Pacing across processes (workers sharing one gateway) goes through a
:class:`RequestGate` that the IB source passes before each historical request — a no-op
(:data:`OPEN_GATE`) by default; the orchestration layer supplies one backed by a shared rate
limit, sized by :func:`shared_rate_budget` so that no rolling window can hold more requests than
IB allows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from candleflow.errors import Cancelled, InvalidRequest
from candleflow.progress import CancelToken

__all__ = [
    "IB_PACING",
    "OPEN_GATE",
    "Clock",
    "MonotonicClock",
    "OpenGate",
    "PacingJudge",
    "PacingLimiter",
    "PacingRules",
    "PacingWindows",
    "Permit",
    "RateBudget",
    "RequestGate",
    "RequestKey",
    "shared_limiter",
    "shared_rate_budget",
]


@dataclass(frozen=True, slots=True)
class RequestKey:
    """What the pacing rules look at in a historical request.

    ``contract`` identifies the instrument (``"AAPL@SMART"`` or a conId), ``exchange`` and
    ``what_to_show`` (the tick type, e.g. ``TRADES``, ``BID_ASK``) complete the 2-second rule's
    key, and ``params`` (end time, duration, bar size…) makes two requests *identical*.
    """

    contract: str
    exchange: str = "SMART"
    what_to_show: str = "TRADES"
    params: str = ""

    @property
    def weight(self) -> int:
        """``BID_ASK`` requests count twice (IB docs)."""
        return 2 if self.what_to_show.upper() == "BID_ASK" else 1

    @property
    def series(self) -> tuple[str, str, str]:
        """The 2-second rule's key: contract, exchange, tick type."""
        return (self.contract, self.exchange, self.what_to_show.upper())


@dataclass(frozen=True, slots=True)
class PacingRules:
    """IB's historical-data pacing limits (seconds are real IB seconds, before any time scale)."""

    max_requests: int = 60
    window: float = 600.0
    identical_window: float = 15.0
    max_same_series: int = 5  # "six or more … within two seconds" is a violation
    same_series_window: float = 2.0
    max_open: int = 50

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_same_series", "max_open"):
            if getattr(self, name) < 1:
                raise InvalidRequest(f"pacing rule {name} must be >= 1, got {getattr(self, name)}")
        for name in ("window", "identical_window", "same_series_window"):
            if getattr(self, name) < 0:
                raise InvalidRequest(f"pacing rule {name} must be >= 0, got {getattr(self, name)}")


#: The rules IB documents for historical data.
IB_PACING = PacingRules()


def _check_scale(time_scale: float) -> float:
    if not isinstance(time_scale, int | float) or not time_scale > 0:
        raise InvalidRequest(f"time_scale must be a positive number, got {time_scale!r}")
    return float(time_scale)


@dataclass(frozen=True, slots=True)
class _Record:
    at: float
    key: RequestKey


class PacingWindows:
    """The sliding windows of :class:`PacingRules` over recorded requests (not thread-safe).

    ``extra`` seconds lengthen every window (the limiter's safety margin; 0 for the judge).
    A request at ``t`` sees recorded requests at ``r`` with ``t - window < r <= t``.
    """

    def __init__(
        self, rules: PacingRules = IB_PACING, *, time_scale: float = 1.0, extra: float = 0.0
    ) -> None:
        self.rules = rules
        self.time_scale = _check_scale(time_scale)
        if extra < 0:
            raise InvalidRequest(f"extra window length must be >= 0, got {extra!r}")
        self._window = rules.window * self.time_scale + extra
        self._identical = rules.identical_window * self.time_scale + extra
        self._series = rules.same_series_window * self.time_scale + extra
        self._records: deque[_Record] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - max(self._window, self._identical, self._series)
        while self._records and self._records[0].at <= horizon:
            self._records.popleft()

    def record(self, key: RequestKey, at: float) -> None:
        self._expire(at)
        self._records.append(_Record(at, key))

    def wait_time(self, key: RequestKey, now: float) -> float:
        """Seconds from ``now`` until ``key`` may be sent without breaking a window rule."""
        self._expire(now)
        rules = self.rules
        wait = 0.0
        weight = key.weight
        all_recent = [r for r in self._records if r.at > now - self._window]
        wait = max(wait, _count_wait(all_recent, weight, rules.max_requests, self._window, now))
        series = [
            r for r in self._records if r.at > now - self._series and r.key.series == key.series
        ]
        wait = max(wait, _count_wait(series, weight, rules.max_same_series, self._series, now))
        for r in reversed(self._records):
            if r.at <= now - self._identical:
                break
            if r.key == key:
                wait = max(wait, _until(r.at, self._identical, now))
                break
        return wait

    def violation(self, key: RequestKey, now: float) -> str | None:
        """Why a request for ``key`` at ``now`` breaks a rule, or None when it is allowed."""
        self._expire(now)
        rules = self.rules
        recent = sum(r.key.weight for r in self._records if r.at > now - self._window)
        if recent + key.weight > rules.max_requests:
            return (
                f"more than {rules.max_requests} requests within {rules.window:g} s "
                f"(scaled x{self.time_scale:g})"
            )
        if any(r.key == key for r in self._records if r.at > now - self._identical):
            return f"identical request within {rules.identical_window:g} s"
        same = sum(
            r.key.weight
            for r in self._records
            if r.at > now - self._series and r.key.series == key.series
        )
        if same + key.weight > rules.max_same_series:
            return (
                f"{rules.max_same_series + 1} or more requests for {'/'.join(key.series)} "
                f"within {rules.same_series_window:g} s"
            )
        return None


def _count_wait(
    records: list[_Record], weight: int, limit: int, window: float, now: float
) -> float:
    """Wait for the oldest ``records`` to leave the window until ``weight`` more fits ``limit``."""
    used = sum(r.key.weight for r in records)
    if used + weight <= limit:
        return 0.0
    if weight > limit:
        raise InvalidRequest(f"a request of weight {weight} can never fit a limit of {limit}")
    for r in records:  # oldest first
        used -= r.key.weight
        if used + weight <= limit:
            return _until(r.at, window, now)
    return _until(records[-1].at, window, now)  # pragma: no cover - loop always returns


def _until(at: float, window: float, now: float) -> float:
    """Seconds until a record at ``at`` that still counts (``at > now - window``) leaves it.

    Never zero: float rounding can make ``at + window - now`` zero or negative while the record
    still counts, and a zero wait would let the request through early.
    """
    return max(at + window - now, 1e-9)


class Clock(Protocol):
    """Time for the limiter: a monotonic ``now()`` and an interruptible ``wait``."""

    def now(self) -> float: ...

    def wait(self, seconds: float, token: CancelToken | None) -> bool:
        """Wait up to ``seconds``; return True when ``token`` was cancelled."""
        ...


class MonotonicClock:
    """Real time: ``time.monotonic`` and a wait that a ``CancelToken`` interrupts."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, token: CancelToken | None) -> bool:
        if token is not None:
            return token.wait(seconds)
        time.sleep(max(seconds, 0.0))
        return False


class MessageThrottle:
    """At most ``per_second`` messages in any second (IB's API limit for one client is 50), for
    requests to pass just before the :class:`PacingLimiter`: a throttle inside the client library
    would hold a request back *after* the limiter recorded it as sent, and the gateway would see
    it later than the limiter's margin allows. ``per_second=0`` lets everything through."""

    def __init__(self, per_second: int, clock: Clock | None = None) -> None:
        self.per_second = per_second
        self.clock = clock or MonotonicClock()
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, token: CancelToken | None = None) -> None:
        """Wait until one more message fits, then count it; ``Cancelled`` if ``token`` is."""
        if self.per_second <= 0:
            return
        while True:
            with self._lock:
                now = self.clock.now()
                while self._sent and self._sent[0] <= now - 1.0:
                    self._sent.popleft()
                if len(self._sent) < self.per_second:
                    self._sent.append(now)
                    return
                wait = self._sent[0] + 1.0 - now
            if self.clock.wait(max(wait, 1e-6), token):
                raise Cancelled(token.reason if token is not None else "cancelled")


class Permit:
    """An acquired request slot; release it (or leave its ``with`` block) when answered."""

    __slots__ = ("_limiter", "_released", "key", "sent_at")

    def __init__(self, limiter: PacingLimiter, key: RequestKey, sent_at: float) -> None:
        self._limiter = limiter
        self._released = False
        self.key = key
        self.sent_at = sent_at

    def release(self) -> None:
        """Mark the request answered (frees one of the open-request slots); idempotent."""
        if not self._released:
            self._released = True
            self._limiter._release()

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class PacingLimiter:
    """Blocks each historical request until IB's pacing rules allow it (see module docstring).

    ``margin`` real seconds are added to every window, so a request received by the gateway up to
    ``margin`` later than it was acquired is still within the rules. Waits go through ``clock``
    (tests pass a fake one) and stop with ``Cancelled`` when the token is cancelled.
    """

    def __init__(
        self,
        rules: PacingRules = IB_PACING,
        *,
        time_scale: float = 1.0,
        margin: float = 0.1,
        clock: Clock | None = None,
    ) -> None:
        self.rules = rules
        self.time_scale = _check_scale(time_scale)
        self.margin = float(margin)
        self._windows = PacingWindows(rules, time_scale=self.time_scale, extra=self.margin)
        self._clock: Clock = clock or MonotonicClock()
        self._cond = threading.Condition()
        self._open = 0
        self._acquired = 0
        self._waited = 0.0

    def __repr__(self) -> str:
        return f"PacingLimiter(time_scale={self.time_scale:g}, margin={self.margin:g})"

    @property
    def acquired(self) -> int:
        """Requests let through so far."""
        with self._cond:
            return self._acquired

    @property
    def waited(self) -> float:
        """Seconds spent waiting for the rules so far (clock seconds, all callers together)."""
        with self._cond:
            return self._waited

    @property
    def open_requests(self) -> int:
        with self._cond:
            return self._open

    def acquire(self, key: RequestKey, token: CancelToken | None = None) -> Permit:
        """Wait until ``key`` may be sent, record it, and return its :class:`Permit`.

        Raises ``Cancelled`` when ``token`` is cancelled while waiting.
        """
        while True:
            if token is not None:
                token.raise_if_cancelled()
            with self._cond:
                now = self._clock.now()
                delay = self._windows.wait_time(key, now)
                if delay <= 0 and self._open < self.rules.max_open:
                    self._windows.record(key, now)
                    self._open += 1
                    self._acquired += 1
                    return Permit(self, key, now)
                if delay <= 0:
                    # Only the open-request cap blocks: wake on a release (or to poll the token).
                    self._cond.wait(timeout=0.1)
                    continue
            if self._clock.wait(delay, token):
                raise Cancelled(token.reason if token is not None else "cancelled")
            with self._cond:
                self._waited += delay

    def _release(self) -> None:
        with self._cond:
            self._open = max(0, self._open - 1)
            self._cond.notify()


class PacingJudge:
    """Decides, as IB would, whether each incoming historical request violates the rules.

    Refused requests are not recorded (they never reach the data farm). Thread-safe.
    """

    def __init__(
        self,
        rules: PacingRules = IB_PACING,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = rules
        self._windows = PacingWindows(rules, time_scale=time_scale)
        self._clock = clock
        self._lock = threading.Lock()
        self._open = 0
        self.violations = 0

    def judge(self, key: RequestKey, now: float | None = None) -> str | None:
        """Record an incoming request; return the rule it breaks, or None (then it is open)."""
        with self._lock:
            at = self._clock() if now is None else now
            reason = self._windows.violation(key, at)
            if reason is None and self._open >= self.rules.max_open:
                reason = f"more than {self.rules.max_open} open requests"
            if reason is not None:
                self.violations += 1
                return reason
            self._windows.record(key, at)
            self._open += 1
            return None

    def finish(self) -> None:
        """An accepted request has been answered."""
        with self._lock:
            self._open = max(0, self._open - 1)


_SHARED: dict[str, PacingLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(
    name: str = "default", *, rules: PacingRules = IB_PACING, time_scale: float = 1.0
) -> PacingLimiter:
    """The process-wide limiter called ``name`` (e.g. one per gateway ``host:port``).

    Created on first use; later calls must ask for the same rules and time scale.
    """
    with _SHARED_LOCK:
        limiter = _SHARED.get(name)
        if limiter is None:
            limiter = _SHARED[name] = PacingLimiter(rules, time_scale=time_scale)
        elif limiter.rules != rules or limiter.time_scale != float(time_scale):
            raise InvalidRequest(
                f"shared limiter {name!r} exists with {limiter!r}; ask for the same rules and "
                f"time_scale, or use another name"
            )
        return limiter


class RequestGate(Protocol):
    """A shared admission step each historical request passes before the per-process limiter.

    ``acquire`` blocks until the request may be sent (e.g. a rate-limit slot held across worker
    processes by an orchestrator) and raises ``Cancelled`` as soon as ``token`` is cancelled while
    it waits. A gate that cannot reach whatever it shares must let requests through (the
    :class:`PacingLimiter` still holds each process to the rules), never fail them.
    """

    def acquire(self, token: CancelToken | None) -> None: ...


class OpenGate:
    """The default :class:`RequestGate`: lets every request through at once."""

    def acquire(self, token: CancelToken | None) -> None:
        return None

    def __repr__(self) -> str:
        return "OpenGate()"


#: The gate of a source that shares its pacing with no other process.
OPEN_GATE = OpenGate()


@dataclass(frozen=True, slots=True)
class RateBudget:
    """A token bucket (``burst`` at once, then ``rate`` per second) within ``limit`` per ``window``.

    A bucket of capacity L refilled at d per second lets at most ``L + d·T`` requests through in
    any T seconds (it holds at most L at the start of the span and gains d·T during it). So a
    bucket of 60 refilled at 60 per 600 s is *not* IB's rule: it allows 60 at once and then one
    every 10 s, 120 in the first 600 s. Requests also leave a little after their token (the
    per-process limiter's short rules, the network): up to ``slack`` seconds. Sends in a window
    of W seconds then hold tokens from W + slack seconds, which is why the budget satisfies
    ``L + d·(W + slack) <= limit`` (see :meth:`most_in`), and a fortiori ``L + d·W <= limit``.
    """

    burst: int
    rate: float
    window: float
    slack: float
    limit: int

    def most_in(self, seconds: float) -> float:
        """The most tokens the bucket can hand out within ``seconds``: ``burst + rate·seconds``."""
        return self.burst + self.rate * seconds

    @property
    def interval(self) -> float:
        """Seconds between tokens once the burst is spent."""
        return 1.0 / self.rate


def shared_rate_budget(
    rules: PacingRules = IB_PACING, *, time_scale: float = 1.0, send_delay: float = 1.0
) -> RateBudget:
    """The token bucket that keeps every process sharing it within IB's requests per window.

    Half the requests form the burst (L = max_requests // 2: a short load starts at once), the
    other half is spread over the window: d = (max_requests - L) / (W + slack), with W the
    scaled window and slack the longest a request may wait between its token and the gateway —
    the per-process limiter's identical-request and same-series windows (scaled) plus
    ``send_delay`` real seconds for its margin and the network. For IB at ``time_scale=1``:
    30 at once, then one every 20.5 s. The per-process 60-per-window rule never adds a wait on
    top: one process alone can hold at most ``L + d·(W + margin) < 60`` tokens in a window.
    """
    scale = _check_scale(time_scale)
    if not send_delay >= 0:
        raise InvalidRequest(f"send_delay must be >= 0 seconds, got {send_delay!r}")
    window = rules.window * scale
    slack = max(rules.identical_window, rules.same_series_window) * scale + float(send_delay)
    burst = max(1, rules.max_requests // 2)
    rate = (rules.max_requests - burst) / (window + slack) if rules.max_requests > burst else 0.0
    if not rate > 0:
        raise InvalidRequest(
            f"pacing rules allow {rules.max_requests} request(s) per window: too few to share "
            f"as a burst and a rate"
        )
    return RateBudget(burst, rate, window, slack, rules.max_requests)
