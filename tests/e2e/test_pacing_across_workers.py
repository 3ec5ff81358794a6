"""IB pacing held across worker processes by a Prefect global concurrency limit (DESIGN §4.3, §7).

One IB simulator (in this process, pacing enforced, windows scaled down) and one real Prefect
server; two separate ``candleflow load --source ib`` processes load two symbols at once, more
historical requests together than IB's 60 per window. With the shared limit the simulator counts
no violation and the loads take at least the pacing minimum; with the limit switched off
(``CANDLEFLOW_IB_SHARED_PACING=off``) the same two processes, each within its own limiter, do
break IB's rule — the control that shows the test can fail. Only lower bounds on time; processes
are waited for with generous timeouts.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectNotFound

from candleflow.ibsim import IBSimulator
from candleflow.sources.pacing import shared_rate_budget
from tasks.pacing import SHARED_PACING_ENV, SLOTS_PER_REQUEST, pacing_limit_name
from tests.e2e.prefect_server import Server, background, prefect_server
from tests.timing import wait_until

pytestmark = pytest.mark.slow

SCALE = 0.02  # IB's 600 s window lasts 12 s
CONTROL_SCALE = 0.1  # 60 s: the two uncoordinated processes surely overlap within one window
IB_MAX_REQUESTS, IB_WINDOW = 60, 600.0  # IB docs: 60 historical requests per 10 minutes
SYMBOLS = ("AAPL", "MSFT")
# 1-minute bars: one request per session (IB's 1 D maximum); ~41 sessions per symbol.
SPAN = ("--timeframe", "1m", "--start", "2024-01-02", "--end", "2024-02-29")
PROCESS_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with prefect_server(tmp_path_factory.mktemp("pacing-server")) as running:
        yield running


def _load_args(sim: IBSimulator, symbol: str, client_id: int, store: Path) -> list[str]:
    return [
        sys.executable, "-m", "candleflow", "load", symbol, *SPAN, "--mode", "full",
        "--source", "ib", "--ib-port", str(sim.port), "--ib-time-scale", f"{sim.time_scale:g}",
        "--client-id", str(client_id), "--store", str(store), "--quiet",
    ]  # fmt: skip


@contextlib.contextmanager
def _two_loads(
    sim: IBSimulator, env: dict[str, str], tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Both loads started at once, each in its own process (stopped on the way out)."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                background(
                    _load_args(sim, symbol, client_id, tmp_path / "store"),
                    env,
                    tmp_path / f"load-{symbol}.log",
                )
            )
            for client_id, symbol in enumerate(SYMBOLS, start=10)
        ]


def _logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')}"
        for path in sorted(tmp_path.glob("load-*.log"))
    )


def _read_limit(server: Server, name: str) -> GlobalConcurrencyLimitResponse:
    with server.client() as client:
        return client.read_global_concurrency_limit_by_name(name)


def test_two_worker_processes_share_ibs_pacing_through_the_server(
    server: Server, tmp_path: Path
) -> None:
    env = {k: v for k, v in server.env.items() if k != SHARED_PACING_ENV}
    with IBSimulator(seed=3, time_scale=SCALE) as sim:
        started = time.monotonic()
        with _two_loads(sim, env, tmp_path) as procs:
            codes = [proc.wait(PROCESS_TIMEOUT) for proc in procs]
        elapsed = time.monotonic() - started
        stats = sim.stats
    logs = _logs(tmp_path)
    assert codes == [0, 0], logs
    assert "failed" not in logs, logs
    assert stats.violations == 0, logs
    requests = stats.historical_requests
    assert all(stats.per_symbol.get(symbol, 0) >= 40 for symbol in SYMBOLS), stats.per_symbol
    assert requests > IB_MAX_REQUESTS  # so the limit shared by the two processes mattered

    # IB's own minimum: with at most 60 in any window, request 61 comes a window after request 1.
    window = IB_WINDOW * SCALE
    assert elapsed >= (requests - 1) // IB_MAX_REQUESTS * window
    # The shared bucket's minimum: 30 at once, then `rate` per second (two requests' grace for
    # the server's millisecond timestamps, each of which may credit a little decay early).
    budget = shared_rate_budget(time_scale=SCALE)
    bucket_minimum = (requests - budget.burst - 2) / budget.rate
    assert elapsed >= bucket_minimum

    limit = _read_limit(server, pacing_limit_name("127.0.0.1", sim.port, SCALE))
    assert limit.limit == budget.burst * SLOTS_PER_REQUEST
    assert limit.slot_decay_per_second == pytest.approx(budget.rate * SLOTS_PER_REQUEST)
    # Used throughout: the last slot was taken at least the bucket's minimum after creation.
    assert limit.created is not None and limit.updated is not None
    assert (limit.updated - limit.created).total_seconds() >= bucket_minimum


def test_without_the_shared_limit_the_same_two_processes_break_ibs_pacing(
    server: Server, tmp_path: Path
) -> None:
    env = {**server.env, SHARED_PACING_ENV: "off"}
    with IBSimulator(seed=3, time_scale=CONTROL_SCALE) as sim:
        with _two_loads(sim, env, tmp_path) as procs:
            # Each process alone stays within IB's rules; together they go over 60 per window.
            wait_until(
                lambda: sim.stats.violations > 0 or all(p.poll() is not None for p in procs),
                PROCESS_TIMEOUT,
                "a pacing violation or both loads to end",
            )
        stats = sim.stats
    assert stats.violations > 0, _logs(tmp_path)
    assert all(stats.per_symbol.get(symbol, 0) > 0 for symbol in SYMBOLS), stats.per_symbol
    with pytest.raises(ObjectNotFound):
        _read_limit(server, pacing_limit_name("127.0.0.1", sim.port, CONTROL_SCALE))
