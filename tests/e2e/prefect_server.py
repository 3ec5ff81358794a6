"""Helpers of the e2e tests that run a real Prefect server and process workers (not a test file).

The managed server (`candleflow server start`, SQLite or PostgreSQL) on a free 127.0.0.1 port
with a temporary PREFECT_HOME, background processes in their own session (stopped with their
children), the `prefect` CLI run against that server, its work pool and deployments, and a
client of it. Waiting is ``tests.timing.wait_until``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import ROOT, candleflow, quiet_env

PREFECT = [sys.executable, "-m", "prefect"]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def background(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A background process in its own session (so its children stop with it)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            for sig, grace in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)


def prefect_yaml_deployments() -> dict[str, str]:
    """The deployments of the checkout's prefect.yaml: name → entrypoint."""
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d["entrypoint"] for d in config["deployments"]}


def missing_deployments(client: Any) -> dict[str, str]:
    """The deployments of prefect.yaml that the API (a sync client) lacks: name → entrypoint."""
    deployed = {(d.name, d.entrypoint) for d in client.read_deployments()}
    return {n: e for n, e in prefect_yaml_deployments().items() if (n, e) not in deployed}


@dataclass(frozen=True)
class Server:
    url: str
    env: dict[str, str]
    home: Path

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the `prefect` CLI from the checkout against this server."""
        return subprocess.run(
            [*PREFECT, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def deploy_all(self, pool: str = "candleflow") -> subprocess.CompletedProcess[str]:
        """Create the process work pool ``pool``, then plain `prefect --no-prompt deploy --all`
        from the checkout (all of prefect.yaml); both must succeed."""
        created = self.prefect("work-pool", "create", pool, "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deploy = self.prefect("--no-prompt", "deploy", "--all", timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        return deploy

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A sync Prefect client of this server."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: self.url}),
            get_client(sync_client=True) as client,
        ):
            yield client

    def worker(self, pool: str, log: Path) -> contextlib.AbstractContextManager[Any]:
        return background([*PREFECT, "worker", "start", "--pool", pool], self.env, log)


@contextlib.contextmanager
def prefect_server(
    tmp_path: Path, database: str = "sqlite", extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """The managed server (`candleflow server start`) on a free loopback port in a temporary
    home, on SQLite or a local PostgreSQL; yields when healthy, stops it (and removes a
    PostgreSQL cluster made for it) at exit. ``extra_env`` reaches the server and the CLIs."""
    home = tmp_path / "prefect"
    env = quiet_env(home)
    env.update(PREFECT_WORKER_QUERY_SECONDS="1", CANDLEFLOW_HOME=str(ROOT), **(extra_env or {}))
    started = candleflow(env, "server", "start", "--port", "0", "--database", database,
                         timeout=400)  # fmt: skip
    state = home / "candleflow-server"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        info = json.loads((state / "server.json").read_text())
        url = f"http://127.0.0.1:{info['port']}/api"
        yield Server(url, {**env, "PREFECT_API_URL": url}, home)
    finally:
        candleflow(env, "server", "stop", timeout=200)
        cluster = state / "postgres.json"
        if cluster.exists():  # a cluster outside the home (root's fallback) goes too
            shutil.rmtree(Path(json.loads(cluster.read_text())["data_dir"]).parent,
                          ignore_errors=True)  # fmt: skip
