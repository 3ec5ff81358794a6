"""A load killed mid-fetch (SIGKILL: no finally, no flush) loses only the segment in flight: the
segments before it are in its journal, readers see them, and the next load folds them into the
partitions and fetches only what is still missing — each partition written once per load."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from candleflow.loading.pipeline import LoadRequest, run_load
from candleflow.models import Segment
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from candleflow.store.journal import journal_files

ROOT = Path(__file__).resolve().parents[2]
ARGS = {"symbol": "AAPL", "timeframe": "1m", "start": "2024-03-04", "end": "2024-03-09"}
KILL_AT = 4  # the 4th fetch kills the process: 3 segments (days) are journaled

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from candleflow.loading.pipeline import LoadRequest, run_load
    from candleflow.sources.synthetic import SyntheticSource
    from candleflow.store.bar_store import BarStore

    calls = 0
    def fail(segment):
        global calls
        calls += 1
        if calls == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
        return None

    request = LoadRequest.parse({symbol!r}, {timeframe!r}, start={start!r}, end={end!r},
                                mode="full")
    run_load(request, SyntheticSource(fail=fail), BarStore(sys.argv[1]))
    """
)


def _request() -> LoadRequest:
    return LoadRequest.parse(
        ARGS["symbol"], ARGS["timeframe"], start=ARGS["start"], end=ARGS["end"], mode="full"
    )


def test_a_killed_load_keeps_its_fetched_segments_and_the_next_load_folds_them(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(kill_at=KILL_AT, **ARGS), str(root)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr

    store = BarStore(root)
    series_dir = Path(str(store.series_dir("synthetic", "AAPL", "1m")))
    assert len(journal_files(series_dir)) == 1, "the dead load's journal is there"
    assert store.partitions("synthetic", "AAPL", "1m") == [], "no partition written mid-fetch"
    reference = SyntheticSource().bars("AAPL", "1m", "2024-03-04", "2024-03-09")
    days = sorted({ts.date() for ts in reference.index})
    seen = store.read("synthetic", "AAPL", "1m")
    # Exactly the three days fetched before the kill, as the source gave them.
    assert sorted({ts.date() for ts in seen.index}) == days[: KILL_AT - 1]
    pd.testing.assert_frame_equal(seen, reference.loc[seen.index], check_freq=False)

    fetched: list[Segment] = []

    def record(segment: Segment) -> None:
        fetched.append(segment)

    summary = run_load(_request(), SyntheticSource(fail=record), store)
    assert journal_files(series_dir) == [], "folded and removed"
    # Only the days the dead load had not journaled were asked for again.
    assert [s.start.date() for s in fetched] == days[KILL_AT - 1 :]
    assert summary.missing_bars_left == 0
    pd.testing.assert_frame_equal(
        store.read("synthetic", "AAPL", "1m"), reference, check_freq=False
    )
    assert store.read_meta("synthetic", "AAPL", "1m")["rows"] == len(reference)


def test_a_load_writes_each_partition_once_not_once_per_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BarStore(tmp_path / "store")
    writes: list[int] = []
    original = BarStore.write

    def counting(self: BarStore, *args: object, **kwargs: object) -> object:
        writes.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BarStore, "write", counting)
    summary = run_load(_request(), SyntheticSource(), store)
    assert summary.segments == 5 and summary.rows_added > 0
    assert len(writes) == 1, f"{len(writes)} store writes for one load of 5 segments"
    assert journal_files(Path(str(store.series_dir("synthetic", "AAPL", "1m")))) == []
