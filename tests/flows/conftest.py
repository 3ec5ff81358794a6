"""One Prefect test harness for every flow test (DESIGN §8): the managed server users run
(``candleflow server start``) in a temporary PREFECT_HOME with its own database, quiet settings,
no flow heartbeat. Each pytest-xdist worker has its own (the home is per process).

The database is SQLite; ``CANDLEFLOW_TEST_DATABASE=postgres`` runs the same tests over a local
PostgreSQL (``make test`` does both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HOME = tempfile.mkdtemp(prefix="candleflow-prefect-home-")
# Set before anything here imports prefect, for this process and the subprocesses tests start.
_ENV = {
    "PREFECT_HOME": _HOME,
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_TASKS_DEFAULT_NO_CACHE": "true",
}
os.environ.update(_ENV)


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_LOGGING_LEVEL,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_TASKS_DEFAULT_NO_CACHE,
        temporary_settings,
    )

    # Settings objects too: prefect may have read the environment before this module ran.
    updates: dict[Any, Any] = {
        PREFECT_HOME: Path(_HOME),
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_LOGGING_LEVEL: "WARNING",
        PREFECT_TASKS_DEFAULT_NO_CACHE: True,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,  # env vars cannot say None
    }
    database = os.environ.get("CANDLEFLOW_TEST_DATABASE", "sqlite")
    with _managed_server(database), temporary_settings(updates=updates):
        yield
    shutil.rmtree(_HOME, ignore_errors=True)


@contextlib.contextmanager
def _managed_server(database: str) -> Iterator[str]:
    """The managed Prefect server (what users run: ``candleflow server start``) on ``database``
    (``sqlite`` or ``postgres``, a local PostgreSQL cluster), in the harness's home."""
    import json

    from prefect.context import refresh_global_settings_context

    from candleflow.cli import managed

    state = managed.ServerState(Path(_HOME))
    info, _ = managed.start(state, port=0, database=database)
    # Process-wide (threads that start flows do not copy the settings context), as a user's
    # PREFECT_API_URL would be.
    os.environ["PREFECT_API_URL"] = info.api_url
    refresh_global_settings_context()
    try:
        yield info.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        refresh_global_settings_context()
        managed.stop(state)
        if database == "postgres":
            config = json.loads(state.cluster.config_file.read_text())
            shutil.rmtree(Path(config["data_dir"]).parent, ignore_errors=True)
