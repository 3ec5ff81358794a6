"""The fetch journal (candleflow.store.journal): appends, torn tails, orphans vs. live loads, and
what readers and the next load see (the crash of a whole load is in test_fetch_crash.py)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pandas as pd
import pytest

from candleflow.errors import StoreCorrupted
from candleflow.store.bar_store import BarStore
from candleflow.store.journal import (
    HEADER,
    Journal,
    journal_files,
    pending_bars,
    read_journal,
)
from tests.core.conftest import ramp_bars, utc

SERIES = ("synthetic", "JRNL", "1m")


def minutes(start: str, n: int) -> pd.DatetimeIndex:
    return pd.date_range(utc(start), periods=n, freq="1min", name="timestamp").as_unit("ns")


def test_appended_segments_read_back_exactly_later_ones_winning(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = ramp_bars(minutes("2024-03-04 14:30", 5))
    second = ramp_bars(minutes("2024-03-04 14:33", 5)) * 2  # overlaps the first's last 2 bars
    journal.append(first)
    journal.append(second)
    assert journal.path is not None and journal.segments == 2
    read = read_journal(journal.path)
    assert read.segments == 2 and read.torn_bytes == 0
    expected = pd.concat([first.iloc[:3], second])
    pd.testing.assert_frame_equal(read.bars, expected, check_freq=False)
    journal.close()


def test_nothing_is_created_until_the_first_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(ramp_bars(minutes("2024-03-04 14:30", 0)))
    journal.discard()
    assert not (tmp_path / "_journal").exists()


def _two_segments(folder: Path) -> Path:
    """A closed journal of two 3-bar segments in ``folder``; its path."""
    journal = Journal(folder)
    journal.append(ramp_bars(minutes("2024-03-04 14:30", 3)))
    journal.append(ramp_bars(minutes("2024-03-04 15:30", 3)))
    journal.close()
    assert journal.path is not None
    return journal.path


def test_a_torn_last_record_is_left_out_and_counted(tmp_path: Path) -> None:
    path = _two_segments(tmp_path)
    data = path.read_bytes()
    for cut in (1, 9, 40):  # inside the record header, at its start, inside its payload
        path.write_bytes(data[:-cut])
        read = read_journal(path)
        assert read.segments == 1 and len(read.bars) == 3
        assert read.torn_bytes > 0
    # Zeros where the last record should be (a power cut): the same.
    path.write_bytes(data + b"\x00" * 50)
    assert read_journal(path).torn_bytes == 50


def test_a_bad_record_before_the_end_is_corruption_naming_the_file(tmp_path: Path) -> None:
    path = _two_segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(HEADER) + 20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupted, match="checksum") as info:
        read_journal(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"something else entirely")
    with pytest.raises(StoreCorrupted, match="header"):
        read_journal(path)


def test_readers_see_journaled_bars_over_the_partitions(store: BarStore) -> None:
    stored = ramp_bars(minutes("2024-03-04 14:30", 10))
    store.write(*SERIES, stored)
    journal = store.journal(*SERIES)
    assert journal is not None
    fresher = ramp_bars(minutes("2024-03-04 14:35", 10)) + 1.0  # 5 replace, 5 are new
    journal.append(fresher)
    read = store.read(*SERIES)
    assert len(read) == 15
    pd.testing.assert_frame_equal(read.loc[fresher.index], fresher, check_freq=False)
    window = store.read(*SERIES, start=utc("2024-03-04 14:40"), end=utc("2024-03-04 14:42"))
    assert list(window.index) == list(minutes("2024-03-04 14:40", 2))
    journal.close()


def test_recovery_folds_orphans_but_leaves_a_live_journal_alone(store: BarStore) -> None:
    series_dir = Path(str(store.series_dir(*SERIES)))
    dead = store.journal(*SERIES)
    live = store.journal(*SERIES)
    assert dead is not None and live is not None
    dead_bars = ramp_bars(minutes("2024-03-04 14:30", 4))
    live_bars = ramp_bars(minutes("2024-03-05 14:30", 4))
    dead.append(dead_bars)
    dead.close()  # its load died: the lock is gone, the file stays
    live.append(live_bars)  # still open and locked
    assert store.recover(*SERIES) == 4
    assert journal_files(series_dir) == [live.path]
    assert len(store.read(*SERIES)) == 8  # partitions + the live journal
    assert store.read_meta(*SERIES)["rows"] == 4  # only the orphan is in the partitions
    live.discard()
    assert journal_files(series_dir) == []
    assert store.recover(*SERIES) == 0


def test_an_orphan_locked_elsewhere_is_not_taken(store: BarStore) -> None:
    journal = store.journal(*SERIES)
    assert journal is not None
    journal.append(ramp_bars(minutes("2024-03-04 14:30", 2)))
    journal.close()
    assert journal.path is not None
    fd = os.open(journal.path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's load holding it, as far as flock goes
        assert store.recover(*SERIES) == 0
        assert journal.path.exists()
    finally:
        os.close(fd)
    assert store.recover(*SERIES) == 2
    assert not journal.path.exists()


def test_older_orphans_fold_first_so_later_fetches_win(store: BarStore) -> None:
    index = minutes("2024-03-04 14:30", 3)
    for version in (1.0, 2.0, 3.0):
        journal = store.journal(*SERIES)
        assert journal is not None
        journal.append(ramp_bars(index) + version)
        journal.close()
    assert store.recover(*SERIES) == 9
    pd.testing.assert_frame_equal(store.read(*SERIES), ramp_bars(index) + 3.0, check_freq=False)


def test_pending_bars_of_a_series_without_journals_is_none(tmp_path: Path) -> None:
    assert pending_bars(tmp_path / "nowhere") is None


def test_a_series_whose_first_load_died_is_listed_and_readable(store: BarStore) -> None:
    journal = store.journal(*SERIES)
    assert journal is not None
    bars = ramp_bars(minutes("2024-03-04 14:30", 3))
    journal.append(bars)
    journal.close()
    assert store.series() == [SERIES]
    pd.testing.assert_frame_equal(store.read(*SERIES), bars, check_freq=False)
