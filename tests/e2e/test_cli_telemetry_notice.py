"""The CLI keeps Prefect's first-run telemetry notice off the terminal: the managed server runs
with analytics off, and the client agrees (DO_NOT_TRACK unless the user set it)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from prefect._internal.analytics.ci_detection import CI_ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
NOTICE = "anonymous usage data"


def _stderr_on_a_terminal(code: str, home: Path) -> str:
    """Run ``code`` with stdout and stderr on a pseudo-terminal (interactive, as a person runs
    it) and a fresh Prefect home; return what it printed."""
    env = {k: v for k, v in os.environ.items() if k not in CI_ENV_VARS and k != "DO_NOT_TRACK"}
    env["PREFECT_HOME"] = str(home)
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=secondary, stderr=secondary,
    ) as proc:  # fmt: skip
        os.close(secondary)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=120)
    os.close(primary)
    return b"".join(chunks).decode(errors="replace")


def test_prefect_alone_prints_the_notice_on_a_terminal(tmp_path: Path) -> None:
    # The control: what a first `import prefect` does on a terminal without the CLI.
    assert NOTICE in _stderr_on_a_terminal("import prefect", tmp_path / "home")


def test_the_cli_does_not(tmp_path: Path) -> None:
    code = "from candleflow.cli import main; main(['--help']); import prefect"
    assert NOTICE not in _stderr_on_a_terminal(code, tmp_path / "home")
