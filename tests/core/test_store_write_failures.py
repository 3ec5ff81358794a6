"""The store refusing a write (disk full, read-only, permissions) raises ``StoreWriteFailed``
naming the store and the fix, and leaves the data stored before exactly as it was.

Tests run as root, where a read-only mode does not stop writes: the refusals are injected where
the bytes go (the temp file's write, the rename), with the errno the system would give.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pytest

from candleflow.errors import CandleflowError, StoreWriteFailed
from candleflow.store import atomic
from candleflow.store import bar_store as bar_store_module
from candleflow.store.bar_store import BarStore


def _bars(start: str, end: str) -> pd.DataFrame:
    index = pd.bdate_range(start, end, inclusive="left", tz="UTC", name="timestamp")
    price = pd.Series(range(len(index)), index=index, dtype="float64") + 100.0
    return pd.DataFrame(
        {"open": price, "high": price + 1, "low": price - 1, "close": price, "volume": 1000.0}
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _failing_atomic_write(code: int) -> Callable[..., None]:
    """``atomic_write`` whose temp file fills up: some bytes land, then the system says no."""

    def write(final: Path, body: Callable[[BinaryIO], object], **options: bool) -> None:
        def partial(fh: BinaryIO) -> None:
            fh.write(b"PAR1 half a partition")
            raise OSError(code, os.strerror(code), str(final))

        atomic.atomic_write(final, partial, **options)

    return write


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "free space"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "writable"),
    ],
)
def test_a_refused_write_names_the_store_and_the_fix_and_keeps_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    store = BarStore(tmp_path / "store")
    store.write("synthetic", "AAPL", "1d", _bars("2024-01-01", "2024-02-01"))
    before = _snapshot(store.root)
    monkeypatch.setattr(bar_store_module, "atomic_write", _failing_atomic_write(code))
    with pytest.raises(StoreWriteFailed) as caught:
        store.write("synthetic", "AAPL", "1d", _bars("2024-01-15", "2024-03-01"))
    error = caught.value
    message = str(error)
    assert isinstance(error, CandleflowError) and error.errno == code
    assert str(store.root) in message and fix in message and os.strerror(code) in message
    assert "\n" not in message and error.root == str(store.root)
    assert error.path.endswith(".parquet")
    assert _snapshot(store.root) == before  # no temp file left, no partition touched


def test_a_refused_rename_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BarStore(tmp_path / "store")
    store.write("synthetic", "AAPL", "1d", _bars("2024-01-01", "2024-02-01"))
    before = _snapshot(store.root)

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(StoreWriteFailed, match="read-only"):
        store.write("synthetic", "AAPL", "1d", _bars("2024-01-15", "2024-03-01"))
    monkeypatch.undo()
    assert _snapshot(store.root) == before
    assert len(store.read("synthetic", "AAPL", "1d")) == len(_bars("2024-01-01", "2024-02-01"))


def test_a_store_under_a_file_is_a_write_failure_naming_the_store(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    store = BarStore(tmp_path / "file" / "store")
    with pytest.raises(StoreWriteFailed) as caught:
        store.write("synthetic", "AAPL", "1d", _bars("2024-01-01", "2024-02-01"))
    assert str(store.root) in str(caught.value)


def test_metadata_updates_that_are_refused_fail_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BarStore(tmp_path / "store")
    store.write("synthetic", "AAPL", "1d", _bars("2024-01-01", "2024-02-01"))
    before = _snapshot(store.root)
    monkeypatch.setattr(bar_store_module, "atomic_write", _failing_atomic_write(errno.ENOSPC))
    with pytest.raises(StoreWriteFailed, match="free space"):
        store.update_meta("synthetic", "AAPL", "1d", note="x")
    assert _snapshot(store.root) == before


@pytest.mark.parametrize(
    ("code", "fix"), [(errno.ENOSPC, "free space"), (errno.EROFS, "read-only")]
)
def test_feature_writes_that_are_refused_name_the_store_and_keep_the_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    from candleflow.features import store as feature_store_module
    from candleflow.features.store import FeatureStore, update_features

    store = BarStore(tmp_path / "store")
    store.write("synthetic", "AAPL", "1d", _bars("2024-01-01", "2024-03-01"))
    features = FeatureStore(store)
    update_features(store, features, "synthetic", "AAPL", "1d")
    store.write("synthetic", "AAPL", "1d", _bars("2024-03-01", "2024-04-01"))
    before = _snapshot(store.root)
    monkeypatch.setattr(feature_store_module, "atomic_write", _failing_atomic_write(code))
    with pytest.raises(StoreWriteFailed) as caught:
        update_features(store, features, "synthetic", "AAPL", "1d")
    message = str(caught.value)
    assert str(store.root) in message and fix in message and "\n" not in message
    assert _snapshot(store.root) == before
