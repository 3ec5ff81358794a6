"""Importing a file through the load pipeline: the file's own range, one read, one pass, no failed
segments; ranges outside the file end with one line and write nothing; the price rules drop and
count bad rows in one warning line, or refuse the file when strict."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from candleflow.errors import InvalidRequest
from candleflow.loading.calendars import expected_bars
from candleflow.loading.pipeline import LoadRequest, load_series, run_load
from candleflow.sources.files import FileSource
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from candleflow.store.inspect import describe_series

NOW = pd.Timestamp("2026-06-01", tz="UTC")


def hourly_file(tmp_path: Path, *, hole: bool = True) -> Path:
    """February 2024 of clock-aligned 1h bars in exchange time, with one bar missing."""
    grid = expected_bars(
        "XNYS", "1h", pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-03-01", tz="UTC")
    )
    starts = grid.starts.tz_convert("America/New_York").tz_localize(None)
    if hole:
        starts = starts.delete(40)
    lines = ["Datetime,Open,High,Low,Close,Volume"]
    lines += [f"{t:%Y-%m-%d %H:%M:%S},10,11,9,10.5,100" for t in starts]
    path = tmp_path / "ibm_1h.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def daily_file(tmp_path: Path, rows: list[str] | None = None) -> Path:
    lines = ["Date,Open,High,Low,Close,Adj Close,Volume"]
    lines += rows or [
        "2015-01-02,10,11,9,10.5,10.4,100",
        "2015-01-05,10.5,11,10,10.8,10.7,100",
        "2015-01-06,10.8,11.5,10.5,11,10.9,100",
        "2015-01-07,11,11.2,10.9,11.1,11.0,100",
    ]
    path = tmp_path / "spx.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("mode", ["tail", "full", "backfill"])
def test_complete_file_without_dates_reads_once_in_one_pass(tmp_path: Path, mode: str) -> None:
    source = FileSource(hourly_file(tmp_path))
    store = BarStore(tmp_path / "store")
    request = LoadRequest.parse("IBM", "1h", mode=mode)
    summary = run_load(request, source, store, now=NOW)
    assert summary.failed_segments == ()
    assert summary.segments == 1
    assert source.reads == 1
    assert summary.rows_after == 139
    assert summary.start == pd.Timestamp("2024-02-01 14:30", tz="UTC")
    assert summary.end == pd.Timestamp("2024-02-29 21:00", tz="UTC")
    shown = describe_series(store, "files", "IBM", "1h", now=NOW)
    assert summary.missing_bars_left == shown.missing_bars == 1


def test_reimport_with_a_hole_in_the_file_fails_nothing(tmp_path: Path) -> None:
    source = FileSource(hourly_file(tmp_path))
    store = BarStore(tmp_path / "store")
    run_load(LoadRequest.parse("IBM", "1h"), source, store, now=NOW)
    again = run_load(LoadRequest.parse("IBM", "1h", mode="full"), source, store, now=NOW)
    assert again.failed_segments == ()
    assert again.rows_added == 0
    assert again.missing_bars_left == 1
    assert source.reads == 1


def test_import_records_format_time_zone_and_alignment(tmp_path: Path) -> None:
    store = BarStore(tmp_path / "store")
    run_load(LoadRequest.parse("IBM", "1h"), FileSource(hourly_file(tmp_path)), store, now=NOW)
    meta = store.read_meta("files", "IBM", "1h")
    assert meta["align"] == "clock"
    assert meta["time_zone"] == "America/New_York"
    assert meta["time_zone_from"] == "exchange"
    assert meta["import_format"] == "csv"
    assert str(meta["import_file"]).endswith("ibm_1h.csv")


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        ("1800-01-01", "1800-12-31", "1800-01-01 → 1800-12-31 ends before the first bar"),
        ("2999-01-01", None, "2999-01-01 → … starts in the future"),
        ("2020-01-01", None, "2020-01-01 → … starts after the last bar"),
    ],
    ids=["1800", "2999", "after-the-file"],
)
def test_range_outside_the_file_says_so_and_writes_nothing(
    tmp_path: Path, start: str, end: str | None, words: str
) -> None:
    store = BarStore(tmp_path / "store")
    source = FileSource(daily_file(tmp_path))
    request = LoadRequest.parse("SPX", "1d", start=start, end=end)
    summary = run_load(request, source, store, now=NOW)
    assert summary.notice == (
        f"nothing to load for SPX 1d: {words}; source 'files' holds 2015-01-02 → 2015-01-07"
    )
    assert (summary.segments, summary.rows_added, summary.failed_segments) == (0, 0, ())
    assert not store.series_dir("files", "SPX", "1d").exists()


def test_future_range_on_a_growing_source(tmp_path: Path) -> None:
    store = BarStore(tmp_path / "store")
    request = LoadRequest.parse("AAPL", "1d", start="2999-01-01")
    summary = run_load(request, SyntheticSource(), store, now=NOW)
    assert "starts in the future" in summary.notice
    assert summary.notice.endswith("→ now")
    assert not store.series_dir("synthetic", "AAPL", "1d").exists()


def test_dates_inside_the_file_clip_to_it(tmp_path: Path) -> None:
    store = BarStore(tmp_path / "store")
    request = LoadRequest.parse("SPX", "1d", start="2014-01-01", end="2015-01-05")
    summary = run_load(request, FileSource(daily_file(tmp_path)), store, now=NOW)
    assert summary.rows_after == 2
    assert summary.missing_bars_left == 0
    assert summary.notice == ""


GOOD = "2015-01-02,10,11,9,10.5,10.4,100"
RULES = {
    "non-positive price": "2015-01-05,0,11,0,10.8,10.7,100",
    "NaN price": "2015-01-05,10.5,,10,10.8,10.7,100",
    "high < max(open, close)": "2015-01-05,10.5,10.6,10,10.8,10.7,100",
    "low > min(open, close)": "2015-01-05,10.5,11,10.6,10.8,10.7,100",
    "negative volume": "2015-01-05,10.5,11,10,10.8,10.7,-5",
}
LAST = "2015-01-06,10.8,11.5,10.5,11,10.9,100"


@pytest.mark.parametrize("rule", list(RULES))
def test_price_rule_drops_and_counts_in_one_line(
    tmp_path: Path, rule: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = daily_file(tmp_path, [GOOD, RULES[rule], LAST])
    store = BarStore(tmp_path / "store")
    with caplog.at_level(logging.WARNING):
        summary = run_load(LoadRequest.parse("SPX", "1d"), FileSource(path), store, now=NOW)
    assert summary.rows_after == 2
    assert summary.missing_bars_left == 1  # the dropped bar is a gap, not silently filled
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [
        f"{path}: dropped 1 of 3 rows breaking the price rules "
        f"(1 {rule}; first at 2015-01-05 00:00 UTC)"
    ]


@pytest.mark.parametrize("rule", list(RULES))
def test_price_rule_with_strict_refuses_the_file(tmp_path: Path, rule: str) -> None:
    path = daily_file(tmp_path, [GOOD, RULES[rule], LAST])
    store = BarStore(tmp_path / "store")
    with pytest.raises(InvalidRequest) as caught:
        load_series(LoadRequest.parse("SPX", "1d"), FileSource(path, strict=True), store, now=NOW)
    assert str(caught.value).startswith(
        f"{path}: 1 of 3 rows break the price rules (1 {rule}; first at 2015-01-05 00:00 UTC); "
        "nothing was stored"
    )
    assert not store.series_dir("files", "SPX", "1d").exists()


def test_several_rules_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [GOOD, RULES["NaN price"], "2015-01-06,-1,11,-2,10.8,10.7,-5", LAST]
    rows[-1] = "2015-01-07,10.8,11.5,10.5,11,10.9,100"
    path = daily_file(tmp_path, rows)
    with caplog.at_level(logging.WARNING):
        FileSource(path).read("SPX", "1d")
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line == (
        f"{path}: dropped 2 of 4 rows breaking the price rules (1 non-positive price, "
        "1 NaN price, 1 negative volume; first at 2015-01-05 00:00 UTC)"
    )


def test_a_file_whose_every_row_breaks_a_rule_is_bad_input(tmp_path: Path) -> None:
    path = daily_file(
        tmp_path, [RULES["negative volume"], RULES["NaN price"].replace("-05", "-06")]
    )
    with pytest.raises(InvalidRequest, match="all 2 rows break the price rules"):
        run_load(LoadRequest.parse("SPX", "1d"), FileSource(path), BarStore(tmp_path / "s"))


def test_an_import_range_starting_mid_session_is_shown_from_its_first_bar() -> None:
    from candleflow.cli.app import exchange_range

    shown = exchange_range("2004-07-20T19:40:00+00:00", "2024-12-31T21:00:00+00:00", "XNYS")
    assert shown == "2004-07-20 15:40 → 2024-12-31 16:00 America/New_York"


def test_an_older_file_after_a_newer_one_imports_in_the_default_mode(tmp_path: Path) -> None:
    store = BarStore(tmp_path / "store")
    newer = daily_file(tmp_path, ["2016-01-04,10,11,9,10.5,10.4,100"])
    run_load(LoadRequest.parse("SPX", "1d"), FileSource(newer), store, now=NOW)
    (tmp_path / "older").mkdir()
    older = daily_file(tmp_path / "older", ["2015-01-02,10,11,9,10.5,10.4,100"])
    summary = run_load(LoadRequest.parse("SPX", "1d"), FileSource(older), store, now=NOW)
    assert (summary.rows_added, summary.rows_after, summary.failed_segments) == (1, 2, ())


@pytest.mark.parametrize(
    ("rows", "timeframe", "words"),
    [
        ([f"2015-{m:02d}-02,10,11,9,10.5,10.4,100" for m in range(1, 8)], "1d", "30 days"),
        ([f"2015-01-02 {h:02d}:30:00,10,11,9,10.5,10.4,100" for h in range(9, 16)], "1m",
         "1 hour"),
    ],
    ids=["monthly-as-daily", "hourly-as-1m"],
)  # fmt: skip
def test_a_file_coarser_than_the_timeframe_is_noticed(
    tmp_path: Path,
    rows: list[str],
    timeframe: str,
    words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = daily_file(tmp_path, rows)
    with caplog.at_level(logging.WARNING):
        FileSource(path).read("SPX", timeframe)
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith(f"{path}: its bars are typically {words} apart, much more than")


def test_a_daily_file_with_weekends_and_holidays_is_not_noticed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        FileSource(daily_file(tmp_path)).read("SPX", "1d")
    assert not caplog.records


def test_an_import_writes_the_file_once_without_a_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file still holds every bar after a crash: journaling it would write it twice.
    from candleflow.store.journal import Journal

    appended: list[int] = []
    append = Journal.append

    def counted(self: Journal, bars: pd.DataFrame) -> None:
        appended.append(len(bars))
        append(self, bars)

    monkeypatch.setattr(Journal, "append", counted)
    store = BarStore(tmp_path / "store")
    summary = run_load(LoadRequest.parse("IBM", "1h"), FileSource(hourly_file(tmp_path)), store,
                       now=NOW)  # fmt: skip
    assert appended == []
    assert summary.rows_added == len(store.read("files", "IBM", "1h")) > 0
    # A source that is not a file is journaled, segment by segment.
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-02", end="2024-03-29", mode="full")
    summary = run_load(request, SyntheticSource(), store, now=NOW)
    assert len(appended) == summary.segments > 1
