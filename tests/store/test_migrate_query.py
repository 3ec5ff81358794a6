"""One table for query engines: migrating a store of the first layout in place (verified,
resumable), and SQL over the ``bars`` and ``features`` views on local and S3 roots."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from candleflow.errors import InvalidRequest, StoreWriteFailed
from candleflow.features.store import FeatureStore, update_features
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store import migrate as migrate_module
from candleflow.store.bar_store import BarStore
from candleflow.store.migrate import legacy_series, migrate_store
from candleflow.store.query import BAR_VIEW_COLUMNS, query, query_records

# (source, symbol, timeframe, start, end): yearly and monthly partitions, two sources, a symbol
# with "=" in it.
SERIES = [
    ("synthetic", "AAPL", "1h", "2023-10-01", "2024-03-01"),
    ("synthetic", "AAPL", "1d", "2022-06-01", "2024-03-01"),
    ("synthetic", "EURUSD=X", "5m", "2024-01-29", "2024-02-03"),
    ("files", "SPX", "1d", "2023-01-01", "2024-01-10"),
]


def _bars(symbol: str, tf: str, start: str, end: str) -> pd.DataFrame:
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    return SyntheticSource(seed=hash(symbol + tf) % 1000).bars(symbol, tf, lo, hi)


def _old_layout_store(root: Path) -> dict[tuple[str, str, str], pd.DataFrame]:
    """A store as the first layout wrote it: written with today's store, then moved back."""
    store = BarStore(root)
    frames = {}
    for source, symbol, tf, start, end in SERIES:
        frames[(source, symbol, tf)] = _bars(symbol, tf, start, end)
        store.write(source, symbol, tf, frames[(source, symbol, tf)], meta={"origin": "old"})
    update_features(store, FeatureStore(store), "synthetic", "AAPL", "1h", {"sma": [3]})
    for kind in ("bars", "features"):
        for new_dir in sorted((root / kind).glob("source=*/symbol=*/timeframe=*")):
            source, symbol, tf = (
                part.partition("=")[2].replace("%3D", "=")
                for part in new_dir.relative_to(root / kind).parts
            )
            old_dir = root / kind / source / symbol / tf
            for file in sorted(new_dir.rglob("*.parquet")):
                rel = file.relative_to(new_dir)
                target = old_dir / (rel.name if rel.name.startswith("year=") else rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                file.rename(target)
            if (new_dir / "_meta.json").exists():
                (new_dir / "_meta.json").rename(old_dir / "_meta.json")
        for leftover in sorted((root / kind).glob("source=*"), reverse=True):
            for path in sorted(leftover.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            leftover.rmdir()
    assert {s[:3] for s in SERIES} == {
        (src, sym, tf.name) for src, sym, tf, _ in legacy_series(root)
    }
    return frames


def _check_migrated(root: Path, frames: dict[tuple[str, str, str], pd.DataFrame]) -> None:
    store = BarStore(root)
    assert store.series() == sorted(frames)
    for key, frame in frames.items():
        pd.testing.assert_frame_equal(store.read(*key), frame, check_freq=False)
        assert store.read_meta(*key)["origin"] == "old"
        assert store.read_meta(*key)["rows"] == len(frame)
    assert not list(legacy_series(root)) and not list(legacy_series(root, "features"))
    assert sorted(p.name for p in (root / "bars").iterdir()) == ["source=files", "source=synthetic"]
    assert len(FeatureStore(store).read("synthetic", "AAPL", "1h")) == len(
        frames[("synthetic", "AAPL", "1h")]
    )


def test_migration_moves_every_series_in_place_and_engines_read_one_table(
    tmp_path: Path,
) -> None:
    frames = _old_layout_store(tmp_path)
    report = migrate_store(tmp_path)
    assert report.rows == sum(len(f) for f in frames.values())
    assert {(s.kind, s.source, s.symbol, s.timeframe) for s in report.series} == {
        ("bars", *k) for k in frames
    } | {("features", "synthetic", "AAPL", "1h")}
    _check_migrated(tmp_path, frames)
    assert migrate_store(tmp_path).series == ()  # nothing left to do

    per_symbol: dict[str, int] = {}
    for (_, symbol, _), frame in frames.items():
        per_symbol[symbol] = per_symbol.get(symbol, 0) + len(frame)
    got = query(tmp_path, "select symbol, count(*) as n from bars group by symbol order by 1")
    assert dict(zip(got["symbol"], got["n"], strict=True)) == per_symbol
    records = query_records(
        tmp_path, "select source, symbol, timeframe, count(*) as n from bars group by all"
    )
    assert sorted((r["source"], r["symbol"], r["timeframe"], r["n"]) for r in records) == sorted(
        (*k, len(f)) for k, f in frames.items()
    )
    assert list(query(tmp_path, "select * from bars limit 1").columns) == list(BAR_VIEW_COLUMNS)

    # The plain engines see the same table straight from the files.
    glob = str(tmp_path / "bars" / "**" / "*.parquet")
    raw = duckdb.sql(
        f"select source, symbol, timeframe, count(*) from read_parquet('{glob}', "
        "hive_partitioning=true) group by all"
    ).fetchall()
    assert sorted(raw) == sorted((*k, len(f)) for k, f in frames.items())
    scanned = (
        pl.scan_parquet(glob, hive_partitioning=True)
        .group_by("source", "symbol", "timeframe")
        .len()
        .collect()
    )
    assert sorted(scanned.iter_rows()) == sorted((*k, len(f)) for k, f in frames.items())


def test_an_interrupted_migration_resumes_and_verifies_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = _old_layout_store(tmp_path)
    real = migrate_module.atomic_write
    calls = {"n": 0}

    def disk_fills(final: Path, write: object) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(final, write)  # type: ignore[arg-type]

    monkeypatch.setattr(migrate_module, "atomic_write", disk_fills)
    with pytest.raises(StoreWriteFailed, match="No space left"):
        migrate_store(tmp_path)
    monkeypatch.setattr(migrate_module, "atomic_write", real)
    assert list(legacy_series(tmp_path))  # stopped midway: some series still in the old layout

    # Bars written in the new layout meanwhile (the store refuses that now, an older process
    # might not have) win over the old file's bars at those times.
    key = ("synthetic", "AAPL", "1h")
    store = BarStore(tmp_path)
    revised = frames[key].iloc[-3:].assign(volume=1.0)
    with monkeypatch.context() as patch:
        patch.setattr(BarStore, "_resolve_current", BarStore._resolve)
        store.write(*key, revised)
    frames[key] = pd.concat([frames[key].iloc[:-3], revised])

    report = migrate_store(tmp_path)
    assert report.series
    _check_migrated(tmp_path, frames)


def test_queries_on_s3_count_what_the_manifests_name(s3_store: BarStore) -> None:
    for source, symbol, tf, start, end in SERIES[:3]:
        frame = _bars(symbol, tf, start, end)
        s3_store.write(source, symbol, tf, frame)
        s3_store.write(source, symbol, tf, frame.iloc[-5:].assign(volume=2.0))  # a retired file
    update_features(s3_store, FeatureStore(s3_store), "synthetic", "AAPL", "1h", {"sma": [3]})
    got = query(s3_store, "select source, symbol, timeframe, count(*) as n from bars group by all")
    expected = {
        (src, sym, tf): len(s3_store.read(src, sym, tf)) for src, sym, tf in s3_store.series()
    }
    assert {(r.source, r.symbol, r.timeframe): r.n for r in got.itertuples()} == expected
    features = query(s3_store, "select count(*) as n, count(sma_3) as v from features")
    assert int(features["n"].iloc[0]) == expected[("synthetic", "AAPL", "1h")]
    last = query_records(s3_store, "select max(timestamp) as t from bars where symbol = 'AAPL'")
    assert (
        last[0]["t"] == s3_store.read_meta("synthetic", "AAPL", "1d")["last"]
        or last[0]["t"] == s3_store.read_meta("synthetic", "AAPL", "1h")["last"]
    )


def test_bad_sql_is_bad_input_and_an_empty_store_has_empty_views(tmp_path: Path) -> None:
    assert query(tmp_path, "select count(*) as n from bars")["n"].iloc[0] == 0
    assert list(query(tmp_path, "select * from features").columns) == [
        "source",
        "symbol",
        "timeframe",
        "timestamp",
    ]
    with pytest.raises(InvalidRequest, match="query rejected"):
        query(tmp_path, "select nope from bars")
    with pytest.raises(InvalidRequest, match="query rejected"):
        query(tmp_path, "selec 1")


def test_partition_files_hold_no_layout_key_columns(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    store.write("synthetic", "AAPL", "1h", _bars("AAPL", "1h", "2024-01-01", "2024-01-10"))
    (path,) = store.partitions("synthetic", "AAPL", "1h")
    names = pq.read_schema(path).names
    assert not {"source", "symbol", "timeframe", "year"} & set(names)
    assert json.loads((tmp_path / "bars/source=synthetic/symbol=AAPL/timeframe=1h/_meta.json")
                      .read_text())["rows"] > 0  # fmt: skip
    assert isinstance(pa.schema([]), pa.Schema)


def test_an_unmigrated_series_is_refused_naming_the_migration(tmp_path: Path) -> None:
    _old_layout_store(tmp_path)
    store = BarStore(tmp_path)
    for call in (
        lambda: store.read("synthetic", "AAPL", "1h"),
        lambda: store.read_meta("files", "SPX", "1d"),
        lambda: store.write(
            "synthetic", "AAPL", "1h", _bars("AAPL", "1h", "2024-03-01", "2024-03-05")
        ),
        lambda: store.update_meta("synthetic", "AAPL", "1h", x=1),
    ):
        with pytest.raises(InvalidRequest, match="candleflow store migrate --store"):
            call()
    assert store.read("synthetic", "MSFT", "1h").empty  # other series are fine
    migrate_store(tmp_path)
    assert len(store.read("synthetic", "AAPL", "1h")) > 0
