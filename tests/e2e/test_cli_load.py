"""`candleflow load` end to end: bad input fails fast with one line; Ctrl+C stops cleanly.

Nothing here imports prefect in the test process (the flow tests own the harness); the SIGINT test
runs the real CLI in a subprocess against the session's managed Prefect server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from candleflow.cli import main
from candleflow.store.bar_store import BarStore
from tests.e2e.conftest import one_line, start_candleflow
from tests.timing import budget, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--timeframe", "7h"], ["7h", "1m", "1h", "1d"]),
        (["--start", "2024-02-01", "--end", "2024-01-01"], ["not before", "2024-02-01"]),
        (["--start", "2024-13-45"], ["malformed", "2024-13-45"]),
        (["--exchange", "NOPE"], ["unknown calendar", "NOPE"]),
        (["--source", "yahoo"], ["unknown source", "synthetic, files, ib"]),
        (["--source", "files"], ["needs a path"]),
        (["--mode", "sideways"], ["unknown mode", "tail"]),
    ],
)
def test_bad_input_exits_2_fast_with_one_line(
    args: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(["load", "AAPL", "--store", str(tmp_path / "s"), *args])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2
    line = one_line(err)
    for needle in needles:
        assert needle in line
    assert elapsed < budget(1.0), f"validation took {elapsed:.2f}s"


def test_bad_input_is_rejected_before_prefect_is_imported() -> None:
    script = (
        "import sys; from candleflow.cli import main; "
        "code = main(['load', 'AAPL', '--timeframe', '7h']); "
        "print(code, any(m == 'prefect' or m.startswith('prefect.') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["2", "False"]


def test_a_malformed_symbol_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", "../etc", "--store", str(tmp_path)]) == 2
    assert "invalid symbol '../etc'" in capsys.readouterr().err


def test_a_symbol_the_files_do_not_hold_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "AAPL.csv").write_text("timestamp,open,high,low,close,volume\n")
    assert main(["load", "MSFT", "--source", "files", "--path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown symbol 'MSFT'" in err and "AAPL.csv" in err and "\n" not in err


def test_an_unusable_store_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["load", "AAPL", "--store", str(not_a_dir)]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_stops_the_load_cleanly_saves_what_was_fetched_and_exits_130(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    store = tmp_path / "store"
    # Nine years at 0.3 s a segment: still fetching whenever the Ctrl+C arrives.
    # Its own session, so that Ctrl+C can be sent as a terminal sends it: to the whole
    # foreground process group (the managed Prefect server is not in it).
    proc = start_candleflow(
        cli_env, "load", "AAPL", "--timeframe", "1h", "--start", "2015-01-01", "--end",
        "2023-12-31", "--mode", "full", "--store", str(store), "--delay", "0.3",
        start_new_session=True,
    )  # fmt: skip
    try:
        # The first segment is journaled in the store as soon as it is fetched.
        wait_until(lambda: list(store.rglob("*.journal")) or proc.poll() is not None, 120,
                   "the first segment to be journaled", step=0.05)  # fmt: skip
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "cancelled" in err
    bars = BarStore(store).read("synthetic", "AAPL", "1h")
    assert len(bars) > 0
    assert bars.index.is_monotonic_increasing and not bars.index.has_duplicates
    assert bars.index[-1] < pd.Timestamp("2023-12-01", tz="UTC"), "it did not stop early"
    assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")]
    assert not list(store.rglob("*.journal")), "the cancelled load folded its journal"
    assert "rows added" in out


def _hourly_csv(path: Path) -> Path:
    """February 2024 of 1h bars as a vendor writes them (exchange time), one bar missing."""
    from candleflow.loading.calendars import expected_bars

    grid = expected_bars(
        "XNYS", "1h", pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-03-01", tz="UTC")
    )
    starts = grid.starts.tz_convert("America/New_York").tz_localize(None).delete(40)
    rows = [f"{t:%Y-%m-%d %H:%M:%S},10,11,9,10.5,100" for t in starts]
    path.write_text("Datetime,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_importing_a_complete_file_without_dates(tmp_path: Path, cli_env: dict[str, str]) -> None:
    from candleflow.store.inspect import describe_series
    from tests.e2e.conftest import candleflow

    csv, store = _hourly_csv(tmp_path / "ibm_1h.csv"), tmp_path / "store"
    result = candleflow(cli_env, "load", "IBM", "--source", "files", "--path", str(csv),
                        "--timeframe", "1h", "--store", str(store), "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "failed" not in result.stderr and "Traceback" not in result.stderr
    assert "2024-02-01 09:30 → 2024-02-29 16:00 America/New_York" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "139" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    # rows added, rows, segments (one pass), API calls, missing (as show counts them)
    shown = describe_series(BarStore(store), "files", "IBM", "1h")
    assert cells[:5] == ["139", "139", "1", "3", str(shown.missing_bars)]
    assert shown.missing_bars == 1
    meta = BarStore(store).read_meta("files", "IBM", "1h")
    assert (meta["time_zone"], meta["time_zone_from"], meta["align"]) == (
        "America/New_York", "exchange", "clock",
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dates", "words"),
    [
        (["--start", "1800-01-01", "--end", "1800-12-31"], "ends before the first bar"),
        (["--start", "2999-01-01"], "starts in the future"),
    ],
    ids=["1800", "2999"],
)
def test_a_range_outside_the_file_is_one_line_and_writes_nothing(
    tmp_path: Path, cli_env: dict[str, str], dates: list[str], words: str
) -> None:
    from tests.e2e.conftest import candleflow

    csv, store = _hourly_csv(tmp_path / "ibm_1h.csv"), tmp_path / "store"
    result = candleflow(cli_env, "load", "IBM", "--source", "files", "--path", str(csv),
                        "--timeframe", "1h", "--store", str(store), "-q", *dates)  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = one_line(result.stdout)
    assert words in line
    assert "holds 2024-02-01 09:30 → 2024-02-29 15:00 (America/New_York)" in line
    assert result.stderr.strip() == ""
    assert not list(store.rglob("*.parquet")) and not list(store.rglob("*.json"))


@pytest.mark.slow
def test_impossible_prices_are_dropped_or_refused_with_strict(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    from tests.e2e.conftest import candleflow

    csv = tmp_path / "spx.csv"
    csv.write_text(
        "Date,Open,High,Low,Close,Volume\n2015-01-02,10,11,9,10.5,100\n"
        "2015-01-05,-1,11,-2,10.5,100\n2015-01-06,10,11,9,10.5,-3\n2015-01-07,10,11,9,10.5,100\n"
    )
    args = ["load", "SPX", "--source", "files", "--path", str(csv), "--timeframe", "1d", "-q"]
    strict = candleflow(cli_env, *args, "--store", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 2, strict.stderr
    assert "2 of 4 rows break the price rules" in one_line(strict.stderr)
    assert not list((tmp_path / "strict").rglob("*.parquet"))
    lenient = candleflow(cli_env, *args, "--store", str(tmp_path / "lenient"))
    assert lenient.returncode == 0, lenient.stderr
    warning = one_line(lenient.stderr)
    assert warning.endswith(
        "dropped 2 of 4 rows breaking the price rules (1 non-positive price, 1 negative "
        "volume; first at 2015-01-05 00:00 UTC)"
    )
    assert len(BarStore(tmp_path / "lenient").read("files", "SPX", "1d")) == 2
