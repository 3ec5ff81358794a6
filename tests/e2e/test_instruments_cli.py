"""Instrument specs through the product's faces (issue 13): the CLI rejects a junk ticker the
gateway does not know with exit 2 and one line naming it, a malformed spec before asking the
gateway; the simulator's own CLI (``python -m candleflow.ibsim``) serves a ``--symbols`` file.
"""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from candleflow.cli import main
from candleflow.errors import UnknownSymbol
from candleflow.ibsim import IBSimulator
from candleflow.sources.ib import IBSource
from candleflow.sources.pacing import PacingLimiter
from tests.e2e.conftest import one_line

ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.01
LISTENING = re.compile(r"IB simulator listening on ([\d.]+):(\d+)")


@pytest.fixture
def sim() -> Iterator[IBSimulator]:
    with IBSimulator(seed=7, time_scale=SCALE) as simulator:
        yield simulator


def _load(sim: IBSimulator, store: Path, symbol: str) -> int:
    return main(["load", symbol, "--source", "ib", "--ib-port", str(sim.port),
                 "--ib-time-scale", str(SCALE), "--store", str(store), "--quiet"])  # fmt: skip


@pytest.mark.parametrize("junk", ["XQZTV", "QQQQQ", "ZZ:fut"])
def test_a_junk_ticker_exits_2_with_one_line_naming_it_and_ib_error_200(
    sim: IBSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], junk: str
) -> None:
    assert _load(sim, tmp_path, junk) == 2
    line = one_line(capsys.readouterr().err)
    assert junk.upper() in line and "IB error 200" in line, line
    assert sim.stats.contract_requests == 1, "the symbol was not asked of the gateway"


@pytest.mark.parametrize(
    ("spec", "words"),
    [("AAPL:bond", "unknown asset class"), ("EURXXX:fx", "invalid forex pair"),
     ("ES:fut:2026", "YYYYMM")],
)  # fmt: skip
def test_a_malformed_spec_exits_2_before_asking_the_gateway(
    sim: IBSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, words: str
) -> None:
    assert _load(sim, tmp_path, spec) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line, line
    assert sim.stats.contract_requests == 0


@pytest.mark.parametrize("command", [["candleflow.ibsim"], ["candleflow", "ib-sim"]])
def test_the_simulators_cli_serves_a_symbols_file(tmp_path: Path, command: list[str]) -> None:
    symbols = tmp_path / "symbols.csv"
    symbols.write_text("symbol,sec_type,primary_exchange,long_name\nXQZTV,STK,NYSE,JUNK CORP\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", *command, "--port", "0", "--time-scale", str(SCALE),
         "--symbols", str(symbols), "--replace-symbols"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        match = LISTENING.search(line)
        assert match is not None, line
        source = IBSource(match.group(1), int(match.group(2)), client_id=3, timeout=10,
                          limiter=PacingLimiter(time_scale=SCALE))  # fmt: skip
        with source:
            assert source.validate("XQZTV").primary_exchange == "NYSE"
            with pytest.raises(UnknownSymbol, match="AAPL"):
                source.validate("AAPL")  # replaced: the shipped directory is not served
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_bad_symbols_file_exits_2_naming_the_line(tmp_path: Path) -> None:
    symbols = tmp_path / "symbols.csv"
    symbols.write_text("symbol,sec_type\nAAPL,BOND\n")
    result = subprocess.run(
        [sys.executable, "-m", "candleflow.ibsim", "--port", "0", "--symbols", str(symbols)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "symbols.csv line 2" in result.stdout and "BOND" in result.stdout
