"""An injected slow backtest for the progress tests: every compiled call of the engine's kernel
(one block of candles) sleeps first, so a backtest takes seconds and its candle count can be
seen mid-way. Results are unchanged (the real kernel still runs).

:func:`slow_kernel` is a context manager for this process; :func:`install` / :func:`uninstall`
are plain functions for ``distributed.Client.run`` on Dask workers (each in its own process).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["install", "slow_kernel", "uninstall"]

_ORIGINAL = "_original_simulate_chunk"


def install(delay: float) -> None:
    """Make every kernel call in this process sleep ``delay`` seconds first (idempotent)."""
    from candleflow.backtest import engine

    original: Callable[..., Any] = getattr(engine, _ORIGINAL, engine._simulate_chunk)
    setattr(engine, _ORIGINAL, original)

    def slow(*args: Any) -> Any:
        time.sleep(delay)
        return original(*args)

    engine._simulate_chunk = slow


def uninstall() -> None:
    from candleflow.backtest import engine

    original = getattr(engine, _ORIGINAL, None)
    if original is not None:
        engine._simulate_chunk = original
        delattr(engine, _ORIGINAL)


@contextlib.contextmanager
def slow_kernel(delay: float) -> Iterator[None]:
    install(delay)
    try:
        yield
    finally:
        uninstall()
