"""Fixtures for the IB tests: a simulator per test and the installed client library."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from types import ModuleType
from typing import Any, TypeVar

import pytest

from candleflow.ibsim import IBSimulator
from candleflow.sources.ib import load_ib_library

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
