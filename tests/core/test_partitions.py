"""The shared layout: series directories, partition keys, paths, bounds, discovery and temp-file
cleanup."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from candleflow.store.partitions import (
    clean_temp_files,
    find_partitions,
    parse_partition_label,
    partition_bounds,
    partition_groups,
    partition_label,
    partition_relpath,
    series_relpath,
)
from candleflow.timeframes import parse_timeframe


def test_relpaths_are_year_or_month_files_in_year_dirs_of_hive_series_dirs() -> None:
    assert series_relpath("ib", "EURUSD=X", "1h") == PurePosixPath(
        "source=ib/symbol=EURUSD%3DX/timeframe=1h"
    )
    assert partition_label((2024, 0)) == "2024" and partition_label((2024, 3)) == "2024-03"
    assert parse_partition_label("2024-03") == (2024, 3) and parse_partition_label("2024") == (
        2024,
        0,
    )
    assert parse_partition_label("2024-13") is None and parse_partition_label("x") is None
    assert partition_relpath((2024, 0)) == Path("year=2024/year=2024.parquet")
    assert partition_relpath((2024, 3)) == Path("year=2024/month=03.parquet")


def test_bounds_are_half_open_calendar_ranges_in_utc() -> None:
    utc = "UTC"
    assert partition_bounds((2024, 0)) == (
        pd.Timestamp("2024-01-01", tz=utc),
        pd.Timestamp("2025-01-01", tz=utc),
    )
    assert partition_bounds((2024, 2)) == (
        pd.Timestamp("2024-02-01", tz=utc),
        pd.Timestamp("2024-03-01", tz=utc),
    )
    assert partition_bounds((2024, 12)) == (
        pd.Timestamp("2024-12-01", tz=utc),
        pd.Timestamp("2025-01-01", tz=utc),
    )


def test_groups_are_contiguous_row_slices_in_time_order() -> None:
    index = pd.DatetimeIndex(
        ["2023-12-31 23:59", "2024-01-01", "2024-01-31 23:59", "2024-02-01", "2025-06-01"],
        tz="UTC",
    )
    assert partition_groups(index, parse_timeframe("1h")) == {
        (2023, 0): slice(0, 1),
        (2024, 0): slice(1, 4),
        (2025, 0): slice(4, 5),
    }
    assert partition_groups(index, parse_timeframe("1m")) == {
        (2023, 12): slice(0, 1),
        (2024, 1): slice(1, 3),
        (2024, 2): slice(3, 4),
        (2025, 6): slice(4, 5),
    }
    assert partition_groups(index[:0], parse_timeframe("1m")) == {}


def test_discovery_sees_only_the_timeframes_layout_and_skips_temp_files(tmp_path: Path) -> None:
    assert find_partitions(tmp_path / "missing", parse_timeframe("1h")) == {}
    for name in [
        "year=2025/year=2025.parquet",
        "year=2024/year=2024.parquet",
        "year=2024/year=2023.parquet",
        "year=2024.parquet",
        ".year=2024.parquet.123.abcdef.tmp",
        "year=2024/month=02.parquet",
        "year=2024/month=13.parquet",
        "year=2024/.month=02.parquet.123.abcdef.tmp",
        "_meta.json",
        "notes.parquet",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_partitions(tmp_path, parse_timeframe("1h")) == {
        (2024, 0): tmp_path / "year=2024/year=2024.parquet",
        (2025, 0): tmp_path / "year=2025/year=2025.parquet",
    }
    assert list(find_partitions(tmp_path, parse_timeframe("1h"))) == [(2024, 0), (2025, 0)]
    assert find_partitions(tmp_path, parse_timeframe("5m")) == {
        (2024, 2): tmp_path / "year=2024/month=02.parquet",
    }

    removed = clean_temp_files(tmp_path)

    assert sorted(removed) == [
        tmp_path / ".year=2024.parquet.123.abcdef.tmp",
        tmp_path / "year=2024/.month=02.parquet.123.abcdef.tmp",
    ]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    assert (tmp_path / "year=2024/year=2024.parquet").is_file()
    assert clean_temp_files(tmp_path / "missing") == []
