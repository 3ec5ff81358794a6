"""Session-wide safety net: a test that ran a CLI command outside a Prefect harness may have
started the managed server in this process's PREFECT_HOME; it never outlives the session.
Also what every tier shares: Hypothesis without deadlines and :func:`free_port` (time and waiting
are in ``tests/timing.py``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Hypothesis fails an example that takes over 200 ms by default: a wall-clock bound that a busy
# machine breaks. No deadline, for every property test.
settings.register_profile("candleflow", deadline=None)
settings.load_profile("candleflow")


def free_port() -> int:
    """A loopback TCP port nothing listens on (free when asked; bind it soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def no_managed_server_left() -> Iterator[None]:
    yield
    from candleflow.cli import managed

    managed.stop(managed.ServerState())


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``candleflow ARGV`` in this process: its exit code, stdout and stderr."""
    from candleflow.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
