"""FileSource: reading vendors' CSV/Parquet bars, time zones, repairs and clear errors."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candleflow.errors import InvalidRequest, NoData, UnknownSymbol
from candleflow.models import BAR_COLUMNS, INDEX_NAME, Instrument, Segment
from candleflow.sources.base import Source
from candleflow.sources.files import FileSource

DAILY_CSV = """Date,Open,High,Low,Close,Adj Close,Volume
2024-01-02,187.15,188.44,183.89,185.64,184.9,82488700
2024-01-03,184.22,185.88,183.43,184.25,183.5,58414500
2024-01-04,182.15,183.09,180.88,181.91,181.2,71983600
"""


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def at(path: Path) -> str:
    """``path`` as a regular expression, for ``pytest.raises(match=...)``."""
    return re.escape(str(path))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read(path: Path, timeframe: str = "1h", calendar: str = "XNYS") -> pd.DataFrame:
    return FileSource(path).read("AAPL", timeframe, calendar)


def assert_canonical(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert str(frame.index.tz) == "UTC"
    assert frame.index.name == INDEX_NAME


def test_is_a_source(tmp_path: Path) -> None:
    assert isinstance(FileSource(write(tmp_path, "a.csv", DAILY_CSV)), Source)


def test_daily_csv_dates_are_session_labels(tmp_path: Path) -> None:
    frame = read(write(tmp_path, "aapl.csv", DAILY_CSV), "1d")
    assert_canonical(frame)
    # The written date at midnight UTC, not midnight New York converted to 05:00 UTC.
    assert list(frame.index) == [utc("2024-01-02"), utc("2024-01-03"), utc("2024-01-04")]
    assert frame.loc[utc("2024-01-03")].tolist() == [184.22, 185.88, 183.43, 184.25, 58414500.0]


def test_naive_intraday_times_are_exchange_local(tmp_path: Path) -> None:
    text = "datetime,open,high,low,close,volume\n"
    text += "2024-01-02 09:30:00,1,2,0.5,1.5,10\n"  # EST
    text += "2024-07-01 09:30:00,1,2,0.5,1.5,10\n"  # EDT
    frame = read(write(tmp_path, "x.csv", text), "1h")
    assert list(frame.index) == [utc("2024-01-02 14:30"), utc("2024-07-01 13:30")]
    # The same wall-clock time on the London calendar.
    london = read(write(tmp_path, "x.csv", text), "1h", calendar="XLON")
    assert list(london.index) == [utc("2024-01-02 09:30"), utc("2024-07-01 08:30")]


def test_calendar_tz_overrides_the_calendars_zone(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "Date Time,O,H,L,C,V\n2024-01-02 09:30,1,2,0.5,1.5,10\n")
    frame = FileSource(path, calendar_tz="Asia/Tokyo").read("X", "1h")
    assert frame.index[0] == utc("2024-01-02 00:30")
    with pytest.raises(InvalidRequest, match="time zone"):
        FileSource(path, calendar_tz="Mars/Olympus")


def test_aware_timestamps_with_mixed_offsets(tmp_path: Path) -> None:
    text = "timestamp,open,high,low,close,volume\n"
    text += "2024-03-08T09:30:00-05:00,1,2,0.5,1.5,10\n"
    text += "2024-03-11T09:30:00-04:00,1,2,0.5,1.5,10\n"
    frame = read(write(tmp_path, "x.csv", text))
    assert list(frame.index) == [utc("2024-03-08 14:30"), utc("2024-03-11 13:30")]


def test_parquet_with_datetime_index(tmp_path: Path) -> None:
    index = pd.DatetimeIndex(["2024-01-02 14:30", "2024-01-02 15:00"], tz="UTC", name="when")
    source = pd.DataFrame(
        {
            "Open": [1.0, 2.0],
            "High": [2.0, 3.0],
            "Low": [0.5, 1.5],
            "Close": [1.5, 2.5],
            "Vol": [7, 8],
        },
        index=index,
    )
    path = tmp_path / "aapl.parquet"
    source.to_parquet(path)
    frame = read(path)
    assert_canonical(frame)
    assert list(frame.index) == list(index)
    assert frame["volume"].tolist() == [7.0, 8.0]


def test_parquet_with_naive_datetime_index_is_exchange_local(tmp_path: Path) -> None:
    index = pd.DatetimeIndex(["2024-01-02 09:30"])
    path = tmp_path / "aapl.parquet"
    pd.DataFrame(
        {"o": [1.0], "h": [2.0], "l": [0.5], "c": [1.5], "v": [1.0]}, index=index
    ).to_parquet(path)
    assert read(path).index[0] == utc("2024-01-02 14:30")


@pytest.mark.parametrize("scale", [1, 1000])
def test_epoch_seconds_and_milliseconds(tmp_path: Path, scale: int) -> None:
    stamp = int(utc("2024-01-02 14:30").timestamp()) * scale
    text = "ts,open,high,low,close,volume\n"
    text += f"{stamp},1,2,0.5,1.5,10\n{stamp + 3600 * scale},1,2,0.5,1.5,10\n"
    frame = read(write(tmp_path, "x.csv", text))
    assert list(frame.index) == [utc("2024-01-02 14:30"), utc("2024-01-02 15:30")]


def test_daily_epoch_at_midnight_utc_keeps_its_date(tmp_path: Path) -> None:
    stamp = int(utc("2024-01-02").timestamp())
    frame = read(
        write(tmp_path, "x.csv", f"date,open,high,low,close,volume\n{stamp},1,2,0.5,1.5,10\n"), "1d"
    )
    assert list(frame.index) == [utc("2024-01-02")]


def test_separate_date_and_time_columns(tmp_path: Path) -> None:
    text = "Date,Time,Open,High,Low,Close,Volume\n"
    text += "01/02/2024,09:30,1,2,0.5,1.5,10\n01/02/2024,10:00,1,2,0.5,1.5,10\n"
    frame = read(write(tmp_path, "x.csv", text))
    assert list(frame.index) == [utc("2024-01-02 14:30"), utc("2024-01-02 15:00")]


def test_metastock_style_headers_and_integer_date_time(tmp_path: Path) -> None:
    text = "<TICKER>;<DATE>;<TIME>;<OPEN>;<HIGH>;<LOW>;<CLOSE>;<VOL>\n"
    text += "AAPL;20240102;093000;1;2;0.5;1.5;10\n"
    text += "AAPL;20240102;100000;1;2;0.5;1.5;20\n"
    frame = read(write(tmp_path, "x.csv", text))
    assert list(frame.index) == [utc("2024-01-02 14:30"), utc("2024-01-02 15:00")]
    assert frame["volume"].tolist() == [10.0, 20.0]


def test_yyyymmdd_integers_for_daily_bars(tmp_path: Path) -> None:
    frame = read(
        write(tmp_path, "x.csv", " DATE , OPEN ,HIGH,LOW,CLOSE,VOLUME\n20240102,1,2,0.5,1.5,10\n"),
        "1d",
    )
    assert list(frame.index) == [utc("2024-01-02")]


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warning lines logged (one record per notice, never a raw Python warning)."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_missing_volume_is_nan_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "x.csv", "date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = read(path, "1d")
    assert_canonical(frame)
    assert frame["volume"].isna().all()
    [line] = warned(caplog)
    assert "no volume column" in line and str(path) in line


def test_duplicates_keep_the_last_row_and_unsorted_rows_are_sorted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "date,open,high,low,close,volume\n"
    text += "2024-01-03,3,4,2,3,30\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,5,6,4,5,50\n"
    frame = read(write(tmp_path, "x.csv", text), "1d")
    assert list(frame.index) == [utc("2024-01-02"), utc("2024-01-03")]
    assert frame.loc[utc("2024-01-03"), "open"] == 5.0
    [line] = warned(caplog)
    assert "1 duplicated timestamp" in line


def test_rows_without_prices_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,,,,,\n"
    frame = read(write(tmp_path, "x.csv", text), "1d")
    assert list(frame.index) == [utc("2024-01-02")]
    [line] = warned(caplog)
    assert "dropped 1 of 2 rows" in line and "1 NaN price" in line


# -- errors ---------------------------------------------------------------------------------


def test_intraday_file_read_as_daily(tmp_path: Path) -> None:
    text = "datetime,open,high,low,close,volume\n"
    text += "2024-01-02 09:30,1,2,0.5,1.5,10\n2024-01-02 10:30,1,2,0.5,1.5,10\n"
    path = write(tmp_path, "x.csv", text)
    with pytest.raises(InvalidRequest, match=rf"{at(path)}: several rows fall on 2024-01-02"):
        read(path, "1d")
    assert len(read(path, "1h")) == 2


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(InvalidRequest, match=at(path)):
        FileSource(path)


def test_file_deleted_after_construction(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", DAILY_CSV)
    source = FileSource(path)
    path.unlink()
    with pytest.raises(InvalidRequest, match=at(path)):
        source.read("AAPL", "1d")


def test_garbled_csv(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage\x00\xc3\x28" * 50)
    with pytest.raises(InvalidRequest, match=rf"{at(path)}.*not a readable CSV"):
        read(path)


def test_ragged_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        "date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n2024-01-03,1,2,3,4,5,6,7\n",
    )
    with pytest.raises(InvalidRequest, match=rf"{at(path)}.*not a readable CSV"):
        read(path)


def test_empty_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "")
    with pytest.raises(InvalidRequest, match=rf"{at(path)}.*empty"):
        read(path)


def test_garbled_parquet(tmp_path: Path) -> None:
    path = write(tmp_path, "x.parquet", DAILY_CSV)
    with pytest.raises(InvalidRequest, match=rf"{at(path)}.*not a readable Parquet"):
        read(path)


def test_no_timestamp_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "when,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,10\n")
    with pytest.raises(InvalidRequest, match=rf"{at(path)}: no timestamp column.*'when', 'open'"):
        read(path)


def test_missing_price_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "date,open,close,volume\n2024-01-02,1,1.5,10\n")
    with pytest.raises(InvalidRequest, match=rf"{at(path)}: missing price column\(s\) high, low"):
        read(path)


def test_unparseable_timestamp_shows_the_first_bad_value(tmp_path: Path) -> None:
    text = "date,open,high,low,close,volume\n"
    text += "2024-01-02,1,2,0.5,1.5,10\nsoon,1,2,0.5,1.5,10\nlater,1,2,0.5,1.5,10\n"
    path = write(tmp_path, "x.csv", text)
    with pytest.raises(InvalidRequest, match=rf"{at(path)}: cannot read 'soon'.*row 2"):
        read(path)


def test_missing_timestamp_in_a_row(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.csv",
        "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,10\n,1,2,0.5,1.5,10\n",
    )
    with pytest.raises(InvalidRequest, match=rf"{at(path)}: data row 2 has no timestamp"):
        read(path)


def test_non_numeric_price(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "date,open,high,low,close,volume\n2024-01-02,1,2,n/a?,1.5,10\n")
    with pytest.raises(
        InvalidRequest,
        match=rf"{at(path)}: column 'low' holds non-numeric value 'n/a\?'",
    ):
        read(path)


# -- directory mode, fetch and the protocol ---------------------------------------------------


def test_directory_mode_finds_symbol_files(tmp_path: Path) -> None:
    write(tmp_path, "AAPL.csv", DAILY_CSV)
    write(tmp_path, "notes.txt", "not a table")
    source = FileSource(tmp_path)
    assert source.validate("aapl") == Instrument("AAPL", long_name=f"file {tmp_path}")
    assert len(source.read("AAPL", "1d")) == 3
    with pytest.raises(UnknownSymbol, match=r"'MSFT'.*holds AAPL\.csv") as info:
        source.validate("MSFT")
    assert info.value.source == "files"


def test_directory_mode_picks_the_timeframe_file(tmp_path: Path) -> None:
    write(tmp_path, "spy_1d.csv", DAILY_CSV)
    write(
        tmp_path,
        "SPY_1h.csv",
        "datetime,open,high,low,close,volume\n2024-01-02 09:30,1,2,0.5,1.5,10\n",
    )
    source = FileSource(tmp_path)
    assert source.read("SPY", "1d").index[0] == utc("2024-01-02")
    assert source.read("SPY", "1h").index[0] == utc("2024-01-02 14:30")
    with pytest.raises(NoData, match="no 5m file for SPY"):
        source.read("SPY", "5m")


def test_directory_mode_ambiguous_files(tmp_path: Path) -> None:
    write(tmp_path, "SPY.csv", DAILY_CSV)
    pd.read_csv(tmp_path / "SPY.csv").to_parquet(tmp_path / "SPY.parquet")
    with pytest.raises(InvalidRequest, match=r"SPY\.csv, SPY\.parquet all match SPY"):
        FileSource(tmp_path).read("SPY", "1d")


def test_fetch_filters_the_range(tmp_path: Path) -> None:
    source = FileSource(write(tmp_path, "x.csv", DAILY_CSV))
    instrument = source.validate("AAPL")
    bars = source.fetch(instrument, "1d", Segment(utc("2024-01-03"), utc("2024-01-04"), 1))
    assert list(bars.index) == [utc("2024-01-03")]
    bars = source.fetch(instrument, "1d", Segment(utc("2023-12-01"), utc("2024-01-04"), 2))
    assert list(bars.index) == [utc("2024-01-02"), utc("2024-01-03")]
    with pytest.raises(NoData, match=r"x\.csv has no bars in 2024-02-01"):
        source.fetch(instrument, "1d", Segment(utc("2024-02-01"), utc("2024-03-01"), 20))
    assert source.head_timestamp(instrument, "1d") == utc("2024-01-02")
    assert source.api_calls == 5


def test_edits_to_the_file_are_picked_up(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", DAILY_CSV)
    source = FileSource(path)
    assert len(source.read("AAPL", "1d")) == 3
    path.write_text(DAILY_CSV + "2024-01-05,181.99,182.76,180.17,181.18,181.0,62303300\n")
    later = os.stat(path).st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))
    assert len(source.read("AAPL", "1d")) == 4
