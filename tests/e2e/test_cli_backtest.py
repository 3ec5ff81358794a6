"""`candleflow backtest` and `candleflow optimize` end to end on bars loaded into a tmp store.

The backtest needs no Prefect. Bad input exits 2 with one line before Prefect is imported; the
optimize run goes through the real CLI in a subprocess, on the session's managed Prefect server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from candleflow.backtest import run_backtest
from candleflow.cli import main
from candleflow.loading.pipeline import LoadRequest, run_load
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from tests.e2e.conftest import one_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hourly AAPL bars of H1 2024 loaded the way `candleflow load` does (no Prefect)."""
    root = tmp_path_factory.mktemp("backtest-store")
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-06-30", mode="full")
    summary = run_load(request, SyntheticSource(seed=0), BarStore(root))
    assert summary.rows_after > 500
    return root


def test_backtest_json_prints_one_object_with_the_metrics(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backtest", "AAPL", "--timeframe", "1h", "--strategy", "sma_cross",
                 "--params", "fast=10,slow=20", "--cash", "10000", "--store", str(store),
                 "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    report = json.loads(out)
    assert report["params"] == {"fast": 10, "slow": 20, "long_only": False}
    assert isinstance(report["trades"], int) and report["trades"] > 0
    bars = BarStore(store).read("synthetic", "AAPL", "1h")
    expected = run_backtest(bars, "sma_cross", {"fast": 10, "slow": 20}).metrics
    assert report["final_equity"] == pytest.approx(expected.final_equity, rel=1e-12)
    assert report["trades"] == expected.trades
    assert report["initial_equity"] == 10_000.0


def test_backtest_costs_and_the_table_output(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["backtest", "AAPL", "--params", "fast=10,slow=20", "--store", str(store)]
    assert main([*args, "--commission", "0.002", "--json"]) == 0
    with_costs = json.loads(capsys.readouterr().out)
    assert main([*args, "--json"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert with_costs["final_equity"] < without["final_equity"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "final_equity" in table and "sharpe" in table


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--strategy", "nope"], ["unknown strategy", "sma_cross"]),
        (["--params", "fast=20,slow=10"], ["fast < slow"]),
        (["--params", "fast"], ["malformed parameter", "name=value"]),
        (["--params", "speed=3"], ["no parameter speed"]),
        (["--commission", "0.5"], ["commission", "fraction"]),
        (["--timeframe", "7h"], ["7h"]),
    ],
)
def test_backtest_bad_input_exits_2_with_one_line(
    store: Path, args: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backtest", "AAPL", "--store", str(store), *args]) == 2
    line = one_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line


@pytest.mark.parametrize("command", ["backtest", "optimize"])
def test_an_empty_series_says_to_load_it_first(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "MSFT", "--store", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "candleflow load MSFT --timeframe 1h" in err and "\n" not in err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--space", "fast=a:b"], ["fast", "not a valid int"]),
        (["--space", "fast=5:50,speed=1:2"], ["no parameter 'speed'"]),
        (["--space", "fast"], ["malformed search dimension"]),
        (["--method", "annealing"], ["unknown method", "bayes"]),
        (["--objective", "luck"], ["unknown objective", "sharpe"]),
        (["--iterations", "0"], ["--iterations 0"]),
        (["--dask-address", "tcp://127.0.0.1:8786"], ["needs --dask"]),
    ],
)
def test_optimize_bad_input_exits_2_with_one_line(
    store: Path, args: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["optimize", "AAPL", "--store", str(store), *args]) == 2
    line = one_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line


@pytest.mark.slow
def test_optimize_end_to_end_prints_the_results_and_writes_the_report(
    store: Path, cli_env: dict[str, str]
) -> None:
    args = [sys.executable, "-m", "candleflow", "optimize", "AAPL", "--strategy", "sma_cross",
            "--method", "bayes", "--iterations", "6", "--space", "fast=5:20,slow=21:60",
            "--store", str(store)]  # fmt: skip
    result = subprocess.run(
        args, cwd=ROOT, env=cli_env, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "bayes search of sma_cross on AAPL 1h · 6 iterations" in result.stdout
    # The display's last frame: one line, ending at 100% with what was simulated.
    ends = [line for line in result.stderr.splitlines() if "100.00% done" in line]
    assert ends, f"no progress display: {result.stderr!r}"
    assert re.search(r"optimize .*100\.00% done · 6 iterations · [\d,]+ candles", ends[-1])
    reports = list((store / "reports" / "optimize" / "AAPL" / "1h").glob("*.html"))
    assert reports and any(str(r) in result.stdout.replace("\n", "") for r in reports)
