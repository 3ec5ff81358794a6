"""The offline demo: load synthetic bars for a few series into a store, then update them.

The first pass loads a year of history per series; the second is a ``tail`` run that finds
nothing new and makes no fetch calls — the store is the source of truth between runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from candleflow.loading import LoadRequest, LoadSummary, run_load, stage_plan
from candleflow.progress import LoggingSink, ProgressTracker, Sink
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store import BarStore


def run_demo(
    root: Path,
    *,
    symbols: Sequence[str] = ("AAPL", "MSFT"),
    timeframes: Sequence[str] = ("1d", "1h"),
    start: str = "2024-01-01",
    end: str = "2024-12-31",
    progress: bool = False,
) -> list[tuple[str, LoadSummary]]:
    """Run a ``full`` load then a ``tail`` load per series; return (run, summary) pairs."""
    store = BarStore(root)
    source = SyntheticSource(seed=7)
    summaries: list[tuple[str, LoadSummary]] = []
    for run, mode in (("full", "full"), ("tail", "tail")):
        for symbol in symbols:
            for tf in timeframes:
                request = LoadRequest.parse(symbol, tf, start=start, end=end, mode=mode)
                with _sink(progress) as sink:
                    tracker = ProgressTracker(
                        f"{run} {request.label}", [sink], stages=stage_plan(request.mode)
                    )
                    summaries.append((run, run_load(request, source, store, tracker=tracker)))
    return summaries


@contextlib.contextmanager
def _sink(rich: bool) -> Iterator[Sink]:
    if not rich:
        yield LoggingSink()
        return
    from candleflow.progress_rich import RichSink

    with RichSink() as sink:
        yield sink
