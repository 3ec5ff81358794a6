"""A store that refuses a save, seen from the CLI: `candleflow load` (in-process, under the
Prefect harness) prints one `error:` line naming the store and the fix, exits 1, and the data
stored before is unchanged. (The harness's own console handler shows the run's logs here; that
a real CLI process prints nothing but the error line is tests/e2e/test_cli_errors.py's.)

Tests run as root, where a read-only mode does not stop writes: the refusal is injected where
the bytes go, with the errno a full disk or a read-only mount gives.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from candleflow.cli import main
from candleflow.store import atomic
from candleflow.store import bar_store as bar_store_module
from candleflow.store.bar_store import BarStore


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def _refusing(code: int) -> Callable[..., None]:
    def write(final: Path, body: Callable[[BinaryIO], object], **options: bool) -> None:
        def partial(fh: BinaryIO) -> None:
            fh.write(b"PAR1 half a partition")
            raise OSError(code, os.strerror(code), str(final))

        atomic.atomic_write(final, partial, **options)

    return write


def _load(store: Path, end: str) -> list[str]:
    return ["load", "AAPL", "--timeframe", "1d", "--mode", "full", "--start", "2024-01-02",
            "--end", end, "--store", str(store), "--quiet"]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "fix"), [(errno.ENOSPC, "free space"), (errno.EROFS, "read-only")]
)
def test_a_refused_save_is_one_line_exit_1_and_keeps_the_fetch_in_its_journal(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
    fix: str,
) -> None:
    store = tmp_path / "store"
    assert main(_load(store, "2024-02-29")) == 0
    before = _snapshot(store)
    capsys.readouterr()
    monkeypatch.setattr(bar_store_module, "atomic_write", _refusing(code))
    assert main(_load(store, "2024-04-30")) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("error: cannot write to store ") and str(store) in line
    assert fix in line and os.strerror(code) in line
    assert "Flow run encountered" not in line  # the core's words, not Prefect's wrapping
    # The partitions and metadata are as they were; what was fetched waits in the load's
    # journal, and the next load (with the disk back) folds it in without fetching it again.
    after = _snapshot(store)
    journals = [name for name in after if "/_journal/" in name]
    assert len(journals) == 1
    assert {k: v for k, v in after.items() if k not in journals} == before
    monkeypatch.undo()
    assert main(_load(store, "2024-04-30")) == 0
    assert not list(store.rglob("*.journal"))
    assert BarStore(store).read_meta("synthetic", "AAPL", "1d")["rows"] == len(
        BarStore(store).read("synthetic", "AAPL", "1d")
    )
