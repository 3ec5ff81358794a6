"""BarStore: layout, round trips, merge rules, validation, corruption, crash safety and locking."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import random
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candleflow.errors import InvalidBars, InvalidRequest, StoreBusy, StoreCorrupted
from candleflow.store.bar_store import (
    BarStore,
    WriteResult,
    validate_source_name,
    validate_symbol_name,
)

HELPER = Path(__file__).with_name("store_writer.py")


def _load_helper() -> ModuleType:
    # Loaded by path so the test does not depend on tests/core being on sys.path.
    spec = importlib.util.spec_from_file_location("store_writer", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


writer = _load_helper()
make_bars: Callable[[pd.DatetimeIndex, int], pd.DataFrame] = writer.make_bars


def hourly(start: str, periods: int, version: int = 1) -> pd.DataFrame:
    return make_bars(pd.date_range(start, periods=periods, freq="1h", tz="UTC"), version)


def weekday_hours(start: str, end: str, version: int = 1) -> pd.DataFrame:
    index = pd.date_range(start, end, freq="1h", tz="UTC", inclusive="left")
    return make_bars(index[index.day_of_week < 5], version)


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


# -- round trips, layout, merge ----------------------------------------------------------------


def test_round_trip_keeps_values_index_and_dtypes(store: BarStore) -> None:
    bars = hourly("2023-12-31 20:00", 10)
    result = store.write("ib", "AAPL", "1h", bars)
    got = store.read("ib", "AAPL", "1h")
    pd.testing.assert_frame_equal(got, bars, check_freq=False)
    assert str(got.index.dtype) == "datetime64[ns, UTC]"
    assert got.index.name == "timestamp"
    assert list(got.columns) == ["open", "high", "low", "close", "volume"]
    assert result == WriteResult(0, 10, 10, result.partitions)
    assert len(result.partitions) == 2


def test_non_utc_input_is_converted_and_naive_input_rejected(store: BarStore) -> None:
    bars = hourly("2024-01-02 14:00", 3)
    ny = bars.tz_convert("America/New_York")
    store.write("ib", "AAPL", "1h", ny)
    pd.testing.assert_frame_equal(store.read("ib", "AAPL", "1h"), bars, check_freq=False)
    with pytest.raises(InvalidRequest, match="tz-naive"):
        store.write("ib", "MSFT", "1h", bars.tz_localize(None))
    assert not store.series_dir("ib", "MSFT", "1h").exists()


def test_layout_year_partitions(store: BarStore) -> None:
    store.write("ib", "AAPL", "1h", hourly("2022-12-31 22:00", 4))
    base = store.root / "bars" / "source=ib" / "symbol=AAPL" / "timeframe=1h"
    assert store.series_dir("ib", "AAPL", "1h") == base
    assert store.partitions("ib", "AAPL", "1h") == [
        base / "year=2022" / "year=2022.parquet",
        base / "year=2023" / "year=2023.parquet",
    ]
    assert (base / "_meta.json").is_file()
    assert (base / ".lock").exists()


def test_layout_month_partitions_for_short_bars(store: BarStore) -> None:
    index = pd.date_range("2024-01-31 23:58", periods=4, freq="1min", tz="UTC")
    store.write("ib", "ES", "1m", make_bars(index, 1))
    store.write("ib", "ES", "5m", make_bars(pd.DatetimeIndex(["2023-12-31 23:55"], tz="UTC"), 1))
    store.write("ib", "ES", "15m", make_bars(pd.DatetimeIndex(["2023-12-31 23:45"], tz="UTC"), 1))
    bars_dir = store.root / "bars" / "source=ib" / "symbol=ES"
    assert store.partitions("ib", "ES", "1m") == [
        bars_dir / "timeframe=1m" / "year=2024" / "month=01.parquet",
        bars_dir / "timeframe=1m" / "year=2024" / "month=02.parquet",
    ]
    assert store.partitions("ib", "ES", "5m") == [
        bars_dir / "timeframe=5m" / "year=2023" / "month=12.parquet"
    ]
    assert store.partitions("ib", "ES", "15m") == [
        bars_dir / "timeframe=15m" / "year=2023" / "year=2023.parquet"
    ]
    assert store.series() == [("ib", "ES", "15m"), ("ib", "ES", "1m"), ("ib", "ES", "5m")]


def test_partition_files_are_plain_parquet(store: BarStore) -> None:
    bars = hourly("2024-05-01", 5)
    store.write("ib", "AAPL", "1h", bars)
    (path,) = store.partitions("ib", "AAPL", "1h")
    schema = pq.read_schema(path)
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert all(schema.field(c).type == pa.float64() for c in bars.columns)
    plain = pd.read_parquet(path)
    assert list(plain.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    np.testing.assert_array_equal(plain["close"].to_numpy(), bars["close"].to_numpy())
    # The whole series directory reads as one dataset: _meta.json and .lock are skipped.
    assert len(pd.read_parquet(store.series_dir("ib", "AAPL", "1h"))) == 5


def test_range_read_is_half_open_and_spans_partitions(store: BarStore) -> None:
    bars = hourly("2022-12-31 20:00", 10)  # 20:00 .. 05:00 next year
    store.write("ib", "AAPL", "1h", bars)
    start = pd.Timestamp("2022-12-31 22:00", tz="UTC")
    end = pd.Timestamp("2023-01-01 02:00", tz="UTC")
    got = store.read("ib", "AAPL", "1h", start, end)
    assert list(got.index) == list(pd.date_range(start, end, freq="1h", inclusive="left"))
    pd.testing.assert_frame_equal(
        got, bars.loc[start : end - pd.Timedelta("1ns")], check_freq=False
    )
    assert len(store.read("ib", "AAPL", "1h", start=start)) == 8
    assert len(store.read("ib", "AAPL", "1h", end=end)) == 6
    assert store.read("ib", "AAPL", "1h", end, end).empty
    with pytest.raises(InvalidRequest, match="tz-naive"):
        store.read("ib", "AAPL", "1h", pd.Timestamp("2023-01-01"))


def test_read_opens_only_partitions_in_range(store: BarStore) -> None:
    store.write("ib", "AAPL", "1h", hourly("2022-12-31 20:00", 10))
    _, y2023 = store.partitions("ib", "AAPL", "1h")
    y2023.write_bytes(b"not parquet at all")
    boundary = pd.Timestamp("2023-01-01", tz="UTC")
    assert len(store.read("ib", "AAPL", "1h", end=boundary)) == 4  # end is exclusive
    with pytest.raises(StoreCorrupted):
        store.read("ib", "AAPL", "1h", start=boundary - pd.Timedelta(hours=1))


def test_read_of_unknown_series_is_empty_canonical_frame(store: BarStore) -> None:
    got = store.read("ib", "NOPE", "1d")
    assert got.empty
    assert list(got.columns) == ["open", "high", "low", "close", "volume"]
    assert isinstance(got.index, pd.DatetimeIndex) and str(got.index.tz) == "UTC"
    assert store.read_meta("ib", "NOPE", "1d") == {}
    assert store.partitions("ib", "NOPE", "1d") == []
    assert store.series() == []
    assert not store.root.exists()


def test_overlapping_write_new_bar_wins_and_counts(store: BarStore) -> None:
    first = hourly("2024-01-02 00:00", 10, version=1)  # 00:00 .. 09:00
    second = hourly("2024-01-02 05:00", 10, version=2)  # 05:00 .. 14:00, 5 overlap
    store.write("ib", "AAPL", "1h", first)
    result = store.write("ib", "AAPL", "1h", second)
    assert (result.rows_before, result.rows_after, result.rows_added) == (10, 15, 5)
    got = store.read("ib", "AAPL", "1h")
    expected = pd.concat([first.iloc[:5], second])
    pd.testing.assert_frame_equal(got, expected, check_freq=False)
    assert (got["volume"].iloc[5:] == 1002.0).all()  # overwritten bars come from version 2


def test_duplicates_inside_one_batch_keep_the_last_and_unsorted_input_is_sorted(
    store: BarStore,
) -> None:
    bars = hourly("2024-01-02", 4)
    later = bars.iloc[[1]].assign(close=bars["close"].iloc[1], volume=5.0)
    batch = pd.concat([bars.iloc[::-1], later])
    result = store.write("ib", "AAPL", "1h", batch)
    assert result.rows_added == 4
    got = store.read("ib", "AAPL", "1h")
    assert got.index.is_monotonic_increasing
    assert got["volume"].tolist() == [1001.0, 5.0, 1001.0, 1001.0]


def test_rows_added_over_several_writes(store: BarStore) -> None:
    a = store.write("ib", "AAPL", "1h", hourly("2024-01-02", 24))
    b = store.write("ib", "AAPL", "1h", hourly("2024-01-02", 24, version=3))
    c = store.write("ib", "AAPL", "1h", hourly("2025-06-01", 2))
    assert (a.rows_before, a.rows_added, a.rows_after) == (0, 24, 24)
    assert (b.rows_before, b.rows_added, b.rows_after) == (24, 0, 24)
    assert (c.rows_before, c.rows_added, c.rows_after) == (24, 2, 26)
    assert c.partitions == (
        str(store.series_dir("ib", "AAPL", "1h") / "year=2025" / "year=2025.parquet"),
    )


def test_empty_write_touches_nothing(store: BarStore) -> None:
    empty = hourly("2024-01-02", 0)
    assert store.write("ib", "AAPL", "1h", empty) == WriteResult(0, 0, 0, ())
    assert not store.root.exists()
    store.write("ib", "AAPL", "1h", hourly("2024-01-02", 3))
    before = {p: p.stat().st_mtime_ns for p in files_under(store.root) if p.is_file()}
    assert store.write("ib", "AAPL", "1h", empty) == WriteResult(3, 3, 0, ())
    assert {p: p.stat().st_mtime_ns for p in files_under(store.root) if p.is_file()} == before


# -- metadata ----------------------------------------------------------------------------------


def test_write_maintains_meta_and_merges_keys(store: BarStore) -> None:
    store.write("ib", "AAPL", "1h", hourly("2024-01-02", 3), meta={"api_calls": 2, "note": "x"})
    store.write("ib", "AAPL", "1h", hourly("2023-06-01", 2), meta={"api_calls": 5})
    meta = store.read_meta("ib", "AAPL", "1h")
    assert meta["api_calls"] == 5 and meta["note"] == "x"
    assert meta["rows"] == 5
    assert meta["first"] == "2023-06-01T00:00:00+00:00"
    assert meta["last"] == "2024-01-02T02:00:00+00:00"
    updated = pd.Timestamp(str(meta["updated_at"]))
    assert updated.tzinfo is not None
    assert abs(pd.Timestamp.now(tz="UTC") - updated) < pd.Timedelta(minutes=5)


def test_update_meta_merges_and_serialises(store: BarStore) -> None:
    head = pd.Timestamp("1980-12-12 14:30", tz="UTC")
    out = store.update_meta("ib", "AAPL", "1d", head=head, took=pd.Timedelta(seconds=1.5))
    assert out == {"head": "1980-12-12T14:30:00+00:00", "took": 1.5}
    out = store.update_meta("ib", "AAPL", "1d", gaps_left=[{"bars": 3}], calls=np.int64(4))
    assert out == {
        "head": "1980-12-12T14:30:00+00:00",
        "took": 1.5,
        "gaps_left": [{"bars": 3}],
        "calls": 4,
    }
    assert store.read_meta("ib", "AAPL", "1d") == out
    with pytest.raises(InvalidRequest, match="JSON"):
        store.update_meta("ib", "AAPL", "1d", bad=object())
    assert store.read_meta("ib", "AAPL", "1d") == out
    # The failed update left no temp file behind.
    assert {p.name for p in store.series_dir("ib", "AAPL", "1d").iterdir()} == {
        "_meta.json",
        ".lock",
    }


def test_corrupt_meta_raises_store_corrupted(store: BarStore) -> None:
    store.write("ib", "AAPL", "1h", hourly("2024-01-02", 3))
    meta = store.series_dir("ib", "AAPL", "1h") / "_meta.json"
    for garbage in ("{not json", "[1, 2]"):
        meta.write_text(garbage)
        with pytest.raises(StoreCorrupted) as info:
            store.read_meta("ib", "AAPL", "1h")
        assert info.value.path == str(meta)
        assert str(meta) in str(info.value)
        with pytest.raises(StoreCorrupted):
            store.write("ib", "AAPL", "1h", hourly("2024-01-03", 1))
    # The bars themselves are still readable.
    assert len(store.read("ib", "AAPL", "1h")) == 4


# -- OHLC validation ---------------------------------------------------------------------------


def test_bad_ohlc_rows_are_counted_and_nothing_is_written(store: BarStore) -> None:
    bars = hourly("2024-01-02", 1200)
    bad = bars.copy()
    t1, t2, t3 = bad.index[7], bad.index[100], bad.index[1000]
    bad.loc[t1, "open"] = bad.loc[t1, "low"]
    bad.loc[t1, "high"] = bad.loc[t1, "close"] - 1e-6  # high < close, every other rule holds
    bad.loc[t2, "close"] = np.nan
    bad.loc[t3, "volume"] = -1.0
    with pytest.raises(InvalidBars) as info:
        store.write("ib", "AAPL", "1h", bad)
    err = info.value
    assert (err.bad_rows, err.total) == (3, 1200)
    assert isinstance(err, InvalidRequest)
    assert "3 of 1,200 bars fail OHLC checks" in str(err)
    assert "first: 2024-01-02 07:00 UTC high < close" in str(err)
    assert "nothing was stored" in str(err)
    assert not store.root.exists()


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("open", np.nan, "open is NaN"),
        ("low", np.inf, "low is infinite"),
        ("low", 1e9, "low > open"),
        ("high", 0.0, "high < open"),
        ("volume", -5.0, "volume < 0"),
    ],
)
def test_each_ohlc_rule_is_enforced_and_previous_file_is_unchanged(
    store: BarStore, column: str, value: float, reason: str
) -> None:
    good = hourly("2024-01-02", 5)
    store.write("ib", "AAPL", "1h", good)
    (path,) = store.partitions("ib", "AAPL", "1h")
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
    bad = hourly("2024-01-02", 5, version=9)
    bad.loc[bad.index[2], column] = value
    with pytest.raises(InvalidBars, match=reason) as info:
        store.write("ib", "AAPL", "1h", bad)
    assert info.value.bad_rows == 1
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before
    pd.testing.assert_frame_equal(store.read("ib", "AAPL", "1h"), good, check_freq=False)


def test_missing_volume_is_allowed(store: BarStore) -> None:
    bars = hourly("2024-01-02", 3).assign(volume=np.nan)
    assert store.write("ib", "EURUSD", "1h", bars).rows_added == 3
    assert store.read("ib", "EURUSD", "1h")["volume"].isna().all()


# -- tail updates touch one partition ----------------------------------------------------------


def test_tail_update_of_one_day_rewrites_only_that_years_file(store: BarStore) -> None:
    history = weekday_hours("2021-01-01", "2023-12-28")  # ends Wed 2023-12-27 23:00
    store.write("ib", "AAPL", "1h", history)
    parts = store.partitions("ib", "AAPL", "1h")
    assert [p.name for p in parts] == [
        "year=2021.parquet",
        "year=2022.parquet",
        "year=2023.parquet",
    ]

    def stamp() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in parts}

    before = stamp()
    day = weekday_hours("2023-12-28", "2023-12-29", version=2)
    result = store.write("ib", "AAPL", "1h", day)
    after = stamp()
    assert result.partitions == (str(parts[2]),)
    assert result.rows_added == 24 and result.rows_after == len(history) + 24
    assert after["year=2021.parquet"] == before["year=2021.parquet"]
    assert after["year=2022.parquet"] == before["year=2022.parquet"]
    # A new inode proves the file was replaced even if the clock did not tick.
    assert after["year=2023.parquet"] != before["year=2023.parquet"]
    pd.testing.assert_frame_equal(
        store.read("ib", "AAPL", "1h"), pd.concat([history, day]), check_freq=False
    )


# -- corruption --------------------------------------------------------------------------------


def _assert_corrupted(store: BarStore, path: Path) -> None:
    with pytest.raises(StoreCorrupted) as info:
        store.read("ib", "AAPL", "1h")
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


def test_garbage_partition_raises_naming_the_file(store: BarStore) -> None:
    store.write("ib", "AAPL", "1h", hourly("2023-12-31 22:00", 4))
    y2022, _ = store.partitions("ib", "AAPL", "1h")
    y2022.write_bytes(b"\x00garbage" * 100)
    _assert_corrupted(store, y2022)
    # A write into the corrupt partition must not paper over it.
    with pytest.raises(StoreCorrupted):
        store.write("ib", "AAPL", "1h", hourly("2023-12-31 12:00", 1))
    assert y2022.read_bytes() == b"\x00garbage" * 100


def test_truncated_partition_raises_naming_the_file(store: BarStore) -> None:
    store.write("ib", "AAPL", "1h", hourly("2024-01-02", 50))
    (path,) = store.partitions("ib", "AAPL", "1h")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_corrupted(store, path)
    path.write_bytes(data[:-10])  # only the footer's tail missing
    _assert_corrupted(store, path)


def test_wrong_schema_and_misplaced_rows_raise(store: BarStore) -> None:
    store.write("ib", "AAPL", "1h", hourly("2024-01-02", 5))
    (path,) = store.partitions("ib", "AAPL", "1h")
    frame = pd.read_parquet(path)
    frame.drop(columns=["volume"]).to_parquet(path)
    _assert_corrupted(store, path)
    frame.assign(open="x").to_parquet(path)
    _assert_corrupted(store, path)
    frame.assign(timestamp=frame["timestamp"] - pd.Timedelta(days=400)).to_parquet(path)
    _assert_corrupted(store, path)


# -- symbol and source names -------------------------------------------------------------------

BAD_NAMES = ["../x", "a/b", "", "a\x00b", ".", "..", "/abs", "AAPL\n", "a\\b", "x" * 33]


def _every_entry_point(store: BarStore, source: str, symbol: str) -> list[Callable[[], object]]:
    bars = hourly("2024-01-02", 2)
    return [
        lambda: store.series_dir(source, symbol, "1h"),
        lambda: store.read(source, symbol, "1h"),
        lambda: store.write(source, symbol, "1h", bars),
        lambda: store.read_meta(source, symbol, "1h"),
        lambda: store.update_meta(source, symbol, "1h", x=1),
        lambda: store.partitions(source, symbol, "1h"),
        lambda: store.lock(source, symbol, "1h").__enter__(),
    ]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_symbols_and_sources_are_rejected_before_any_path_exists(
    tmp_path: Path, bad: str
) -> None:
    store = BarStore(tmp_path / "store")
    before = files_under(tmp_path)
    for source, symbol in (("ib", bad), (bad, "AAPL")):
        for call in _every_entry_point(store, source, symbol):
            with pytest.raises(InvalidRequest, match=re.escape(repr(bad))):
                call()
    # Nothing was created anywhere: not under the root, and not outside it via "..".
    assert files_under(tmp_path) == before


def test_good_names_pass_unchanged() -> None:
    for symbol in ("AAPL", "BRK.B", "^GSPC", "EURUSD=X", "ES-2024_Z", "a" * 32, "spy"):
        assert validate_symbol_name(symbol) == symbol
    for source in ("ib", "synthetic", "csv-files", "yahoo_2"):
        assert validate_source_name(source) == source
    for bad in ("IB", "-x", "a.b", "a b"):
        with pytest.raises(InvalidRequest, match="source"):
            validate_source_name(bad)


def test_root_accepts_file_uris_and_rejects_remote_ones(tmp_path: Path) -> None:
    a = BarStore(tmp_path / "s")
    b = BarStore((tmp_path / "s").as_uri())
    assert a.root == b.root == tmp_path / "s"
    a.write("ib", "AAPL", "1d", make_bars(pd.DatetimeIndex(["2024-01-02"], tz="UTC"), 1))
    assert len(b.read("ib", "AAPL", "1d")) == 1
    for uri in ("gs://b/x", "hdfs://b/x", "file://otherhost/x"):
        with pytest.raises(InvalidRequest, match="local"):
            BarStore(uri)
    with pytest.raises(InvalidRequest, match="bucket"):
        BarStore("s3://B/x")
    with pytest.raises(InvalidRequest, match="timeframe"):
        a.read("ib", "AAPL", "60m")


# -- a model check over many writes ------------------------------------------------------------

_DAYS = pd.date_range("2019-12-20", "2021-01-10", freq="1D", tz="UTC")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.tuples(st.integers(0, len(_DAYS) - 1), st.integers(1, 40), st.integers(1, 2**31 - 1)),
        min_size=1,
        max_size=5,
    )
)
def test_store_matches_a_dict_model(batches: list[tuple[int, int, int]]) -> None:
    model: dict[pd.Timestamp, tuple[float, ...]] = {}
    with tempfile.TemporaryDirectory() as root:
        store = BarStore(root)
        for offset, length, version in batches:
            bars = make_bars(_DAYS[offset : offset + length], version)
            new = sum(ts not in model for ts in bars.index)
            result = store.write("synthetic", "M", "1d", bars)
            rows = zip(bars.index, bars.to_numpy(), strict=True)
            model.update({ts: tuple(row) for ts, row in rows})
            assert result.rows_added == new
            assert result.rows_after == len(model)
        got = store.read("synthetic", "M", "1d")
        assert list(got.index) == sorted(model)
        assert [tuple(row) for row in got.to_numpy()] == [model[ts] for ts in sorted(model)]
        assert store.read_meta("synthetic", "M", "1d")["rows"] == len(model)
        years = {ts.year for ts in model}
        assert [p.name for p in store.partitions("synthetic", "M", "1d")] == [
            f"year={y}.parquet" for y in sorted(years)
        ]


# -- locking within a process ------------------------------------------------------------------


def test_lock_is_reentrant_within_a_thread_across_instances(store: BarStore) -> None:
    other = BarStore(store.root, lock_timeout=0.2)
    with store.lock("ib", "AAPL", "1h"):
        store.write("ib", "AAPL", "1h", hourly("2024-01-02", 2))
        other.write("ib", "AAPL", "1h", hourly("2024-01-03", 2))
        other.update_meta("ib", "AAPL", "1h", note="inside")
    assert len(store.read("ib", "AAPL", "1h")) == 4


def test_lock_excludes_other_threads(store: BarStore) -> None:
    other = BarStore(store.root, lock_timeout=0.2)
    errors: list[BaseException] = []

    def write_in_thread() -> None:
        try:
            other.write("ib", "AAPL", "1h", hourly("2024-01-02", 2))
        except BaseException as exc:
            errors.append(exc)

    with store.lock("ib", "AAPL", "1h"):
        thread = threading.Thread(target=write_in_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], StoreBusy)
    assert errors[0].path == str(store.series_dir("ib", "AAPL", "1h") / ".lock")
    assert store.partitions("ib", "AAPL", "1h") == []
    other.write("ib", "AAPL", "1h", hourly("2024-01-02", 2))  # free again afterwards
    assert len(store.read("ib", "AAPL", "1h")) == 2


# -- subprocesses: crash safety and cross-process locking --------------------------------------


class Helper:
    """A store_writer.py subprocess whose stdout lines arrive on a queue (no blocking reads)."""

    def __init__(self, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(root), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                assert self.proc.stderr is not None
                pytest.fail(f"helper exited before {prefix!r}:\n{self.proc.stderr.read()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> list[str]:
        """SIGKILL the helper; return every line it printed."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        self._drain()
        return self.seen

    def _drain(self) -> None:
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                self.seen.append(line)

    def finish(self, timeout: float = 60.0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=30)
        self._drain()
        return code

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def helpers() -> Iterator[list[Helper]]:
    started: list[Helper] = []
    yield started
    for helper in started:
        helper.close()


def _spawn(helpers: list[Helper], root: Path, *args: str) -> Helper:
    helper = Helper(root, *args)
    helpers.append(helper)
    return helper


def _crash_baseline(root: Path) -> tuple[BarStore, pd.DataFrame]:
    store = BarStore(root)
    baseline = make_bars(writer.crash_index(), 0)
    store.write(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF, baseline)
    return store, baseline


def _read_crash(store: BarStore) -> pd.DataFrame:
    return store.read(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)


@pytest.mark.slow
@pytest.mark.parametrize("hang", ["half", "replace"])
def test_writer_killed_mid_write_leaves_previous_data(
    tmp_path: Path, helpers: list[Helper], hang: str
) -> None:
    store, baseline = _crash_baseline(tmp_path)
    (partition,) = store.partitions(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)
    meta_before = store.read_meta(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)
    helper = _spawn(helpers, tmp_path, "once", "--version", "1", "--hang", hang)
    helper.expect("writing")
    helper.expect("half-written" if hang == "half" else "replacing")
    helper.kill()

    # The kill landed inside the write: a temp file is there, the partition is the old one.
    temps = [p for p in partition.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith(".")
    assert store.partitions(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF) == [partition]
    pd.testing.assert_frame_equal(_read_crash(store), baseline, check_freq=False)
    assert store.read_meta(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF) == meta_before

    # The next writer succeeds and sweeps the stale temp file.
    newer = make_bars(writer.crash_index(), 2)
    store.write(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF, newer)
    pd.testing.assert_frame_equal(_read_crash(store), newer, check_freq=False)
    assert not [p for p in partition.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_writer_killed_at_random_moments_leaves_a_complete_version(
    tmp_path: Path, helpers: list[Helper]
) -> None:
    store, _ = _crash_baseline(tmp_path)
    index = writer.crash_index()
    rng = random.Random(20240301)
    previous = 0
    for _ in range(4):
        helper = _spawn(helpers, tmp_path, "loop", "--version", str(previous))
        helper.expect("writing")
        # Not a synchronisation sleep: any instant is a valid kill point, the spread just
        # lands kills at different phases of the read-merge-write cycle.
        threading.Event().wait(rng.uniform(0.0, 0.4))
        lines = helper.kill()
        started = [int(x.split()[1]) for x in lines if x.startswith("writing")]
        finished = [int(x.split()[1]) for x in lines if x.startswith("wrote")]
        got = _read_crash(store)
        version = int(got["volume"].iloc[0]) - 1000
        # Exactly one whole version: the last one finished (or the one before this helper if
        # none finished) or the one in flight.
        pd.testing.assert_frame_equal(got, make_bars(index, version), check_freq=False)
        assert max(finished, default=previous) <= version <= max(started)
        previous = version
        store.read_meta(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)  # still valid JSON
        assert len(store.partitions(writer.SOURCE, writer.SYMBOL, writer.CRASH_TF)) == 1


@pytest.mark.slow
def test_two_processes_writing_one_partition_lose_nothing(
    tmp_path: Path, helpers: list[Helper]
) -> None:
    even = _spawn(helpers, tmp_path, "chunks", "--parity", "0", "--chunks", "15")
    odd = _spawn(helpers, tmp_path, "chunks", "--parity", "1", "--chunks", "15")
    even.expect("ready")
    odd.expect("ready")
    even.send("go")
    odd.send("go")
    assert even.finish() == 0, even.stderr()
    assert odd.finish() == 0, odd.stderr()
    store = BarStore(tmp_path)
    expected = make_bars(writer.hourly_index(), 7)
    got = store.read(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF)
    pd.testing.assert_frame_equal(got, expected, check_freq=False)
    assert store.partitions(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF) == [
        store.series_dir(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF)
        / "year=2024"
        / "year=2024.parquet"
    ]
    assert store.read_meta(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF)["rows"] == 1440


@pytest.mark.slow
def test_lock_held_by_this_process_makes_another_process_wait(
    tmp_path: Path, helpers: list[Helper]
) -> None:
    store = BarStore(tmp_path)
    with store.lock(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF):
        blocked = _spawn(helpers, tmp_path, "write", "--lock-timeout", "0.3")
        assert blocked.finish() == 3
        assert blocked.seen[-1].startswith("busy") and blocked.seen[-1].endswith(".lock")
        assert store.partitions(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF) == []
    free = _spawn(helpers, tmp_path, "write", "--lock-timeout", "30")
    assert free.finish() == 0, free.stderr()
    assert len(store.read(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF)) == 1440


@pytest.mark.slow
def test_lock_held_by_another_process_blocks_until_it_dies(
    tmp_path: Path, helpers: list[Helper]
) -> None:
    store = BarStore(tmp_path, lock_timeout=0.3)
    holder = _spawn(helpers, tmp_path, "hold")
    holder.expect("locked")
    bars = hourly("2024-01-02", 3)
    with pytest.raises(StoreBusy, match="locked by another writer"):
        store.write(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF, bars)
    with pytest.raises(StoreBusy):
        store.update_meta(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF, x=1)
    assert store.partitions(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF) == []
    holder.kill()  # the kernel drops a dead process's lock: nothing stale to clean up
    assert store.write(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF, bars).rows_added == 3
    meta_path = store.series_dir(writer.SOURCE, writer.SYMBOL, writer.HOURLY_TF) / "_meta.json"
    assert json.loads(meta_path.read_text())["rows"] == 3
    assert os.path.exists(meta_path.with_name(".lock"))
