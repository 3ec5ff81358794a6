"""Fixtures for the IB tests: a simulator per test, the installed client library, and a real
clock for the pacing limiter that announces its waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import ModuleType
from typing import Any, TypeVar

import pytest

from candleflow.ibsim import IBSimulator
from candleflow.progress import CancelToken
from candleflow.sources.ib import load_ib_library
from candleflow.sources.pacing import MonotonicClock

T = TypeVar("T")


@pytest.fixture(scope="session")
def iblib() -> ModuleType:
    """ib_async, or ib_insync in the compatibility venv."""
    return load_ib_library()


@pytest.fixture
def sim() -> Iterator[IBSimulator]:
    with IBSimulator(seed=7, time_scale=0.01) as simulator:
        yield simulator


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a client coroutine on a fresh loop, as an application would."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # ib_insync looks the loop up with get_event_loop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class WaitSignallingClock(MonotonicClock):
    """Real time for a ``PacingLimiter`` that sets ``waiting`` as each wait starts, so a test can
    cancel a wait that is under way instead of guessing when it will be."""

    def __init__(self) -> None:
        self.waiting = threading.Event()

    def wait(self, seconds: float, token: CancelToken | None) -> bool:
        self.waiting.set()
        return super().wait(seconds, token)


def cancel_once_waiting(clock: WaitSignallingClock, token: CancelToken, reason: str) -> None:
    """Cancel ``token`` from another thread as soon as ``clock`` is waiting."""

    def cancel() -> None:
        if clock.waiting.wait(60):
            token.cancel(reason)

    threading.Thread(target=cancel, daemon=True).start()


class FakeClock:
    """Time that passes only when someone waits."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def wait(self, seconds: float, token: CancelToken | None) -> bool:
        self.waits.append(seconds)
        self.t += seconds
        return token is not None and token.cancelled
