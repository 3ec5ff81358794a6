"""Vendor files import without options: each fixture is written in the vendor's own layout (a few
rows of it, as the vendor writes them) and must give the hand-written canonical bars below —
UTC bar starts, float OHLCV — with the time-zone choice recorded for the series metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candleflow.models import Instrument
from candleflow.sources.files import FileSource


def expected(rows: list[tuple[str, float, float, float, float, float]]) -> pd.DataFrame:
    """The canonical frame of ``rows`` (UTC start, open, high, low, close, volume)."""
    index = pd.DatetimeIndex([pd.Timestamp(r[0], tz="UTC") for r in rows], name="timestamp")
    frame = pd.DataFrame(
        [r[1:] for r in rows], columns=["open", "high", "low", "close", "volume"], index=index
    )
    frame.index = frame.index.as_unit("ns")
    return frame.astype("float64")


def imported(
    path: Path, timeframe: str, *, calendar: str = "XNYS", tz: str | None = None
) -> tuple[pd.DataFrame, dict[str, object]]:
    source = FileSource(path, calendar_tz=tz)
    instrument = Instrument("X", calendar=calendar)
    return source.read("X", timeframe, calendar), source.series_meta(instrument, timeframe)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yahoo_daily_csv_uses_close_not_adj_close(tmp_path: Path) -> None:
    path = write(tmp_path, "AAPL.csv", (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,187.149994,188.440002,183.889999,185.639999,184.938217,82488700\n"
        "2024-01-03,184.220001,185.880005,183.429993,184.250000,183.553467,58414500\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1d")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02", 187.149994, 188.440002, 183.889999, 185.639999, 82488700),
        ("2024-01-03", 184.220001, 185.880005, 183.429993, 184.250000, 58414500),
    ]))  # fmt: skip
    assert meta["import_format"] == "yahoo"
    assert meta["time_zone_from"] == "date"


def test_yfinance_intraday_csv_with_offsets(tmp_path: Path) -> None:
    # yf.download(..., interval="1h").to_csv() before 0.2.48: a Datetime column with offsets.
    path = write(tmp_path, "AAPL.csv", (
        "Datetime,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02 09:30:00-05:00,187.15,188.44,186.10,186.50,186.50,20000000\n"
        "2024-01-02 10:30:00-05:00,186.50,187.00,185.80,186.20,186.20,9000000\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000),
        ("2024-01-02 15:30", 186.50, 187.00, 185.80, 186.20, 9000000),
    ]))  # fmt: skip
    assert (meta["time_zone"], meta["time_zone_from"]) == ("UTC", "file")


def test_yfinance_three_header_lines(tmp_path: Path) -> None:
    # yfinance >= 0.2.48 writes its (Price, Ticker) column index as three header lines.
    path = write(tmp_path, "AAPL.csv", (
        "Price,Close,High,Low,Open,Volume\n"
        "Ticker,AAPL,AAPL,AAPL,AAPL,AAPL\n"
        "Datetime,,,,,\n"
        "2024-01-02 14:30:00+00:00,186.5,188.44,186.1,187.15,20000000\n"
        "2024-01-02 15:30:00+00:00,186.2,187.0,185.8,186.5,9000000\n"
    ))  # fmt: skip
    frame, _ = imported(path, "1h")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000),
        ("2024-01-02 15:30", 186.50, 187.00, 185.80, 186.20, 9000000),
    ]))  # fmt: skip


def test_stooq_intraday_in_the_zone_given(tmp_path: Path) -> None:
    # Stooq's download: bracketed headers, YYYYMMDD dates and HHMMSS times (Polish time).
    path = write(tmp_path, "aapl.us.csv", (
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
        "AAPL.US,60,20240102,160000,187.15,188.44,186.1,186.5,2000,0\n"
        "AAPL.US,60,20240102,170000,186.5,187.0,185.8,186.2,900,0\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h", tz="Europe/Warsaw")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 15:00", 187.15, 188.44, 186.10, 186.50, 2000),
        ("2024-01-02 16:00", 186.50, 187.00, 185.80, 186.20, 900),
    ]))  # fmt: skip
    assert meta == {
        "import_file": str(path), "import_format": "stooq",
        "time_zone": "Europe/Warsaw", "time_zone_from": "tz",
    }  # fmt: skip


def test_stooq_daily(tmp_path: Path) -> None:
    path = write(tmp_path, "aapl.us.csv", (
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
        "AAPL.US,D,20240102,000000,187.15,188.44,183.89,185.64,82488700,0\n"
        "AAPL.US,D,20240103,000000,184.22,185.88,183.43,184.25,58414500,0\n"
    ))  # fmt: skip
    frame, _ = imported(path, "1d")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02", 187.15, 188.44, 183.89, 185.64, 82488700),
        ("2024-01-03", 184.22, 185.88, 183.43, 184.25, 58414500),
    ]))  # fmt: skip


def test_dukascopy_gmt_time_is_utc_and_day_first(tmp_path: Path) -> None:
    # 02.01.2024 is the 2nd of January (day first), and "Gmt time" is UTC whatever --tz says.
    path = write(tmp_path, "EURUSD.csv", (
        "Gmt time,Open,High,Low,Close,Volume\n"
        "02.01.2024 14:00:00.000,1.10380,1.10420,1.10300,1.10350,1234.56\n"
        "02.01.2024 15:00:00.000,1.10350,1.10500,1.10330,1.10480,2345.5\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h", tz="Europe/Zurich")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 14:00", 1.10380, 1.10420, 1.10300, 1.10350, 1234.56),
        ("2024-01-02 15:00", 1.10350, 1.10500, 1.10330, 1.10480, 2345.5),
    ]))  # fmt: skip
    assert meta["import_format"] == "dukascopy"
    assert (meta["time_zone"], meta["time_zone_from"]) == ("UTC", "file")


def test_dukascopy_local_time_with_gmt_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "EURUSD.csv", (
        "Local time,Open,High,Low,Close,Volume\n"
        "02.01.2024 15:00:00.000 GMT+0100,1.10380,1.10420,1.10300,1.10350,1234.56\n"
    ))  # fmt: skip
    frame, _ = imported(path, "1h")
    pd.testing.assert_frame_equal(
        frame, expected([("2024-01-02 14:00", 1.10380, 1.10420, 1.10300, 1.10350, 1234.56)])
    )


def test_metatrader5_export_takes_tick_volume_when_real_volume_is_zero(tmp_path: Path) -> None:
    # MT5 "Export bars": tab-separated, bracketed headers, dotted dates, broker-server time.
    path = write(tmp_path, "EURUSD_1h.csv", (
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
        "2024.01.02\t09:00:00\t1.10380\t1.10420\t1.10300\t1.10350\t1234\t0\t2\n"
        "2024.01.02\t10:00:00\t1.10350\t1.10500\t1.10330\t1.10480\t2345\t0\t1\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h", tz="Europe/Athens")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 07:00", 1.10380, 1.10420, 1.10300, 1.10350, 1234),
        ("2024-01-02 08:00", 1.10350, 1.10500, 1.10330, 1.10480, 2345),
    ]))  # fmt: skip
    assert meta["import_format"] == "metatrader"


def test_metatrader4_history_export_has_no_header(tmp_path: Path) -> None:
    # MT4 History Center export: no header line, date and time fields; naive → exchange time.
    path = write(tmp_path, "EURUSD60.csv", (
        "2024.01.02,09:30,1.10380,1.10420,1.10300,1.10350,1234\n"
        "2024.01.02,10:30,1.10350,1.10500,1.10330,1.10480,2345\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 14:30", 1.10380, 1.10420, 1.10300, 1.10350, 1234),
        ("2024-01-02 15:30", 1.10350, 1.10500, 1.10330, 1.10480, 2345),
    ]))  # fmt: skip
    assert meta["import_format"] == "metatrader"
    assert (meta["time_zone"], meta["time_zone_from"]) == ("America/New_York", "exchange")


def test_polygon_aggregates_epoch_milliseconds(tmp_path: Path) -> None:
    # Polygon's /v2/aggs results as CSV: t in epoch ms, o h l c v, vw, n.
    path = write(tmp_path, "AAPL.csv", (
        "v,vw,o,c,h,l,t,n\n"
        "20000000,186.9,187.15,186.5,188.44,186.1,1704205800000,150000\n"
        "9000000,186.4,186.5,186.2,187.0,185.8,1704209400000,80000\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000),
        ("2024-01-02 15:30", 186.50, 187.00, 185.80, 186.20, 9000000),
    ]))  # fmt: skip
    assert meta["import_format"] == "polygon"
    assert meta["time_zone_from"] == "file"


def test_polygon_flat_file_window_start_nanoseconds(tmp_path: Path) -> None:
    path = write(tmp_path, "AAPL.csv", (
        "ticker,volume,open,close,high,low,window_start,transactions\n"
        "AAPL,20000000,187.15,186.5,188.44,186.1,1704205800000000000,150000\n"
    ))  # fmt: skip
    frame, _ = imported(path, "1h")
    pd.testing.assert_frame_equal(
        frame, expected([("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000)])
    )


def test_alpaca_bars_csv(tmp_path: Path) -> None:
    # alpaca-py's BarSet.df.to_csv(): symbol, timestamp (UTC, with offset), OHLCV, trade_count.
    path = write(tmp_path, "AAPL.csv", (
        "symbol,timestamp,open,high,low,close,volume,trade_count,vwap\n"
        "AAPL,2024-01-02 14:30:00+00:00,187.15,188.44,186.1,186.5,20000000.0,150000.0,186.9\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(
        frame, expected([("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000)])
    )
    assert meta["import_format"] == "alpaca"


def test_databento_ohlcv_csv(tmp_path: Path) -> None:
    # Databento's to_csv(pretty_px=True, pretty_ts=False) of ohlcv-1h: ts_event in epoch ns.
    path = write(tmp_path, "AAPL.csv", (
        "ts_event,rtype,publisher_id,instrument_id,open,high,low,close,volume,symbol\n"
        "1704205800000000000,34,2,15144,187.15,188.44,186.1,186.5,20000000,AAPL\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(
        frame, expected([("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000)])
    )
    assert meta["import_format"] == "databento"


@pytest.mark.parametrize(
    "stamp",
    ["20240102  09:30:00", "20240102 09:30:00 US/Eastern", "20240102-14:30:00"],
    ids=["naive-two-spaces", "zoned", "utc-dash"],
)
def test_ib_historical_bars(tmp_path: Path, stamp: str) -> None:
    # IB's BarData written as is (ib_insync/ib_async util.df(bars).to_csv()): date, OHLCV,
    # average, barCount; the date as TWS sends it (formatDate=1 naive, the newer zoned form, or
    # formatDate=2's UTC form).
    path = write(tmp_path, "AAPL.csv", (
        "date,open,high,low,close,volume,average,barCount\n"
        f"{stamp},187.15,188.44,186.1,186.5,20000000,186.9,150000\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(
        frame, expected([("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000)])
    )
    assert meta["import_format"] == "ib"


def test_backtesting_py_goog_daily(tmp_path: Path) -> None:
    # backtesting.py's test/GOOG.csv: an unnamed index column of dates, then OHLCV.
    path = write(tmp_path, "GOOG.csv", (
        ",Open,High,Low,Close,Volume\n"
        "2004-08-19,100,104.06,95.96,100.34,22351900\n"
        "2004-08-20,101.01,109.08,100.5,108.31,11428600\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1d")
    pd.testing.assert_frame_equal(frame, expected([
        ("2004-08-19", 100.0, 104.06, 95.96, 100.34, 22351900),
        ("2004-08-20", 101.01, 109.08, 100.5, 108.31, 11428600),
    ]))  # fmt: skip
    assert meta["import_format"] == "pandas"


def test_backtesting_py_eurusd_hourly(tmp_path: Path) -> None:
    # backtesting.py's test/EURUSD.csv: naive hourly times (read on the exchange's clock).
    path = write(tmp_path, "EURUSD.csv", (
        ",Open,High,Low,Close,Volume\n"
        "2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n"
        "2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,1241\n"
    ))  # fmt: skip
    frame, meta = imported(path, "1h", tz="UTC")
    pd.testing.assert_frame_equal(frame, expected([
        ("2017-04-19 09:00", 1.0716, 1.0722, 1.07083, 1.07219, 1413),
        ("2017-04-19 10:00", 1.07214, 1.07296, 1.07214, 1.0726, 1241),
    ]))  # fmt: skip
    assert (meta["time_zone"], meta["time_zone_from"]) == ("UTC", "tz")


def test_backtesting_py_sample_files_import_whole(tmp_path: Path) -> None:
    backtesting = pytest.importorskip("backtesting")
    folder = Path(backtesting.__file__).parent / "test"
    for name, timeframe in (("GOOG.csv", "1d"), ("EURUSD.csv", "1h")):
        raw = pd.read_csv(folder / name, index_col=0, parse_dates=True)
        frame = FileSource(folder / name).read("X", timeframe)
        assert len(frame) == len(raw)
        assert np.allclose(frame["close"].to_numpy(), raw["Close"].to_numpy())


def test_parquet_with_a_datetime_column(tmp_path: Path) -> None:
    path = tmp_path / "AAPL.parquet"
    pd.DataFrame({
        "timestamp": pd.to_datetime(["2024-01-02 14:30", "2024-01-02 15:30"], utc=True),
        "open": [187.15, 186.5], "high": [188.44, 187.0], "low": [186.1, 185.8],
        "close": [186.5, 186.2], "volume": [20000000, 9000000],
    }).to_parquet(path)  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000),
        ("2024-01-02 15:30", 186.50, 187.00, 185.80, 186.20, 9000000),
    ]))  # fmt: skip
    assert meta["import_format"] == "parquet"


def test_parquet_with_a_naive_datetime_index_is_exchange_time(tmp_path: Path) -> None:
    path = tmp_path / "AAPL.parquet"
    index = pd.DatetimeIndex(["2024-01-02 09:30", "2024-01-02 10:30"], name="Datetime")
    pd.DataFrame(
        {"Open": [187.15, 186.5], "High": [188.44, 187.0], "Low": [186.1, 185.8],
         "Close": [186.5, 186.2], "Volume": [20000000, 9000000]}, index=index,
    ).to_parquet(path)  # fmt: skip
    frame, meta = imported(path, "1h")
    pd.testing.assert_frame_equal(frame, expected([
        ("2024-01-02 14:30", 187.15, 188.44, 186.10, 186.50, 20000000),
        ("2024-01-02 15:30", 186.50, 187.00, 185.80, 186.20, 9000000),
    ]))  # fmt: skip
    assert (meta["time_zone"], meta["time_zone_from"]) == ("America/New_York", "exchange")
