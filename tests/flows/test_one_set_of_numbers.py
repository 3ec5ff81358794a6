"""One set of numbers: a load's API calls, bars fetched, bars missing and fetch time are counted
once and read the same everywhere — the progress events, the run's summary, its artifacts, the
stored metadata, a backfill's queue row, and the source's own count — for a load, a cancelled
load and a backfill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from candleflow.loading.calendars import expected_bars
from candleflow.loading.pipeline import LoadRequest
from candleflow.progress import CancelToken, ListSink, ProgressEvent
from candleflow.sources.registry import make_source
from candleflow.store.bar_store import BarStore
from flows import load_data as load_module
from flows.backfill import backfill
from flows.load_data import load_data
from tasks.progress import progress_context

SYMBOL, TF = "AAPL", "1h"


class _Spy:
    """Keeps the sources the flow builds, to read their own request counts."""

    def __init__(self) -> None:
        self.sources: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        source = make_source(*args, **kwargs)
        self.sources.append(source)
        return source


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    spy = _Spy()
    monkeypatch.setattr(load_module, "make_source", spy)
    return spy


def _artifacts(flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifact_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=artifact_filter)
    return {a.type: a for a in found}


def _cell(markdown: str, name: str) -> str:
    (line,) = [x for x in markdown.splitlines() if x.startswith(f"| {name} |")]
    return line.split("|")[2].strip()


def _missing_in_window(store: Path, start: str, end: str) -> int:
    """Bars missing in the requested window, from the calendar and the stored bars."""
    request = LoadRequest.parse(SYMBOL, TF, start=start, end=end, mode="full")
    assert request.start is not None and request.end is not None
    grid = expected_bars(request.calendar, request.timeframe, request.start, request.end,
                         align=request.grid_align)  # fmt: skip
    stored = BarStore(store).read("synthetic", SYMBOL, TF).index
    return len(grid.starts.difference(stored))


def _check_agree(store: Path, handle: Any, events: list[ProgressEvent], source: Any) -> None:
    summary = handle.summary
    assert summary is not None
    calls, fetched = summary["api_calls"], summary["rows_fetched"]
    assert calls >= 3  # validate, head timestamp and at least one segment
    # The source's own count.
    assert source.api_calls == calls
    # The progress events: the last one, and never more than that on the way.
    last = events[-1].counters
    assert last["api_calls"] == calls and last["rows"] == fetched
    assert max(e.counters.get("api_calls", 0) for e in events) == calls
    # The artifacts: the summary table and the progress card.
    found = _artifacts(handle.flow_run_id)
    markdown = found["markdown"].data
    assert _cell(markdown, "API calls") == str(calls)
    assert _cell(markdown, "bars fetched") == f"{fetched:,}"
    assert f"{summary['missing_bars_left']:,} bars missing" in _cell(markdown, "gaps left")
    description = found["progress"].description
    assert f"{calls:,} API calls" in description and f"{fetched:,} bars" in description
    # The stored metadata.
    meta = BarStore(store).read_meta("synthetic", SYMBOL, TF)
    assert meta["api_calls"] == calls
    assert meta["fetch_duration_s"] == round(summary["fetch_duration_s"], 3) > 0


def test_a_load_counts_once(tmp_path: Path, spy: _Spy) -> None:
    sink = ListSink()
    with progress_context(extra_sinks=[sink], min_interval=0) as handle:
        load_data(SYMBOL, TF, start="2024-01-01", end="2024-04-30", mode="full",
                  store=str(tmp_path), delay=0.05)  # fmt: skip
    _check_agree(tmp_path, handle, sink.events, spy.sources[0])
    assert handle.summary is not None and handle.summary["missing_bars_left"] == 0


def test_a_cancelled_load_counts_once_and_what_is_missing_is_within_the_window(
    tmp_path: Path, spy: _Spy
) -> None:
    token = CancelToken()
    sink = ListSink()

    def cancel_after_two_segments(event: ProgressEvent) -> None:
        if event.stage == "fetch_segments" and event.items_done >= 2:
            token.cancel("test")

    start, end = "2022-01-01", "2023-12-31"
    with progress_context(extra_sinks=[sink, cancel_after_two_segments], token=token,
                          min_interval=0) as handle:  # fmt: skip
        state = load_data(SYMBOL, TF, start=start, end=end, mode="full", store=str(tmp_path),
                          delay=0.1, return_state=True)  # fmt: skip
    assert state.is_cancelled(), state
    _check_agree(tmp_path, handle, sink.events, spy.sources[0])
    summary = handle.summary
    assert summary is not None and summary["cancelled"]
    missing = _missing_in_window(tmp_path, start, end)
    assert summary["missing_bars_left"] == missing > 0
    assert f"{missing:,} bars still missing" in (state.message or "")


def test_a_backfill_row_shows_its_loads_numbers(tmp_path: Path, spy: _Spy) -> None:
    rows: list[Any] = []
    with progress_context(row_sinks=[rows.append]):
        summary = backfill([SYMBOL], timeframes=[TF], mode="full", start="2024-01-01",
                           end="2024-03-31", features="none", store=str(tmp_path))  # fmt: skip
    assert isinstance(summary, dict)
    (row,) = summary["rows"]
    (source,) = spy.sources
    meta = BarStore(tmp_path).read_meta("synthetic", SYMBOL, TF)
    assert row["API calls"] == source.api_calls == meta["api_calls"] == meta["api_calls_last_run"]
    fetched = len(BarStore(tmp_path).read("synthetic", SYMBOL, TF))  # a fresh store: all fetched
    assert row["rows"] == fetched
    # Live, the row's API calls never went above (nor ended below) the final count.
    calls = [r.api_calls for r in rows]
    assert max(calls) == calls[-1] == row["API calls"]
    assert json.loads(json.dumps(row))  # plain values
