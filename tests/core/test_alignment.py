"""Bar alignment of imported files: IB's clock-hour bars vs vendors' session-open bars.

The files are built here from the exchange's own schedule (exchange_calendars, not candleflow),
so the expected answers do not come from the code under test: a 2024 XNYS year has 252 sessions,
three of them closing at 13:00 (Jul 3, Nov 29, Dec 24), hence 249 × 7 + 3 × 4 = 1,755 hourly bars
in either alignment.
"""

from __future__ import annotations

import time
from pathlib import Path

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from candleflow.errors import InvalidRequest
from candleflow.loading.calendars import detect_alignment
from candleflow.loading.gaps import analyze_gaps
from candleflow.sources.files import FileSource
from tests.core.conftest import ramp_bars
from tests.timing import budget

YEAR_START = pd.Timestamp("2024-01-01", tz="UTC")
YEAR_END = pd.Timestamp("2025-01-01", tz="UTC")
NY = "America/New_York"
HOUR = pd.Timedelta(hours=1)


def _sessions() -> pd.DataFrame:
    schedule = xcals.get_calendar("XNYS", start="2023-12-01", end="2025-01-31").schedule
    days = schedule[(schedule.index >= "2024-01-01") & (schedule.index <= "2024-12-31")]
    assert len(days) == 252
    return pd.DataFrame(days)


def _every(step: pd.Timedelta, start: pd.Timestamp, close: pd.Timestamp) -> list[pd.Timestamp]:
    out: list[pd.Timestamp] = []
    while start < close:
        out.append(start)
        start += step
    return out


def vendor_starts(step: pd.Timedelta = HOUR) -> pd.DatetimeIndex:
    """Bars every ``step`` from the open: hourly 09:30, 10:30, …, 15:30 (12:30 on a 13:00 close)."""
    out: list[pd.Timestamp] = []
    for open_, close in zip(_sessions()["open"], _sessions()["close"], strict=True):
        out += _every(step, pd.Timestamp(open_), close)
    return pd.DatetimeIndex(out).tz_convert("UTC")


def ib_starts(step: pd.Timedelta = HOUR) -> pd.DatetimeIndex:
    """IB's bars: the open, then every whole ``step`` of the clock: hourly 09:30, 10:00, 11:00, …,
    15:00."""
    out: list[pd.Timestamp] = []
    for open_, close in zip(_sessions()["open"], _sessions()["close"], strict=True):
        out.append(pd.Timestamp(open_))
        out += _every(step, pd.Timestamp(open_).tz_convert(NY).ceil(step).tz_convert("UTC"), close)
    return pd.DatetimeIndex(out).tz_convert("UTC")


def write_csv(path: Path, starts: pd.DatetimeIndex) -> Path:
    """A vendor-style CSV: separate Date and Time columns, naive New York times."""
    local = starts.tz_convert(NY)
    frame = ramp_bars(starts).rename(columns=str.capitalize).reset_index(drop=True)
    frame.insert(0, "Time", local.strftime("%H:%M"))
    frame.insert(0, "Date", local.strftime("%Y-%m-%d"))
    frame.to_csv(path, index=False)
    return path


def test_the_generated_files_have_the_bars_they_claim() -> None:
    vendor, ib = vendor_starts(), ib_starts()
    assert len(vendor) == len(ib) == 1755
    first_day = vendor[:7].tz_convert(NY).strftime("%H:%M").tolist()
    assert first_day == ["09:30", "10:30", "11:30", "12:30", "13:30", "14:30", "15:30"]
    first_day = ib[:7].tz_convert(NY).strftime("%H:%M").tolist()
    assert first_day == ["09:30", "10:00", "11:00", "12:00", "13:00", "14:00", "15:00"]


def test_vendor_file_is_session_aligned_and_a_complete_file_misses_nothing(
    tmp_path: Path,
) -> None:
    source = FileSource(write_csv(tmp_path / "AAPL_1h.csv", vendor_starts()))
    frame = source.read("AAPL", "1h", "XNYS")
    assert len(frame) == 1755

    align = source.detect_alignment("AAPL", "1h", "XNYS")
    assert align == "session"
    report = analyze_gaps(
        pd.DatetimeIndex(frame.index), "XNYS", "1h", YEAR_START, YEAR_END, align=align
    )
    assert report.gaps == ()
    assert (report.expected, report.present, report.unexpected) == (1755, 1755, 0)

    # The acceptance this guards: with IB's grid the same complete file looks full of holes.
    wrong = analyze_gaps(
        pd.DatetimeIndex(frame.index), "XNYS", "1h", YEAR_START, YEAR_END, align="clock"
    )
    assert wrong.bars() > 1000 and wrong.unexpected > 1000


def test_ib_file_is_clock_aligned(tmp_path: Path) -> None:
    source = FileSource(write_csv(tmp_path / "AAPL_1h.csv", ib_starts()))
    assert source.detect_alignment("AAPL", "1h", "XNYS") == "clock"
    frame = source.read("AAPL", "1h", "XNYS")
    report = analyze_gaps(
        pd.DatetimeIndex(frame.index), "XNYS", "1h", YEAR_START, YEAR_END, align="clock"
    )
    assert report.gaps == () and report.present == 1755


def test_a_few_odd_or_missing_bars_do_not_change_the_verdict() -> None:
    vendor = vendor_starts()
    holes = vendor.delete(np.arange(100, 400))  # a missing stretch
    stray = holes.append(pd.DatetimeIndex(["2024-03-09 15:00"], tz="UTC"))  # a Saturday bar
    assert detect_alignment(pd.DatetimeIndex(stray.sort_values()), "XNYS", "1h") == "session"


@pytest.mark.parametrize("timeframe", ["2h", "4h", "20m"])
def test_multi_hour_and_odd_minute_bars(timeframe: str) -> None:
    # 2h: clock 09:30, 10:00, 12:00, 14:00 vs session 09:30, 11:30, 13:30, 15:30 (New York).
    step = pd.Timedelta(timeframe.replace("m", "min"))
    assert detect_alignment(vendor_starts(step), "XNYS", timeframe) == "session"
    assert detect_alignment(ib_starts(step), "XNYS", timeframe) == "clock"


def test_thirty_minute_bars_sit_on_both_grids_and_miss_nothing() -> None:
    # 09:30 is a half hour, so both grids are the same: either answer is right; clock is given.
    starts: list[pd.Timestamp] = []
    for open_, close in zip(_sessions()["open"], _sessions()["close"], strict=True):
        starts.extend(pd.date_range(open_, close, freq="30min", inclusive="left"))
    index = pd.DatetimeIndex(starts).tz_convert("UTC")
    align = detect_alignment(index, "XNYS", "30m")
    assert align == "clock"
    assert analyze_gaps(index, "XNYS", "30m", YEAR_START, YEAR_END, align=align).gaps == ()


def test_daily_bars_are_clock() -> None:
    labels = pd.DatetimeIndex(_sessions().index).tz_localize("UTC")
    assert detect_alignment(labels, "XNYS", "1d") == "clock"


def test_garbage_index_raises_and_suggests_align() -> None:
    garbage = pd.date_range("2024-01-02 00:07", periods=2000, freq="37min", tz="UTC")
    with pytest.raises(InvalidRequest, match="Choose the alignment") as info:
        detect_alignment(garbage, "XNYS", "1h")
    assert "2,000 bars" in str(info.value) and info.value.param == "align"


def test_half_clock_half_session_is_ambiguous() -> None:
    mid = pd.Timestamp("2024-07-01", tz="UTC")
    ib, vendor = ib_starts(), vendor_starts()
    mixed = pd.DatetimeIndex(ib[ib < mid].append(vendor[vendor >= mid]))
    with pytest.raises(InvalidRequest, match=r"Choose the alignment, clock or session") as info:
        detect_alignment(mixed, "XNYS", "1h")
    assert info.value.param == "align"  # each face names its own option (the CLI: --align)


def test_utc_times_read_as_new_york_are_not_guessed() -> None:
    # A UTC file taken for local time: 14:30, 15:30, … New York, mostly after the close.
    shifted = vendor_starts() + pd.Timedelta(hours=5)
    with pytest.raises(InvalidRequest, match="time zone"):
        detect_alignment(shifted, "XNYS", "1h")


def test_naive_index_and_unknown_calendar_are_bad_input() -> None:
    with pytest.raises(InvalidRequest, match="tz-aware"):
        detect_alignment(pd.DatetimeIndex(["2024-01-02 09:30"]), "XNYS", "1h")
    with pytest.raises(InvalidRequest, match="unknown calendar"):
        detect_alignment(vendor_starts(), "NOPE", "1h")


def test_detection_is_cheap_on_a_year_of_hourly_bars() -> None:
    index = vendor_starts()
    detect_alignment(index, "XNYS", "1h")  # calendar loading is cached after the first call
    started = time.perf_counter()
    detect_alignment(index, "XNYS", "1h")
    assert time.perf_counter() - started < budget(1.0)
