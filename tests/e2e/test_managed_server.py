"""The managed local Prefect server: start/status/stop, one server per PREFECT_HOME even when two
commands race to start it, nothing left behind by `server stop` or by a SIGKILLed load, and no
unauthenticated API on a non-loopback address.

Each test has its own PREFECT_HOME (a fresh database: ~15 s to migrate on this machine).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import candleflow, quiet_env, start_candleflow
from tests.timing import wait_until

pytestmark = pytest.mark.slow


def processes_of(home: Path) -> set[int]:
    """PIDs of live processes whose environment names ``home`` as PREFECT_HOME."""
    needle = f"PREFECT_HOME={home}".encode()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.add(int(entry.name))
    return found


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="candleflow-home-"))
    try:
        yield path
    finally:
        candleflow(quiet_env(path), "server", "stop")
        for pid in processes_of(path):  # never leave a server behind, even on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cluster = path / "candleflow-server" / "postgres.json"
        if cluster.exists():  # root's clusters live outside the home
            data_dir = Path(json.loads(cluster.read_text())["data_dir"])
            shutil.rmtree(data_dir.parent, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)


def server_json(home: Path) -> dict[str, object]:
    data = json.loads((home / "candleflow-server" / "server.json").read_text())
    assert isinstance(data, dict)
    return data


def test_start_status_stop_and_a_second_start_reports_the_running_server(home: Path) -> None:
    env = quiet_env(home)
    assert candleflow(env, "server", "status").returncode == 1

    first = candleflow(env, "server", "start", "--port", "0")
    assert first.returncode == 0, first.stderr
    assert "Prefect server started" in first.stdout
    info = server_json(home)
    assert f"127.0.0.1:{info['port']}" in first.stdout

    second = candleflow(env, "server", "start", "--port", "0")
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stdout and f"pid {info['pid']}" in second.stdout
    assert server_json(home)["pid"] == info["pid"]

    status = candleflow(env, "server", "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["pid"] == info["pid"] and report["database"] == "sqlite"
    assert report["prefect_version"].startswith("3.8")
    assert report["api_url"] == f"http://127.0.0.1:{info['port']}/api"
    assert report["uptime_s"] >= 0 and report["work_pools"] == []

    assert candleflow(env, "runs").returncode == 0  # finds the server: no PREFECT_API_URL set
    stop = candleflow(env, "server", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr
    assert processes_of(home) == set()
    assert candleflow(env, "server", "status").returncode == 1
    assert "no managed Prefect server" in candleflow(env, "server", "stop").stdout


def test_two_commands_starting_together_end_with_one_server(home: Path, tmp_path: Path) -> None:
    env = quiet_env(home)
    procs = [start_candleflow(env, "runs") for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    announced = [err for _, _, err in results if "started the candleflow Prefect server" in err]
    assert len(announced) == 1, results  # announced once, by the command that started it
    servers = processes_of(home)
    assert servers == {server_json(home)["pid"]}, servers


def test_a_load_killed_with_sigkill_leaves_only_the_managed_server(
    home: Path, tmp_path: Path
) -> None:
    env = quiet_env(home)
    store = tmp_path / "store"
    # Nine years at 0.3 s a segment: still fetching whenever the kill comes.
    load = start_candleflow(
        env, "load", "AAPL", "--timeframe", "1h", "--mode", "full", "--start", "2015-01-01",
        "--end", "2023-12-31", "--delay", "0.3", "--store", str(store), "--quiet",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: list(store.rglob("*.journal")) or load.poll() is not None, 240,
                   "the load to journal its first segment")  # fmt: skip
        assert load.poll() is None, "the load ended before it could be killed"
        os.killpg(load.pid, signal.SIGKILL)
        load.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(load.pid, signal.SIGKILL)
    server = server_json(home)["pid"]
    assert processes_of(home) == {server}
    assert candleflow(env, "server", "stop").returncode == 0
    assert processes_of(home) == set()


def _get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_non_loopback_address_needs_auth_and_the_cli_uses_it(home: Path) -> None:
    env = quiet_env(home)
    refused = candleflow(env, "server", "start", "--host", "0.0.0.0", "--port", "0")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--auth" in refused.stderr and "0.0.0.0" in refused.stderr
    assert processes_of(home) == set()

    started = candleflow(env, "server", "start", "--host", "0.0.0.0", "--port", "0", "--auth")
    assert started.returncode == 0, started.stderr
    secret = home / "candleflow-server" / "auth"
    assert secret.stat().st_mode & 0o777 == 0o600
    port = server_json(home)["port"]
    api = f"http://127.0.0.1:{port}/api"
    assert _get(f"{api}/admin/version") == 401  # no credentials: refused
    assert _get(f"{api}/admin/version", "candleflow:wrong") == 401
    assert _get(f"{api}/admin/version", secret.read_text().strip()) == 200
    runs = candleflow(env, "runs")
    assert runs.returncode == 0, runs.stderr
    status = candleflow(env, "server", "status", "--json")
    assert json.loads(status.stdout)["auth"] is True


def test_postgres_is_initialised_started_and_stopped_with_the_server(
    home: Path, tmp_path: Path
) -> None:
    env = quiet_env(home)
    started = candleflow(env, "server", "start", "--port", "0", "--database", "postgres")
    assert started.returncode == 0, started.stdout + started.stderr
    status = json.loads(candleflow(env, "server", "status", "--json").stdout)
    assert status["database"] == "postgres"
    assert status["database_location"].startswith("postgresql+asyncpg://candleflow:***@127.0.0.1:")
    secret = home / "candleflow-server" / "postgres.json"
    assert secret.stat().st_mode & 0o777 == 0o600  # it holds the database password
    store = tmp_path / "store"
    load = candleflow(env, "load", "AAPL", "--mode", "full", "--start", "2024-01-01", "--end",
                      "2024-01-31", "--store", str(store), "--quiet")  # fmt: skip
    assert load.returncode == 0, load.stderr
    assert len(processes_of(home)) > 1  # the Prefect server and PostgreSQL's processes
    stop = candleflow(env, "server", "stop")
    assert stop.returncode == 0, stop.stderr
    assert processes_of(home) == set()
    # A second start reuses the cluster (and its data): the load's flow run is still there.
    again = candleflow(env, "server", "start", "--port", "0", "--database", "postgres")
    assert again.returncode == 0, again.stderr
    runs = candleflow(env, "runs")
    assert "load AAPL" in runs.stdout and "Completed" in runs.stdout, runs.stdout
