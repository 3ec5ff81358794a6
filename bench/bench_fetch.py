"""Benchmark of the IB fetch path: two years of 1-minute bars for one symbol through the simulator.

The simulator runs as its own process (``python -m candleflow.ibsim``), as a gateway would, with
pacing off (there and in the limiter), so the numbers are the pipeline's own: historical requests
made vs. the theoretical minimum (the planned segments: one per trading day at IB's 1-day maximum
for 1-minute bars), bars per second end to end (validate → save), and where this process's CPU
time goes — the IB client library (ib_async/ib_insync, eventkit and the asyncio loop running them
in the adapter's thread) vs. our code (candleflow and the pandas/pyarrow/stdlib work it asks for,
store writes included) — from cProfile run in both the caller's thread and the adapter's thread.
Time spent blocked (waiting for the gateway's answer, locks) is reported apart.
Run ``python -m bench.bench_fetch``.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from candleflow.loading.pipeline import LoadRequest, run_load
from candleflow.sources.ib import MAX_MESSAGES, IBSource
from candleflow.sources.pacing import PacingLimiter, PacingRules
from candleflow.store.bar_store import BarStore
from candleflow.store.journal import Journal
from candleflow.timeframes import Timeframe

SYMBOL = "AAPL"
GOAL = 50_000  # bars/s end to end, pacing off (issue 15)
START, END = "2023-01-01", "2024-12-31"
_NO_PACING = PacingRules(
    max_requests=10**9, max_same_series=10**9, identical_window=0.0, max_open=10**6
)
_LIBRARY = ("/ib_async/", "/ib_insync/", "/eventkit/", "/asyncio/", "/selectors.py")
_BLOCKING = ("acquire", "poll", "select", "sleep", "wait")


@dataclass(frozen=True, slots=True)
class FetchBench:
    """What one run measured; ``cpu`` maps a category to seconds of profiled time."""

    segments: int
    requests: int
    bars: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def simulator_process(seed: int = 1) -> Iterator[int]:
    """A simulator in a child process on a free port (pacing off); yields the port."""
    cmd = [sys.executable, "-m", "candleflow.ibsim", "--port", "0", "--seed", str(seed)]
    proc = subprocess.Popen([*cmd, "--no-pacing"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout is not None else ""
        if "listening on" not in line:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _category(filename: str, function: str) -> str:
    if filename == "~" and any(word in function for word in _BLOCKING):
        return "blocked (waiting for the gateway, locks)"
    if any(marker in filename for marker in _LIBRARY):
        return "client library (ib_async/eventkit/asyncio)"
    return "our code (candleflow + pandas/pyarrow/stdlib it calls)"


def _cpu(profiles: list[cProfile.Profile]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for profile in profiles:
        raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
        raw = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        for (filename, _, function), row in raw.items():
            totals[_category(filename, function)] += row[2]  # tottime
    return dict(totals)


_STAGES = (
    ("IBSource.fetch (pacing, request, wait, parse)", "sources/ib.py", "fetch"),
    ("journal appends (one per segment)", "candleflow/store/journal.py", "append"),
    ("save_bars (partitions written once)", "candleflow/loading/pipeline.py", "save_bars"),
)


def _stages(caller: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of the caller's main steps (wall time inside them, waits included)."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = pstats.Stats(caller).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for label, path, function in _STAGES:
        out[label] = sum(
            row[3] for (f, _, fn), row in raw.items() if f.endswith(path) and fn == function
        )
    return out


def _in_adapter_thread(source: IBSource, call: Callable[[], None]) -> None:
    """Run ``call`` in the adapter's event-loop thread (cProfile profiles one thread)."""
    worker = source._worker  # the benchmark reaches in on purpose
    if worker is None:
        raise RuntimeError("the IB source has no event loop yet; validate first")

    async def invoke() -> None:
        call()

    asyncio.run_coroutine_threadsafe(invoke(), worker.loop).result()


class _NoJournalStore(BarStore):
    """A local store without the fetch journal: each segment rewrites its partition."""

    def journal(self, source: str, symbol: str, timeframe: str | Timeframe) -> Journal | None:
        return None


def run(
    profile: bool = False,
    start: str = START,
    end: str = END,
    throttle: bool = False,
    lanes: int = 1,
    journal: bool = True,
) -> FetchBench:
    """One ``full`` load of ``SYMBOL`` 1m bars from ``start`` to ``end`` into a fresh store;
    ``throttle`` keeps the client's message throttle (45 messages/s, IB's API limit being 50),
    ``lanes`` requests are kept in flight, and ``journal=False`` writes each fetched segment
    into its partition at once (as every load did before the journal; an object store still
    does)."""
    request = LoadRequest.parse(SYMBOL, "1m", start=start, end=end, mode="full")
    profiles: list[cProfile.Profile] = []
    limiter = PacingLimiter(_NO_PACING, margin=0.0)
    with (
        tempfile.TemporaryDirectory() as root,
        simulator_process() as port,
        IBSource(
            port=port, limiter=limiter, max_messages=MAX_MESSAGES if throttle else 0, lanes=lanes
        ) as source,
    ):
        source.validate(SYMBOL)  # connect before timing; the load validates again
        if profile:
            adapter, caller = cProfile.Profile(), cProfile.Profile()
            profiles = [adapter, caller]
            _in_adapter_thread(source, adapter.enable)
            caller.enable()
        started = time.perf_counter()
        store = BarStore(root) if journal else _NoJournalStore(root)
        summary = run_load(request, source, store)
        seconds = time.perf_counter() - started
        if profile:
            caller.disable()
            _in_adapter_thread(source, adapter.disable)
        requests = source.historical_calls
    stages = _stages(profiles[1]) if profiles else {}
    return FetchBench(
        summary.segments, requests, summary.rows_added, seconds, _cpu(profiles), stages
    )


def _line(label: str, bench: FetchBench, base: FetchBench | None = None) -> str:
    ratio = f"  x{bench.bars_per_second / base.bars_per_second:5.2f}" if base else ""
    per_request = bench.seconds / max(bench.requests, 1) * 1000
    return (
        f"  {label:44s} {bench.seconds:6.2f} s {bench.bars_per_second:9,.0f} bars/s "
        f"{per_request:5.1f} ms/request{ratio}"
    )


def main() -> None:
    plain = run()
    lanes = run(lanes=2)
    per_segment = run(journal=False)
    throttled = run(throttle=True)
    profiled = run(profile=True)
    ratio = plain.requests / plain.segments if plain.segments else float("nan")
    print(f"{SYMBOL} 1m bars {START} → {END}, IB simulator in a child process, pacing off")
    print(
        f"requests made:    {plain.requests} (theoretical minimum {plain.segments}, x{ratio:.2f};"
        f" with 2 lanes {lanes.requests})"
    )
    print(f"bars stored:      {plain.bars:,}")
    print(f"end to end (goal ≥ {GOAL:,} bars/s, ratios against per-segment writes):")
    print(_line("per-segment partition writes (before)", per_segment))
    print(_line("journal, partitions written once (1 lane)", plain, per_segment))
    print(_line("journal, 2 lanes (--ib-lanes 2)", lanes, per_segment))
    ceiling = MAX_MESSAGES * plain.bars / max(plain.requests, 1)
    print(_line(f"1 lane, client throttle {MAX_MESSAGES} msg/s (real IB)", throttled, per_segment))
    print(
        f"  (the throttle alone caps one connection at {ceiling:,.0f} bars/s here: "
        f"{throttled.bars_per_second / ceiling:.0%} of it reached)"
    )
    busy = {k: v for k, v in profiled.cpu.items() if not k.startswith("blocked")}
    total = sum(busy.values()) or 1.0
    print("CPU time in this process (cProfile, caller + adapter threads, blocking excluded):")
    for name, seconds in sorted(busy.items(), key=lambda kv: -kv[1]):
        print(f"  {name:56s} {seconds:6.2f} s  {seconds / total * 100:5.1f} %")
    for name, seconds in profiled.cpu.items():
        if name.startswith("blocked"):
            print(f"  {name:56s} {seconds:6.2f} s  (both threads, overlapping)")
    print(f"caller's time by step (profiled run, {profiled.seconds:.2f} s):")
    for name, seconds in profiled.stages.items():
        print(f"  {name:56s} {seconds:6.2f} s  {seconds / profiled.seconds * 100:5.1f} %")


if __name__ == "__main__":
    main()
