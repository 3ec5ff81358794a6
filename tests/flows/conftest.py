"""One Prefect test harness for every flow test (DESIGN §8): temporary PREFECT_HOME and database,
quiet settings, no flow heartbeat. Never combine with pytest-xdist (PrefectHQ/prefect#16397)."""

from __future__ import annotations

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
    from prefect.testing.utilities import prefect_test_harness

    # Settings objects too: prefect may have read the environment before this module ran.
    updates: dict[Any, Any] = {
        PREFECT_HOME: Path(_HOME),
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_LOGGING_LEVEL: "WARNING",
        PREFECT_TASKS_DEFAULT_NO_CACHE: True,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,  # env vars cannot say None
    }
    with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=120):
        yield
    shutil.rmtree(_HOME, ignore_errors=True)
