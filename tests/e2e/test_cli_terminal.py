"""What a terminal shows during a CLI flow run: the progress display and the command's own
lines, never Prefect's run logs (they broke the bar; the UI has them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import candleflow

pytestmark = pytest.mark.slow


def test_a_load_prints_no_run_logs_on_the_terminal(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = candleflow(cli_env, "load", "AAPL", "--mode", "full", "--start", "2024-01-02",
                        "--end", "2024-01-31", "--store", str(tmp_path / "s"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "prefect.flow_runs" not in result.stderr and "prefect.task_runs" not in result.stderr
    assert "Finished in state" not in result.stderr and "Beginning flow run" not in result.stderr


def test_a_failing_load_prints_one_error_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    store = tmp_path / "s"
    ok = candleflow(cli_env, "load", "AAPL", "--mode", "full", "--start", "2024-01-02", "--end",
                    "2024-01-31", "--store", str(store), "--quiet")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    for partition in store.rglob("*.parquet"):
        partition.write_bytes(b"not parquet")  # the store is corrupt: the load must fail
    failed = candleflow(cli_env, "load", "AAPL", "--mode", "full", "--start", "2024-01-02",
                        "--end", "2024-02-29", "--store", str(store), "--quiet")  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), failed.stderr
    assert "unreadable" in lines[0]
