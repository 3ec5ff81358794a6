"""Flow overhead: the ``load_data`` flow vs. the core stages called directly, on the same work.

The work is a ``full`` load of one year of 1h bars from the synthetic source into a fresh local
store (12 segments). Both sides run it ``REPEATS`` times; the flow runs on a throw-away ephemeral
Prefect API whose start-up and first migration are excluded (one warm-up run), as they are paid
once per process, not per run. The ratio printed is flow time / direct time.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

REPEATS = 5
ARGS = {"symbol": "AAPL", "timeframe": "1h", "start": "2024-01-01", "end": "2024-12-31"}


def _direct(root: Path) -> float:
    from candleflow.loading.pipeline import LoadRequest, run_load
    from candleflow.sources.synthetic import SyntheticSource
    from candleflow.store.bar_store import BarStore

    request = LoadRequest.parse(
        ARGS["symbol"], ARGS["timeframe"], start=ARGS["start"], end=ARGS["end"], mode="full"
    )
    started = time.perf_counter()
    run_load(request, SyntheticSource(), BarStore(root))
    return time.perf_counter() - started


def _flow(root: Path) -> float:
    from flows.load_data import load_data

    started = time.perf_counter()
    load_data(**ARGS, mode="full", store=str(root))
    return time.perf_counter() - started


def main() -> None:
    home = tempfile.mkdtemp(prefix="candleflow-bench-prefect-")
    os.environ.update(
        PREFECT_HOME=home,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="ERROR",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with (
        tempfile.TemporaryDirectory() as tmp,
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        root = Path(tmp)
        _direct(root / "warm-direct")
        warm = _flow(root / "warm-flow")
        direct = [_direct(root / f"d{i}") for i in range(REPEATS)]
        flow = [_flow(root / f"f{i}") for i in range(REPEATS)]
    d, f = statistics.median(direct), statistics.median(flow)
    print(f"work: full load, 1 year of 1h bars, synthetic source, local store ({REPEATS} runs)")
    print(f"first flow run (API start + migration): {warm:7.2f} s (excluded)")
    print(f"core stages called directly: {d:7.3f} s median")
    print(f"load_data flow:              {f:7.3f} s median")
    print(f"flow overhead: {f - d:6.3f} s per run · ratio flow/direct {f / d:5.2f}x")


if __name__ == "__main__":
    main()
