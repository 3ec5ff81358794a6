"""The IB path through the product's CLI: ``candleflow ib-sim`` and ``candleflow load --source ib``.

Bad input and a missing gateway are rejected before Prefect starts, so those tests call
``main()`` in this process; the loads run the real CLI in a subprocess against its own ephemeral
Prefect API in one temporary home (created once for the module). Nothing waits on a guess: the
tests read the simulator's "listening" line, and wait for processes to exit.
"""

from __future__ import annotations

import asyncio
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from candleflow.cli import main
from candleflow.ibsim import IBSimulator
from candleflow.loading.pipeline import LoadRequest
from candleflow.sources.ib import load_ib_library
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from tests.conftest import free_port
from tests.e2e.conftest import one_line
from tests.timing import budget

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SCALE = 0.01  # IB's pacing windows x 0.01: the 10-minute window lasts 6 s
LISTENING = re.compile(r"IB simulator listening on ([\d.]+):(\d+)")


@pytest.fixture(scope="module")
def prefect_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The session's managed-server environment for every CLI subprocess here."""
    return cli_env


class SimProcess:
    """``candleflow ib-sim`` running in a subprocess; ``port`` read from its first line."""

    def __init__(self, args: list[str], timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "candleflow", "ib-sim", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        # Wait on the line itself (select, so a process that never prints cannot hang the test).
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        match = LISTENING.search(line)
        if match is None:
            _, out, err = self.stop(signal.SIGKILL)
            raise AssertionError(f"ib-sim did not report listening: {line + out!r} {err!r}")
        self.first_line = line
        self.host, self.port = match.group(1), int(match.group(2))

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture
def sim() -> Iterator[IBSimulator]:
    with IBSimulator(seed=7, time_scale=SCALE) as simulator:
        yield simulator


# ----------------------------------------------------------------------------- fast, in-process


def test_an_unknown_symbol_through_the_ib_path_exits_2_with_one_line_naming_it(
    sim: IBSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = main(["load", "ZZZZ", "--source", "ib", "--ib-port", str(sim.port),
                 "--ib-time-scale", str(SCALE), "--store", str(tmp_path), "--quiet"])  # fmt: skip
    elapsed = time.monotonic() - started
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "unknown symbol 'ZZZZ'" in line and "IB error 200" in line
    assert sim.stats.contract_requests == 1, "the symbol was not asked of the gateway"
    assert elapsed < budget(5.0), f"rejecting took {elapsed:.2f}s"


def test_no_gateway_exits_1_with_one_line_saying_what_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    started = time.monotonic()
    code = main(["load", "AAPL", "--source", "ib", "--ib-port", str(port),
                 "--store", str(tmp_path), "--quiet"])  # fmt: skip
    elapsed = time.monotonic() - started
    assert code == 1
    line = one_line(capsys.readouterr().err)
    assert f"no IB gateway at 127.0.0.1:{port}" in line
    assert f"candleflow ib-sim --port {port}" in line and "IB Gateway" in line
    assert elapsed < budget(5.0), f"failing took {elapsed:.2f}s"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--source", "synthetic", "--ib-port", "7497"], ["ib_port=7497", "does not apply"]),
        (["--source", "ib", "--ib-port", "0"], ["ib_port", "1-65535"]),
        (["--source", "ib", "--client-id", "-1"], ["client_id", ">= 0"]),
        (["--source", "ib", "--ib-time-scale", "0"], ["time_scale", "positive"]),
        (["--source", "ib", "--seed", "3"], ["seed=3", "does not apply to source 'ib'"]),
    ],
)
def test_bad_ib_options_exit_2_withone_line(
    args: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", "AAPL", "--store", str(tmp_path), *args]) == 2
    line = one_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line


def test_ib_sim_on_a_busy_port_exits_1_withone_line(
    sim: IBSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ib-sim", "--port", str(sim.port)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"127.0.0.1:{sim.port}" in line and "another --port" in line


# ----------------------------------------------------------------------------- subprocesses


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ib_sim_answers_a_real_client_and_stops_on_a_signal_with_exit_0(
    stop_signal: signal.Signals,
) -> None:
    lib = load_ib_library()
    sim = SimProcess(["--port", "0", "--seed", "7", "--time-scale", str(SCALE)])
    try:
        assert "seed 7" in sim.first_line and "time scale 0.01" in sim.first_line

        async def session() -> tuple[list[str], int, int]:
            ib = lib.IB()
            await ib.connectAsync(sim.host, sim.port, clientId=9, timeout=5)
            try:
                aapl = lib.Stock("AAPL", "SMART", "USD")
                qualified = await ib.qualifyContractsAsync(aapl)
                bars = await ib.reqHistoricalDataAsync(
                    aapl, "20240131 21:00:00 UTC", "1 D", "1 hour", "TRADES", False, 2
                )
                return ib.managedAccounts(), qualified[0].conId, len(bars)
            finally:
                ib.disconnect()

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # ib_insync looks the loop up with get_event_loop()
        try:
            accounts, con_id, n_bars = loop.run_until_complete(session())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
        assert accounts and con_id > 0 and n_bars == 7
    finally:
        code, out, err = sim.stop(stop_signal)
    assert code == 0, err
    assert "IB simulator stopped: 1 connection(s), 1 historical request(s), 7 bars" in out
    assert not err.strip(), err


@pytest.mark.slow
def test_load_through_ib_stores_the_synthetic_sources_bars_without_pacing_violations(
    sim: IBSimulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    result = subprocess.run(
        [sys.executable, "-m", "candleflow", "load", "AAPL", "--source", "ib",
         "--ib-port", str(sim.port), "--ib-time-scale", str(SCALE), "--client-id", "4",
         "--timeframe", "1h", "--start", "2024-01-01", "--end", "2024-03-31", "--mode", "full",
         "--store", str(store), "--quiet"],
        cwd=ROOT, env=prefect_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "rows added" in result.stdout
    stored = BarStore(store).read("ib", "AAPL", "1h")
    request = LoadRequest.parse("AAPL", "1h", start="2024-01-01", end="2024-03-31")
    assert request.start is not None and request.end is not None
    expected = SyntheticSource(7).bars("AAPL", "1h", request.start, request.end)
    pd.testing.assert_frame_equal(stored, expected, check_freq=False)
    stats = sim.stats
    # Three months of 1-hour bars: IB allows "1 M" per request, so three requests, none refused.
    assert (stats.historical_requests, stats.violations) == (3, 0)
    assert stats.connections == 4  # gateway check + symbol check (CLI), then the flow's two


@pytest.mark.slow
def test_the_readme_ib_example_runs_offline(prefect_env: dict[str, str], tmp_path: Path) -> None:
    """The README's two-terminal IB example, on a free port instead of 4002."""
    usage = README.read_text(encoding="utf-8").split("## Usage", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in usage.splitlines()]
    sim_line = next((line for line in lines if line.startswith(".venv/bin/candleflow ib-sim")), "")
    load_line = next(
        (line for line in lines if line.startswith(".venv/bin/candleflow load") and
         "--source ib" in line),
        "",
    )  # fmt: skip
    assert sim_line and load_line, "README Usage lost its ib-sim / load --source ib example"
    port = str(free_port())

    def args(line: str) -> list[str]:
        words = shlex.split(line.split("#", 1)[0])[2:]  # drop ".venv/bin/candleflow COMMAND"
        return [port if word == "4002" else word for word in words]

    assert "4002" in sim_line and "4002" in load_line
    sim = SimProcess(args(sim_line))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "candleflow", "load", *args(load_line)],
            cwd=tmp_path, env=prefect_env, capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip
    finally:
        code, out, err = sim.stop()
    assert result.returncode == 0, result.stderr
    assert "rows added" in result.stdout
    assert code == 0, err
    assert re.search(r"stopped: \d+ connection\(s\), [1-9]\d* historical", out), out
    assert "0 pacing violation(s)" in out
