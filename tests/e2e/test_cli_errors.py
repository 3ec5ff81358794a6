"""Errors raised inside a flow reach the terminal as the CLI's one line: a bad import file is bad
input (exit 2), a store that refuses a save a failure (exit 1) — no traceback, no Prefect ERROR
line, and the store as it was. Each case runs the real CLI in a subprocess against the session's
managed Prefect server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, candleflow

pytestmark = pytest.mark.slow

WINDOW = ("--timeframe", "1d", "--start", "2024-01-02", "--end", "2024-02-29")
HEADER = "timestamp,open,high,low,close,volume\n"
HOURLY = HEADER + "".join(
    f"2024-01-0{day} {hour}:30,100,101,99,100.5,1000\n" for day in (2, 3) for hour in (14, 15, 16)
)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def _assert_one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    assert "Flow run encountered" not in stderr, stderr  # the core's words, not Prefect's
    return lines[0]


@pytest.fixture(scope="module")
def loaded_store(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> Path:
    """A store holding bars already (synthetic and files), so "unchanged" means something."""
    store = tmp_path_factory.mktemp("loaded") / "store"
    ok = candleflow(cli_env, "load", "AAPL", *WINDOW, "--mode", "full", "--store", str(store), "-q")
    assert ok.returncode == 0, ok.stderr
    good = tmp_path_factory.mktemp("good") / "AAPL.csv"
    good.write_text(HEADER + "2024-01-02,100,101,99,100.5,1000\n2024-01-03,100,102,98,101,900\n")
    ok = candleflow(cli_env, "load", "AAPL", *WINDOW, "--mode", "full", "--source", "files",
                    "--path", str(good), "--store", str(store), "-q")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    return store


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("AAPL.csv", b"", "empty"),
        ("AAPL.csv", HEADER.encode(), "has no bars"),
        ("AAPL.csv", b"\x00\x01garbage\xff\n\x02\x03", "not a readable CSV"),
        ("AAPL.csv", b"timestamp,open,close\n2024-01-02,1,2\n", "missing price column"),
        ("AAPL.csv", HOURLY.encode(), "intraday"),
        ("AAPL.parquet", b"PAR1 not really parquet", "not a readable Parquet"),
    ],
    ids=["empty", "header-only", "garbage", "missing-columns", "1h-as-1d", "corrupt-parquet"],
)
def test_a_bad_import_file_is_one_error_line_exit_2_store_unchanged(
    tmp_path: Path,
    cli_env: dict[str, str],
    loaded_store: Path,
    name: str,
    content: bytes,
    needle: str,
) -> None:
    folder = tmp_path / "import"  # a folder, as a user's import directory
    folder.mkdir()
    (folder / name).write_bytes(content)
    before = _snapshot(loaded_store)
    result = candleflow(cli_env, "load", "AAPL", *WINDOW, "--mode", "full", "--source", "files",
                        "--path", str(folder), "--store", str(loaded_store), "-q")  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    line = _assert_one_error_line(result.stderr)
    assert needle in line and name in line, line
    assert _snapshot(loaded_store) == before


# The system's refusals, as a real CLI process meets them: tests run as root, where a read-only
# mode does not stop writes, so the refusal is injected where the bytes go (the temp file).
_REFUSING_CLI = """
import errno, os, sys
from candleflow.store import atomic, bar_store

def refusing(final, body, **options):
    def partial(fh):
        fh.write(b"PAR1 half a partition")
        raise OSError(CODE, os.strerror(CODE), str(final))
    atomic.atomic_write(final, partial, **options)

bar_store.atomic_write = refusing
from candleflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("code", "fix"), [("errno.ENOSPC", "free space"), ("errno.EROFS", "read-only")]
)
def test_a_store_that_refuses_the_save_is_one_error_line_exit_1_partitions_unchanged(
    tmp_path: Path, cli_env: dict[str, str], loaded_store: Path, code: str, fix: str
) -> None:
    import shutil
    import subprocess

    store = tmp_path / "store"  # a copy: what this load fetched stays in its journal
    shutil.copytree(loaded_store, store)
    before = _snapshot(store)
    script = _REFUSING_CLI.replace("CODE", code)
    result = subprocess.run(
        [sys.executable, "-c", script, "load", "AAPL", "--timeframe", "1d", "--mode", "full",
         "--start", "2024-01-02", "--end", "2024-04-30", "--store", str(store), "-q"],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    line = _assert_one_error_line(result.stderr)
    assert line.startswith(f"error: cannot write to store {store} "), line
    assert fix in line, line
    after = _snapshot(store)
    journals = [name for name in after if "/_journal/" in name]
    assert len(journals) == 1, "the fetched bars wait in the load's journal"
    assert {k: v for k, v in after.items() if k not in journals} == before


def test_a_store_under_a_file_is_bad_input_before_the_flow(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    result = candleflow(cli_env, "load", "AAPL", *WINDOW, "--store", str(tmp_path / "afile" / "s"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is a file" in _assert_one_error_line(result.stderr)


def test_verbose_shows_prefect_s_run_logs(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = candleflow(cli_env, "load", "AAPL", *WINDOW, "--store", str(tmp_path / "s"),
                        "--quiet", "--verbose")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "prefect.flow_runs" in result.stderr and "Finished in state" in result.stderr
