"""The offline demo: load synthetic bars for a few series into a store, then update them.

Each load is a run of the Prefect ``load-data`` flow (in-process, on the ephemeral API when no
server is configured), fed to the same progress display as the CLI. The first pass loads a year
of history per series; the second is a ``tail`` run that finds nothing new and makes no fetch
calls — the store is the source of truth between runs. ``direct=True`` runs the core pipeline
without Prefect (same stages, same results). Prefect is imported only when the flow runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

from candleflow.errors import CandleflowError
from candleflow.loading import LoadRequest, LoadSummary, run_load, stage_plan
from candleflow.progress import LoggingSink, ProgressTracker, Sink
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store import BarStore

_SEED = 7


def run_demo(
    root: Path,
    *,
    symbols: Sequence[str] = ("AAPL", "MSFT"),
    timeframes: Sequence[str] = ("1d", "1h"),
    start: str = "2024-01-01",
    end: str = "2024-12-31",
    progress: bool = False,
    direct: bool = False,
) -> list[tuple[str, LoadSummary]]:
    """Run a ``full`` load then a ``tail`` load per series; return (run, summary) pairs."""
    requests = [
        (run, LoadRequest.parse(symbol, tf, start=start, end=end, mode=mode))
        for run, mode in (("full", "full"), ("tail", "tail"))
        for symbol in symbols
        for tf in timeframes
    ]
    if direct:
        store = BarStore(root)
        source = SyntheticSource(seed=_SEED)
        summaries: list[tuple[str, LoadSummary]] = []
        for run, request in requests:
            with _sink(progress) as sink:
                tracker = ProgressTracker(
                    f"{run} {request.label}", [sink], stages=stage_plan(request.mode)
                )
                summaries.append((run, run_load(request, source, store, tracker=tracker)))
        return summaries
    return _run_flows(root, requests, start=start, end=end, progress=progress)


def _run_flows(
    root: Path,
    requests: Sequence[tuple[str, LoadRequest]],
    *,
    start: str,
    end: str,
    progress: bool,
) -> list[tuple[str, LoadSummary]]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.load_data import load_data
    from tasks.progress import detach_ephemeral_api, progress_context

    detach_ephemeral_api()  # a terminal's Ctrl+C must not stop the API under a running flow
    summaries: list[tuple[str, LoadSummary]] = []
    # Short in-process runs: the heartbeat thread would only add a second to each (DESIGN §8).
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for run, request in requests:
            with _sink(progress) as sink, progress_context(extra_sinks=[sink]) as handle:
                state = load_data(
                    request.symbol, request.timeframe.name, start=start, end=end,
                    mode=request.mode.value, store=str(root), seed=_SEED, return_state=True,
                )  # fmt: skip
            if not state.is_completed() or handle.summary is None:
                raise CandleflowError(
                    f"demo load {request.label} ended {state.name}: {state.message}"
                )
            summaries.append((run, _summary(handle.summary)))
    return summaries


def _summary(data: Mapping[str, object]) -> LoadSummary:
    """A LoadSummary back from the flow's plain-dict result."""
    fields = dict(data)
    fields["start"] = pd.Timestamp(str(fields["start"]))
    fields["end"] = pd.Timestamp(str(fields["end"]))
    failed = fields.get("failed_segments") or []
    fields["failed_segments"] = tuple(str(f) for f in failed) if isinstance(failed, list) else ()
    return LoadSummary(**fields)  # type: ignore[arg-type]


@contextlib.contextmanager
def _sink(rich: bool) -> Iterator[Sink]:
    if not rich:
        yield LoggingSink()
        return
    from candleflow.progress_rich import RichSink

    with RichSink() as sink:
        yield sink
