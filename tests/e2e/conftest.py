"""The e2e tests' Prefect: one managed server (``candleflow server start``) for the session.

CLI subprocesses get ``cli_env``: a quiet environment whose ``PREFECT_HOME`` holds that server and
no ``PREFECT_API_URL``, so every command finds the server the way a user's commands do. The
server is stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quiet_env(home: Path) -> dict[str, str]:
    """This process's environment without Prefect settings, plus a quiet Prefect in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def one_line(err: str) -> str:
    """The one non-blank line of ``err``: a CLI's error must fit on one line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def candleflow(
    env: dict[str, str], *args: str, timeout: float = 300, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m candleflow ARGS`` with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "candleflow", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


def start_candleflow(
    env: dict[str, str], *args: str, cwd: Path = ROOT, **popen: Any
) -> subprocess.Popen[str]:
    """Start ``python -m candleflow ARGS`` with ``env``: text output, piped unless ``popen``
    says otherwise (``stdout=subprocess.DEVNULL``, ``start_new_session=True``, …)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "candleflow", *args], cwd=cwd, env=env, text=True, **popen
    )


@pytest.fixture(scope="session")
def cli_env() -> Iterator[dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="candleflow-e2e-home-"))
    env = quiet_env(home)
    started = candleflow(env, "server", "start", "--port", "0")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield env
    finally:
        stopped = candleflow(env, "server", "stop")
        shutil.rmtree(home, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
