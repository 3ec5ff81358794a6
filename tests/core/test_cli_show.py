"""`candleflow show`: finding the series without --source, a missing store, and bars out of the
store (a window in the terminal, every bar as CSV or JSON, and CSV that reads back as the same
bars)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candleflow.sources.files import FileSource
from candleflow.store.bar_store import BarStore
from tests.conftest import run_cli as run


def daily_bars(start: str, sessions: int, base: float = 100.0) -> pd.DataFrame:
    days = pd.bdate_range(start, periods=sessions, tz="UTC", name="timestamp")
    close = base + np.arange(sessions) * 0.25
    return pd.DataFrame(
        {
            "open": close - 0.1,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.arange(sessions, dtype=float) * 1000 + 5000,
        },
        index=days,
    )


def hourly_bars(day: str) -> pd.DataFrame:
    starts = pd.date_range(f"{day} 09:30", periods=7, freq="1h", tz="America/New_York")
    close = 50 + np.arange(7) / 8
    return pd.DataFrame(
        {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 100.0},
        index=pd.DatetimeIndex(starts.tz_convert("UTC"), name="timestamp"),
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    BarStore(root).write("files", "SPX", "1d", daily_bars("2018-11-01", 60))
    return root


def test_show_finds_the_only_source_holding_the_series(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store))
    assert (code, err) == (0, "")
    assert out.startswith("files/SPX/1d")
    assert "rows        60" in out


def test_show_json_report_names_the_source_found(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store), "--json")
    report = json.loads(out)
    assert (code, report["source"], report["rows"]) == (0, "files", 60)


def test_show_names_every_source_when_several_hold_the_series(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    BarStore(store).write("synthetic", "SPX", "1d", daily_bars("2018-11-01", 5))
    code, out, err = run(capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "files, synthetic" in err and "--source" in err
    code, out, _ = run(
        capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store), "--source", "synthetic"
    )
    assert code == 0 and "rows        5" in out


def test_show_of_a_store_that_does_not_exist_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    code, out, err = run(capsys, "show", "SPX", "--store", str(missing))
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and str(missing) in err and err.count("\n") == 1
    assert not missing.exists()


def test_show_points_at_other_timeframes_of_the_symbol(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", "SPX", "--timeframe", "1h", "--store", str(store))
    assert code == 0 and "nothing stored" in out
    assert "1d (files)" in err


def test_csv_window_holds_exactly_that_month_and_reads_back_the_same(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["show", "SPX", "--timeframe", "1d", "--store", str(store)]
    code, out, err = run(capsys, *argv, "--start", "2018-12-01", "--end", "2018-12-31", "--csv")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "timestamp,open,high,low,close,volume"
    expected = daily_bars("2018-11-01", 60)
    december = expected[(expected.index >= "2018-12-01") & (expected.index < "2019-01-01")]
    assert [line.split(",")[0] for line in lines[1:]] == [
        ts.strftime("%Y-%m-%d") for ts in december.index
    ]
    exported = tmp_path / "SPX.csv"
    exported.write_text(out)
    back = FileSource(exported).read("SPX", "1d")
    stored = BarStore(store).read(
        "files", "SPX", "1d", december.index[0], december.index[-1] + pd.Timedelta(days=1)
    )
    assert len(stored) == len(december)
    pd.testing.assert_frame_equal(back, stored, check_freq=False)


def test_intraday_csv_carries_exchange_offsets_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    bars = pd.concat([hourly_bars("2024-03-08"), hourly_bars("2024-03-11")])  # across DST
    BarStore(root).write("ib", "AAPL", "1h", bars)
    code, out, _ = run(capsys, "show", "AAPL", "--store", str(root), "--csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("2024-03-08T09:30:00-05:00,")
    assert lines[8].startswith("2024-03-11T09:30:00-04:00,")
    exported = tmp_path / "AAPL.csv"
    exported.write_text(out)
    stored = BarStore(root).read("ib", "AAPL", "1h")
    assert len(stored) == len(bars)
    pd.testing.assert_frame_equal(FileSource(exported).read("AAPL", "1h"), stored, check_freq=False)


def test_json_window_lists_every_bar_in_exchange_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    BarStore(root).write("ib", "AAPL", "1h", hourly_bars("2024-03-08"))
    code, out, _ = run(
        capsys, "show", "AAPL", "--store", str(root), "--json",
        "--start", "2024-03-08 11:00", "--end", "2024-03-08 13:00",
    )  # fmt: skip
    assert code == 0
    records = json.loads(out)
    assert [r["timestamp"] for r in records] == [
        "2024-03-08T11:30:00-05:00",
        "2024-03-08T12:30:00-05:00",
    ]
    assert records[0] == {
        "timestamp": "2024-03-08T11:30:00-05:00",
        "open": 50.25, "high": 51.25, "low": 49.25, "close": 50.25, "volume": 100,
    }  # fmt: skip


def test_window_in_the_terminal_shows_both_ends_and_the_count(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store),
        "--start", "2018-11-01", "--end", "2018-12-31",
    )  # fmt: skip
    assert code == 0
    assert "files/SPX/1d: 43 bars" in out
    assert "2018-11-01" in out and "2018-12-31" in out
    assert "… 33 more …" in out
    assert "2018-11-20" not in out  # a middle row is counted, not shown


def test_empty_window_says_so(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store), "--start", "1990-01-01",
        "--end", "1990-12-31",
    )  # fmt: skip
    assert code == 0 and "0 bars in this window" in out


def test_csv_and_json_together_is_bad_input(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "show", "SPX", "--store", str(store), "--csv", "--json")
    assert code == 2 and "choose one" in err


def test_reversed_window_is_bad_input(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store),
        "--start", "2018-12-31", "--end", "2018-12-01",
    )  # fmt: skip
    assert code == 2 and "not before" in err


def test_backtest_reads_the_series_from_the_source_that_holds_it(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["backtest", "SPX", "--timeframe", "1d", "--store", str(store), "--params",
            "fast=3,slow=8", "--json"]  # fmt: skip
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["start"].startswith("2018-11-01") and report["symbol"] == "SPX"
    BarStore(store).write("synthetic", "SPX", "1d", daily_bars("2018-11-01", 30))
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "") and "files, synthetic" in err


def test_show_says_where_the_bars_came_from(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    BarStore(store).update_meta(
        "files", "SPX", "1d", import_file="spx.csv", import_format="yahoo",
        time_zone="America/New_York", time_zone_from="exchange",
        instrument={"symbol": "SPX", "sec_type": "IND", "exchange": "CBOE", "currency": "USD",
                    "calendar": "XNYS", "con_id": 416904, "long_name": "S&P 500 Stock Index"},
    )  # fmt: skip
    code, out, _ = run(capsys, "show", "SPX", "--timeframe", "1d", "--store", str(store))
    assert code == 0
    assert "instrument  IND CBOE USD conId 416904 · S&P 500 Stock Index" in out
    assert "imported    spx.csv (yahoo layout)" in out
    assert "time zone   America/New_York (naive times read as exchange time)" in out
