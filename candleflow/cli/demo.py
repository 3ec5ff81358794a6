"""The offline demo: load bars for a few series through the Interactive Brokers path, then update.

By default it starts the IB Gateway simulator (:class:`~candleflow.ibsim.IBSimulator`) on a free
loopback port, and every load goes through the real IB path: the ``ib`` source over ``ib_async``,
the process-wide pacing limiter, the TWS wire protocol. Pacing is enforced on both sides with the
windows scaled down (``IB_TIME_SCALE``), so the demo shows the rules holding without waiting
minutes for them. ``source="synthetic"`` runs the same loads on the in-process synthetic source.

Each load is a run of the Prefect ``load-data`` flow (in-process, on the ephemeral API when no
server is configured), fed to the same progress display as the CLI. The first pass loads a year
of history per series; the second is a ``tail`` run that finds nothing new and fetches nothing —
the store is the source of truth between runs. ``direct=True`` runs the core pipeline without
Prefect (same stages, same results). Prefect is imported only when the flow runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from candleflow.errors import CandleflowError, InvalidRequest
from candleflow.loading.pipeline import LoadRequest, LoadSummary, run_load, stage_plan
from candleflow.progress import LoggingSink, ProgressTracker, Sink
from candleflow.sources.registry import IBOptions, SourceOptions, SyntheticOptions, make_source
from candleflow.store.bar_store import BarStore

__all__ = ["DEMO_SOURCES", "IB_TIME_SCALE", "DemoResult", "run_demo"]

_SEED = 7
#: The demo's sources: ``ib`` through the simulator (default) or ``synthetic`` in-process.
DEMO_SOURCES = ("ib", "synthetic")
#: IB's pacing windows × this in the demo (600 s → 6 s, 2 s → 0.02 s), on client and simulator.
IB_TIME_SCALE = 0.01


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo did: one ``(run, summary)`` per load, and what the simulator saw."""

    source: str
    loads: tuple[tuple[str, LoadSummary], ...]
    #: ``host:port`` of the simulator the ``ib`` loads went through (None for ``synthetic``).
    gateway: str | None = None
    #: Historical-data requests the simulator received, and how many broke IB's pacing rules.
    ib_requests: int = 0
    pacing_violations: int = 0


def run_demo(
    root: Path,
    *,
    source: str = "ib",
    symbols: Sequence[str] = ("AAPL", "MSFT"),
    timeframes: Sequence[str] = ("1d", "1h"),
    start: str = "2024-01-01",
    end: str = "2024-12-31",
    progress: bool = False,
    direct: bool = False,
) -> DemoResult:
    """Run a ``full`` load then a ``tail`` load per series from ``source`` (ib or synthetic)."""
    source = source.strip().lower()
    if source not in DEMO_SOURCES:
        raise InvalidRequest(f"unknown demo source {source!r}: use {' or '.join(DEMO_SOURCES)}")
    requests = [
        (run, LoadRequest.parse(symbol, tf, start=start, end=end, mode=mode))
        for run, mode in (("full", "full"), ("tail", "tail"))
        for symbol in symbols
        for tf in timeframes
    ]
    if source == "synthetic":
        options = SyntheticOptions(seed=_SEED)
        loads = _run(
            root, requests, options, start=start, end=end, progress=progress, direct=direct
        )
        return DemoResult(source, tuple(loads))

    from candleflow.ibsim import IBSimulator
    from candleflow.sources.ib import load_ib_library

    load_ib_library()  # a missing client library is reported before the simulator starts
    with IBSimulator(port=0, seed=_SEED, time_scale=IB_TIME_SCALE) as sim:
        ib_options = IBOptions(ib_host=sim.host, ib_port=sim.port, time_scale=IB_TIME_SCALE)
        loads = _run(
            root, requests, ib_options, start=start, end=end, progress=progress, direct=direct
        )
        stats = sim.stats
    return DemoResult(
        "ib",
        tuple(loads),
        gateway=f"{sim.host}:{sim.port}",
        ib_requests=stats.historical_requests,
        pacing_violations=stats.violations,
    )


def _run(
    root: Path,
    requests: Sequence[tuple[str, LoadRequest]],
    options: SourceOptions,
    *,
    start: str,
    end: str,
    progress: bool,
    direct: bool,
) -> list[tuple[str, LoadSummary]]:
    if not direct:
        return _run_flows(root, requests, options, start=start, end=end, progress=progress)
    store = BarStore(root)
    summaries: list[tuple[str, LoadSummary]] = []
    bar_source = make_source(options)
    try:
        for run, request in requests:
            with _sink(progress) as sink:
                tracker = ProgressTracker(
                    f"{run} {request.label}", [sink], stages=stage_plan(request.mode)
                )
                summaries.append((run, run_load(request, bar_source, store, tracker=tracker)))
    finally:
        bar_source.close()
    return summaries


def _run_flows(
    root: Path,
    requests: Sequence[tuple[str, LoadRequest]],
    options: SourceOptions,
    *,
    start: str,
    end: str,
    progress: bool,
) -> list[tuple[str, LoadSummary]]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from candleflow.cli.common import connect_api
    from flows.load_data import load_data, load_parameters
    from tasks.progress import progress_context

    connect_api(quiet=not progress)  # the demo ends with the UI's URL anyway
    summaries: list[tuple[str, LoadSummary]] = []
    # Short in-process runs: the heartbeat thread would only add a second to each (DESIGN §8).
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for run, request in requests:
            with _sink(progress) as sink, progress_context(extra_sinks=[sink]) as handle:
                state = load_data(
                    request.symbol, request.timeframe.name, start=start, end=end,
                    mode=request.mode.value, store=str(root), **load_parameters(options),
                    return_state=True,
                )  # fmt: skip
            if not state.is_completed() or handle.summary is None:
                raise CandleflowError(
                    f"demo load {request.label} ended {state.name}: {state.message}"
                )
            summaries.append((run, LoadSummary.from_dict(handle.summary)))
    return summaries


@contextlib.contextmanager
def _sink(rich: bool) -> Iterator[Sink]:
    if not rich:
        yield LoggingSink()
        return
    from candleflow.progress.display import RichSink

    with RichSink() as sink:
        yield sink
