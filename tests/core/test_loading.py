"""The load pipeline run directly on the synthetic source: coverage, resume, cancel, failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from candleflow.errors import Cancelled, InvalidRequest, NoData
from candleflow.loading.calendars import expected_bars
from candleflow.loading.pipeline import LoadRequest, RetryPolicy, run_load, stage_plan
from candleflow.models import LoadMode, Segment
from candleflow.progress import CancelToken, ListSink, ProgressTracker
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore

NOW = pd.Timestamp("2025-06-01", tz="UTC")


def _request(mode: str = "full", tf: str = "1h") -> LoadRequest:
    return LoadRequest.parse("AAPL", tf, start="2024-01-01", end="2024-06-30", mode=mode)


def _tracker(
    request: LoadRequest, sink: ListSink, token: CancelToken | None = None
) -> ProgressTracker:
    # Unthrottled, so every report the pipeline makes is observable.
    return ProgressTracker(
        "t", [sink], stages=stage_plan(request.mode), cancel_token=token, min_interval=0.0
    )


def test_full_load_stores_exactly_the_calendar_bars_and_tail_rerun_fetches_nothing(
    tmp_path: Path,
) -> None:
    store, source, request = BarStore(tmp_path), SyntheticSource(seed=3), _request()
    sink = ListSink()

    summary = run_load(request, source, store, tracker=_tracker(request, sink), now=NOW)

    grid = expected_bars("XNYS", "1h", request.start, request.end)  # type: ignore[arg-type]
    stored = store.read("synthetic", "AAPL", "1h")
    assert stored.index.equals(grid.starts)
    pd.testing.assert_frame_equal(stored, source.bars("AAPL", "1h", request.start, request.end))
    assert summary.rows_added == len(grid) and summary.missing_bars_left == 0
    assert summary.segments == source.fetch_calls == 6  # Jan 2 .. Jun 28 in spans of <= 30 days
    percentages = [e.percentage for e in sink.events]
    assert percentages == sorted(percentages) and sink.events[-1].percentage == 100.0
    stages_seen = list(dict.fromkeys(e.stage for e in sink.events))
    assert stages_seen == [name for name, _ in stage_plan("full")]
    details = list(dict.fromkeys(e.detail for e in sink.events if e.detail.startswith("Segment")))
    assert [d.split(":")[0] for d in details] == [f"Segment {i}/6" for i in range(1, 7)]
    assert details[0].startswith("Segment 1/6: 2024-01-02 14:30 → 2024-01-")

    again = run_load(_request("tail"), source, store, now=NOW)
    assert source.fetch_calls == 6 and again.segments == 0 and again.rows_added == 0


def test_tail_fills_only_after_the_last_stored_bar(tmp_path: Path) -> None:
    store, source = BarStore(tmp_path), SyntheticSource(seed=3)
    run_load(LoadRequest.parse("AAPL", "1d", start="2024-01-01", end="2024-03-31", mode="full"),
             source, store, now=NOW)  # fmt: skip
    calls = source.fetch_calls
    summary = run_load(
        LoadRequest.parse("AAPL", "1d", start="2024-01-01", end="2024-06-30", mode="tail"),
        source, store, now=NOW,
    )  # fmt: skip
    assert source.fetch_calls == calls + 1
    april, july = pd.Timestamp("2024-04-01", tz="UTC"), pd.Timestamp("2024-07-01", tz="UTC")
    assert summary.rows_added == len(expected_bars("XNYS", "1d", april, july))


def test_cancel_mid_fetch_keeps_finished_segments_and_rerun_fetches_the_rest(
    tmp_path: Path,
) -> None:
    store, request = BarStore(tmp_path), _request()
    token = CancelToken()
    fetched: list[Segment] = []

    def cancel_after_three(segment: Segment) -> None:
        fetched.append(segment)
        if len(fetched) == 3:
            token.cancel("user asked")

    source = SyntheticSource(seed=3, fail=cancel_after_three)
    with pytest.raises(Cancelled) as info:
        run_load(request, source, store, tracker=_tracker(request, ListSink(), token), now=NOW)
    assert info.value.partial is not None

    stored = store.read("synthetic", "AAPL", "1h")
    assert len(stored) == sum(s.bars for s in fetched)  # every completed segment, nothing more
    pd.testing.assert_frame_equal(
        stored, source.bars("AAPL", "1h", fetched[0].start, fetched[-1].end)
    )

    rerun = SyntheticSource(seed=3)
    summary = run_load(request, rerun, store, now=NOW)
    assert rerun.fetch_calls == 3 and summary.missing_bars_left == 0


def test_a_failing_segment_is_retried_then_reported_and_the_others_complete(tmp_path: Path) -> None:
    attempts: list[pd.Timestamp] = []

    def fail_february(segment: Segment) -> Exception | None:
        if segment.start.month == 2:
            attempts.append(segment.start)
            return NoData("injected 162: HMDS query returned no data")
        return None

    source = SyntheticSource(seed=3, fail=fail_february)

    summary = run_load(_request(), source, BarStore(tmp_path), now=NOW,
                       retry=RetryPolicy(retries=2, backoff=0.0))  # fmt: skip
    assert len(attempts) == 3  # first try + 2 retries
    assert len(summary.failed_segments) == 1 and "HMDS" in summary.failed_segments[0]
    assert summary.missing_bars_left > 0 and summary.rows_added > 0


def test_local_mode_makes_no_source_calls(tmp_path: Path) -> None:
    source = SyntheticSource()
    summary = run_load(_request("local"), source, BarStore(tmp_path), now=NOW)
    assert source.api_calls == 0 and summary.rows_after == 0 and summary.missing_bars_left > 0
    assert [s for s, _ in stage_plan(LoadMode.LOCAL)] == [
        "load_local",
        "analyze_gaps",
        "plan_segments",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeframe": "7m"}, "unsupported timeframe '7m': use one of 1m"),
        ({"start": "2024-05-01", "end": "2024-04-01"}, "is not before end"),
        ({"start": "2024-02-30"}, "malformed date"),
        ({"calendar": "XXXX"}, "unknown calendar 'XXXX'"),
        ({"mode": "sideways"}, "unknown mode 'sideways'"),
        ({"align": "diagonal"}, "unknown bar alignment"),
    ],
)
def test_bad_requests_name_the_value(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        LoadRequest.parse("AAPL", **kwargs)  # type: ignore[arg-type]


def test_a_date_only_end_includes_the_whole_day_in_exchange_time() -> None:
    request = LoadRequest.parse("aapl", "1h", start="2024-03-01", end="2024-03-01")
    assert request.symbol == "AAPL"
    assert request.start == pd.Timestamp("2024-03-01 05:00", tz="UTC")
    assert request.end == pd.Timestamp("2024-03-02 05:00", tz="UTC")
    timed = LoadRequest.parse("AAPL", "1h", start="2024-03-01", end="2024-03-01 12:00")
    assert timed.end == pd.Timestamp("2024-03-01 17:00", tz="UTC")


def _cancel_after(n: int, token: CancelToken, fetched: list[Segment]) -> SyntheticSource:
    def fail(segment: Segment) -> None:
        fetched.append(segment)
        if len(fetched) == n:
            token.cancel("stop")

    return SyntheticSource(seed=3, fail=fail)


@pytest.mark.parametrize("earlier_clean_load", [False, True])
def test_a_cancelled_tail_resumes_the_hole_it_left_behind(
    tmp_path: Path, earlier_clean_load: bool
) -> None:
    store = BarStore(tmp_path)
    if earlier_clean_load:  # Jan-Feb loaded cleanly, so the tail anchor is the end of February
        first = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-02-29", mode="full")
        run_load(first, SyntheticSource(seed=3), store, now=NOW)
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-06-30", mode="tail")
    token, fetched = CancelToken(), []
    source = _cancel_after(2, token, fetched)
    with pytest.raises(Cancelled):
        run_load(request, source, store, tracker=_tracker(request, ListSink(), token), now=NOW)
    assert fetched[0].start > fetched[1].start  # tail goes newest first: the hole is older

    rerun = SyntheticSource(seed=3)
    summary = run_load(request, rerun, store, now=NOW)
    assert summary.missing_bars_left == 0 and rerun.fetch_calls > 0
    grid = expected_bars("XNYS", "1h", request.start, request.end)  # type: ignore[arg-type]
    assert store.read("synthetic", "AAPL", "1h").index.equals(grid.starts)
    # and once complete, a further tail has nothing to do
    idle = SyntheticSource(seed=3)
    assert run_load(request, idle, store, now=NOW).segments == 0 and idle.fetch_calls == 0


def test_a_load_with_failed_segments_does_not_advance_the_completed_range(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    request = _request()
    bad = SyntheticSource(seed=3, fail=lambda s: NoData("no") if s.start.month == 3 else None)
    run_load(request, bad, store, now=NOW, retry=RetryPolicy(retries=0))
    assert store.read_meta("synthetic", "AAPL", "1h").get("complete_through") is None
    tail = SyntheticSource(seed=3)
    summary = run_load(
        LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-06-30", mode="tail"),
        tail, store, now=NOW,
    )  # fmt: skip
    assert tail.fetch_calls == 1 and summary.missing_bars_left == 0  # March is retried


def _vendor_csv(path: Path, align: str) -> Path:
    """A complete file of Q1 2024 hourly AAPL bars on the given grid, naive exchange time."""
    grid = expected_bars(
        "XNYS", "1h", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC"),
        align=align,  # type: ignore[arg-type]
    )  # fmt: skip
    n = len(grid)
    close = 100 + pd.Series(range(n), dtype="float64") * 0.01
    frame = pd.DataFrame(
        {
            "Datetime": grid.starts.tz_convert("America/New_York").tz_localize(None),
            "Open": close.to_numpy(), "High": close.to_numpy() + 1,
            "Low": close.to_numpy() - 1, "Close": close.to_numpy(), "Volume": 1000.0,
        }
    )  # fmt: skip
    frame.to_csv(path / "AAPL.csv", index=False)
    return path


@pytest.mark.parametrize("align", ["session", "clock"])
def test_a_complete_vendor_file_never_reports_missing_bars(tmp_path: Path, align: str) -> None:
    from candleflow.sources.files import FileSource

    folder = tmp_path / "files"
    folder.mkdir()
    source = FileSource(_vendor_csv(folder, align))
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-03-31", mode="full")
    assert request.align is None  # auto by default

    store = BarStore(tmp_path / "store")
    summary = run_load(request, source, store, now=NOW)

    assert summary.missing_bars_left == 0 and summary.gaps_left == 0
    assert summary.rows_added == len(store.read("files", "AAPL", "1h")) > 400
    assert store.read_meta("files", "AAPL", "1h")["align"] == align
