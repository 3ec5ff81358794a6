"""Eight `candleflow load`s at once, different symbols, one store, on a machine whose cores are
kept busy: all exit 0 with the right row counts (they used to time out waiting for a throw-away
API each and load nothing)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from tests.e2e.conftest import start_candleflow

pytestmark = pytest.mark.slow

SYMBOLS = ("AAPL", "MSFT", "SPY", "QQQ", "IBM", "NVDA", "AMZN", "TSLA")


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@contextlib.contextmanager
def busy_cores() -> Iterator[None]:
    """One spinning process per core until the block ends."""
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
                for _ in range(os.cpu_count() or 2)]  # fmt: skip
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join(10)
            if spinner.is_alive():
                spinner.kill()


def test_eight_parallel_loads_under_cpu_load_all_succeed(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    store = tmp_path / "store"
    start, end = "2024-01-02", "2024-03-28"
    with busy_cores():
        args = ["--timeframe", "1h", "--mode", "full", "--start", start, "--end", end]
        procs = {
            symbol: start_candleflow(cli_env, "load", symbol, *args, "--store", str(store), "-q")
            for symbol in SYMBOLS
        }
        results = {symbol: (p.wait(timeout=900), *p.communicate()) for symbol, p in procs.items()}
    failed = {s: r for s, r in results.items() if r[0] != 0}
    assert not failed, failed
    bars = BarStore(store)
    for symbol in SYMBOLS:
        stored = bars.read("synthetic", symbol, "1h")
        # Every bar of the requested days, the first and last day included, exactly once.
        first, last = stored.index[0], stored.index[-1] + pd.Timedelta(hours=1)
        expected = SyntheticSource(seed=0).bars(symbol, "1h", first, last)
        pd.testing.assert_frame_equal(stored, expected, check_freq=False)
        assert first.strftime("%Y-%m-%d") == start and last.strftime("%Y-%m-%d") == end
        assert bars.read_meta("synthetic", symbol, "1h")["rows"] == len(stored)
