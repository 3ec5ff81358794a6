"""SQL over the whole store with DuckDB: ``query(root, "select symbol, count(*) from bars group by
symbol")``.

Two views are defined: ``bars`` with exactly the columns source, symbol, timeframe, timestamp,
open, high, low, close, volume, and ``features`` with source, symbol, timeframe, timestamp and
every feature value column stored anywhere (NULL where a series lacks one; the internal
``_state_*``/``_bars_hash`` columns and the layout's ``year`` key are left out). Both read the
files the store says are current — on an object store, those its manifests name, so files of a
losing or dead writer and replaced files awaiting collection are never counted — as a pyarrow
dataset over the ``key=value`` layout (:mod:`candleflow.store.partitions`), which DuckDB scans
lazily, reading only the columns and row groups a query needs. Timestamps are UTC.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from candleflow.errors import InvalidRequest
from candleflow.models import BAR_COLUMNS, INDEX_NAME
from candleflow.store.bar_store import BarStore, StorePath
from candleflow.store.objects import ObjectPath

__all__ = ["BAR_VIEW_COLUMNS", "query", "query_records"]

#: The columns of the ``bars`` view, in order.
BAR_VIEW_COLUMNS = ("source", "symbol", "timeframe", INDEX_NAME, *BAR_COLUMNS)
_KEYS = pa.schema(
    [
        ("source", pa.string()),
        ("symbol", pa.string()),
        ("timeframe", pa.string()),
        ("year", pa.int32()),
    ]
)
_TS = pa.timestamp("ns", tz="UTC")


def _filesystem(store: BarStore) -> pafs.FileSystem:
    if not isinstance(store.root, ObjectPath):
        return pafs.LocalFileSystem()
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    }
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(
            endpoint_override=host.rstrip("/") or scheme, scheme=scheme if host else "https"
        )
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def _location(path: StorePath) -> str:
    return f"{path.bucket}/{path.key}" if isinstance(path, ObjectPath) else str(path)


def _files(store: BarStore, kind: str) -> list[str]:
    out: list[str] = []
    if kind == "bars":
        for source, symbol, tf in store.series():
            out += [_location(p) for p in store.partitions(source, symbol, tf)]
        return out
    from candleflow.features.store import FeatureStore

    features = FeatureStore(store)
    for source, symbol, tf in store.series():
        out += [_location(p) for p in features.partitions(source, symbol, tf)]
    return out


def _dataset(store: BarStore, kind: str) -> ds.Dataset | None:
    files = _files(store, kind)
    if not files:
        return None
    filesystem = _filesystem(store)
    partitioning = ds.partitioning(_KEYS, flavor="hive")
    factory = ds.FileSystemDatasetFactory(
        filesystem,
        files,
        ds.ParquetFileFormat(),
        ds.FileSystemFactoryOptions(
            partition_base_dir=_location(store.root / kind), partitioning=partitioning
        ),
    )
    # Feature files of different specs have different columns: unify them all (NULL where absent).
    schema = factory.inspect(
        promote_options="permissive", fragments=None if kind == "features" else 1
    )
    return factory.finish(schema)


def _empty(columns: Sequence[tuple[str, pa.DataType]]) -> pa.Table:
    return pa.table({name: pa.array([], type=t) for name, t in columns})


def connect(root: str | os.PathLike[str] | BarStore) -> Any:
    """A DuckDB connection with the ``bars`` and ``features`` views of the store at ``root``."""
    import duckdb

    store = root if isinstance(root, BarStore) else BarStore(root)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    key_columns = [("source", pa.string()), ("symbol", pa.string()), ("timeframe", pa.string())]
    bar_columns = [*key_columns, (INDEX_NAME, _TS), *((c, pa.float64()) for c in BAR_COLUMNS)]

    bars = _dataset(store, "bars")
    con.register("_candleflow_bars", bars if bars is not None else _empty(bar_columns))
    con.execute(
        "CREATE VIEW bars AS SELECT "
        + ", ".join(f'"{c}"' for c in BAR_VIEW_COLUMNS)
        + " FROM _candleflow_bars"
    )

    features = _dataset(store, "features")
    value_columns: list[str] = []
    if features is not None:
        value_columns = [
            name
            for name in features.schema.names
            if not name.startswith("_") and name not in (*_KEYS.names, INDEX_NAME)
        ]
        con.register("_candleflow_features", features)
    else:
        con.register("_candleflow_features", _empty([*key_columns, (INDEX_NAME, _TS)]))
    names = ["source", "symbol", "timeframe", INDEX_NAME, *value_columns]
    con.execute(
        "CREATE VIEW features AS SELECT "
        + ", ".join(f'"{c}"' for c in names)
        + " FROM _candleflow_features"
    )
    return con


def query(root: str | os.PathLike[str] | BarStore, sql: str) -> pd.DataFrame:
    """The result of ``sql`` over the store's ``bars`` and ``features`` views, as a DataFrame.

    SQL DuckDB rejects (a syntax error, an unknown column) is ``InvalidRequest`` naming the
    problem; the store is only read.
    """
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest("give a SQL query, e.g. 'select symbol, count(*) from bars group "
                             "by symbol'", "sql", sql)  # fmt: skip
    con = connect(root)
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement with no result (SET, CREATE VIEW …)
            return pd.DataFrame()
        # Through Arrow, so UTC timestamps stay tz-aware in the frame.
        to_arrow = getattr(relation, "to_arrow_table", None) or relation.arrow
        frame: pd.DataFrame = to_arrow().to_pandas()
        return frame
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidRequest(f"query rejected: {first}", "sql", sql) from exc
    finally:
        con.close()


def _plain(value: object) -> object:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    item = getattr(value, "item", None)
    return _plain(item()) if callable(item) else value


def query_records(root: str | os.PathLike[str] | BarStore, sql: str) -> list[dict[str, object]]:
    """:func:`query`'s rows as JSON-ready objects (ISO times, ``None`` for NULL/NaN)."""
    frame = query(root, sql)
    columns = [str(c) for c in frame.columns]
    return [
        {name: _plain(value) for name, value in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]
