"""Session-wide safety net: a test that ran a CLI command outside a Prefect harness may have
started the managed server in this process's PREFECT_HOME; it never outlives the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_managed_server_left() -> Iterator[None]:
    yield
    from candleflow.cli import managed

    managed.stop(managed.ServerState())
