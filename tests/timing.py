"""Time in the tests: the one factor that scales the few wall-clock budgets a test may assert,
and polling for a condition until a generous timeout.

A test asserts an upper bound on elapsed time only where the bound is the behaviour (bad input
is rejected before anything slow starts); it writes the bound as ``budget(seconds)``, so a busy
machine can be given more room by one setting, ``CANDLEFLOW_TEST_TIME_FACTOR`` (``.ci/run``
sets it). Everything about order or causality is asserted with events, fake clocks or counts
instead, and how fast things are belongs in ``bench/``. A timeout of a wait (how long to wait
for something that must happen) is not a bound of that kind: make it generous.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, cast

__all__ = [
    "TIME_FACTOR_ENV",
    "Running",
    "budget",
    "call_in_thread",
    "run_in_threads",
    "time_factor",
    "wait_for",
    "wait_until",
]

T = TypeVar("T")

TIME_FACTOR_ENV = "CANDLEFLOW_TEST_TIME_FACTOR"


def time_factor() -> float:
    """``CANDLEFLOW_TEST_TIME_FACTOR`` (default 1): how much slower than a quiet machine may be."""
    text = os.environ.get(TIME_FACTOR_ENV, "1")
    try:
        factor = float(text)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{TIME_FACTOR_ENV}={text!r} is invalid: use a positive number, e.g. 5")
    return factor


def budget(seconds: float) -> float:
    """A wall-clock upper bound of ``seconds`` on a quiet machine, scaled by :func:`time_factor`."""
    return seconds * time_factor()


def wait_for(condition: Callable[[], T], timeout: float, step: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy (returned at once) or ``timeout``
    seconds pass (then its last value, falsy, is returned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def wait_until(condition: Callable[[], T], timeout: float, what: str, step: float = 0.2) -> T:
    """:func:`wait_for` that fails the test, naming ``what``, when ``timeout`` seconds pass."""
    value = wait_for(condition, timeout, step)
    if not value:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
    return value


class Running(Generic[T]):
    """``call()`` started at once in a daemon thread, so the test can act while it runs (cancel
    it, say); :meth:`result` waits for it to end."""

    def __init__(self, call: Callable[[], T], name: str = "test call") -> None:
        self._outcome: list[tuple[bool, Any]] = []
        self._thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self._outcome.append((True, call()))
        except BaseException as exc:  # handed to the test by result()
            self._outcome.append((False, exc))

    def result(self, timeout: float, what: str) -> T:
        """The call's return value, or its exception raised here; fails the test naming ``what``
        when the call is still running after ``timeout`` seconds (a generous wait for a call
        that must end)."""
        self._thread.join(timeout)
        if not self._outcome:
            raise AssertionError(f"still running after {timeout:.0f}s: {what}")
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return cast(T, value)


def run_in_threads(calls: Iterable[Callable[[], object]], timeout: float = 120) -> None:
    """Each call in a thread of its own, all started before any is waited for; an exception in
    one is raised here (a plain thread would only print it), as is one still running after
    ``timeout`` seconds."""
    running = [Running(call, f"thread {k}") for k, call in enumerate(calls)]
    for k, thread in enumerate(running):
        thread.result(timeout, f"thread {k}")


def call_in_thread(call: Callable[[], T], timeout: float, what: str) -> T:
    """``call()`` in a daemon thread, waited for up to ``timeout`` seconds (:class:`Running`): for
    a call that would otherwise hang for its own much longer timeout."""
    return Running(call, what).result(timeout, what)
