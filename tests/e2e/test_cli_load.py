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
        # The first segment is flushed to the store as soon as it is fetched.
        wait_until(lambda: list(store.rglob("*.parquet")) or proc.poll() is not None, 120,
                   "the first segment to be stored", step=0.05)  # fmt: skip
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
    assert "rows added" in out
