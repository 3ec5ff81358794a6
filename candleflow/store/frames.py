"""Bar frames: the canonical shape, and the OHLC checks every stored bar must pass.

A bar frame is indexed by a tz-aware UTC ``DatetimeIndex`` named ``timestamp`` (bar start, ns
resolution) with float64 columns open, high, low, close, volume. The store rejects frames that fail
the checks (:func:`check_ohlc`); the merge stage repairs fetched data by dropping such rows with a
warning (:func:`drop_invalid_bars`). Missing volume is allowed (FX and index bars have none).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from candleflow.errors import InvalidBars, InvalidRequest
from candleflow.models import BAR_COLUMNS, INDEX_NAME, PRICE_COLUMNS

logger = logging.getLogger(__name__)

_Mask = np.ndarray[Any, np.dtype[np.bool_]]


#: The store's schema of a bar table (Parquet partitions, journal records).
BAR_SCHEMA = pa.schema(
    [pa.field(INDEX_NAME, pa.timestamp("ns", tz="UTC"), nullable=False)]
    + [pa.field(c, pa.float64()) for c in BAR_COLUMNS]
)


def bars_table(frame: pd.DataFrame) -> pa.Table:
    """A canonical bar frame as an Arrow table in :data:`BAR_SCHEMA`."""
    arrays = [pa.array(frame.index, type=BAR_SCHEMA.field(INDEX_NAME).type)]
    arrays += [pa.array(frame[c].to_numpy(dtype="float64"), type=pa.float64()) for c in BAR_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=BAR_SCHEMA)


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the canonical columns, dtypes and index."""
    index = pd.DatetimeIndex([], tz="UTC", name=INDEX_NAME).as_unit("ns")
    return pd.DataFrame({c: np.array([], dtype="float64") for c in BAR_COLUMNS}, index=index)


def normalize_bars(frame: pd.DataFrame, *, origin: str) -> pd.DataFrame:
    """Return ``frame`` as a canonical bar frame: UTC index named ``timestamp``, float64 columns.

    ``origin`` names where the frame came from, for error messages.
    """
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidRequest(
            f"{origin}: missing column(s) {', '.join(missing)}; bars need {', '.join(BAR_COLUMNS)}"
        )
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise InvalidRequest(f"{origin}: bars must be indexed by timestamps")
    index = frame.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    out = frame.loc[:, list(BAR_COLUMNS)].astype("float64")
    out.index = pd.DatetimeIndex(index, name=INDEX_NAME).as_unit("ns")
    return out


def bar_columns(bars: pd.DataFrame) -> tuple[np.ndarray[Any, np.dtype[np.float64]], ...]:
    """open, high, low, close and volume of ``bars`` as float64 arrays (one conversion when the
    frame is canonical: column lookups by name cost more than the checks on a few hundred rows)."""
    if tuple(bars.columns) == BAR_COLUMNS:
        values = bars.to_numpy(dtype="float64")
        return tuple(values[:, i] for i in range(len(BAR_COLUMNS)))
    return tuple(bars[col].to_numpy(dtype="float64") for col in BAR_COLUMNS)


def ohlc_checks(bars: pd.DataFrame) -> list[tuple[str, _Mask]]:
    """Each OHLC rule with the mask of rows breaking it."""
    o, h, lo, c, v = bar_columns(bars)
    checks: list[tuple[str, _Mask]] = []
    for name, values in zip(PRICE_COLUMNS, (o, h, lo, c), strict=True):
        checks.append((f"{name} is NaN", np.isnan(values)))
        checks.append((f"{name} is infinite", np.isinf(values)))
    # NaN comparisons are False, so rows with missing prices are reported only by the NaN checks.
    checks += [
        ("high < open", h < o),
        ("high < close", h < c),
        ("low > open", lo > o),
        ("low > close", lo > c),
        ("high < low", h < lo),
        ("volume < 0", v < 0),
        ("volume is infinite", np.isinf(v)),
    ]
    return checks


def invalid_rows(bars: pd.DataFrame) -> _Mask:
    """Mask of rows breaking any OHLC rule."""
    bad = np.zeros(len(bars), dtype=bool)
    for _, mask in ohlc_checks(bars):
        bad |= mask
    return bad


def format_ts(ts: pd.Timestamp) -> str:
    fmt = "%Y-%m-%d %H:%M" if ts.second == 0 and ts.microsecond == 0 else "%Y-%m-%d %H:%M:%S"
    return f"{ts.strftime(fmt)} UTC"


def check_ohlc(bars: pd.DataFrame, series: str) -> None:
    """Raise ``InvalidBars`` when any row has missing/infinite prices or inconsistent OHLC."""
    checks = ohlc_checks(bars)
    bad = np.zeros(len(bars), dtype=bool)
    for _, mask in checks:
        bad |= mask
    bad_rows = int(bad.sum())
    if not bad_rows:
        return
    first = int(np.argmax(bad))
    reasons = ", ".join(name for name, mask in checks if mask[first])
    total = len(bars)
    raise InvalidBars(
        f"{series}: {bad_rows:,} of {total:,} bars fail OHLC checks "
        f"(first: {format_ts(bars.index[first])} {reasons}); nothing was stored. "
        "Repair or drop those rows (e.g. bars.dropna()) and write again",
        bad_rows=bad_rows,
        total=total,
    )


def drop_invalid_bars(bars: pd.DataFrame) -> pd.DataFrame:
    """``bars`` without the rows breaking OHLC rules, with a warning naming how many."""
    if bars.empty:
        return bars
    bad = invalid_rows(bars)
    if not bad.any():
        return bars
    logger.warning("dropped %d of %d bars failing OHLC checks", int(bad.sum()), len(bars))
    return bars[~bad]


def write_parquet(table: pa.Table, where: Any) -> None:
    """Write a bar table as Parquet to ``where`` (a path or a binary file object).

    Prices and volumes are dictionary-encoded (prices on a tick grid repeat) but never the
    timestamps, which are unique: trying them costs a third of the write and grows the file.
    """
    pq.write_table(table, where, use_dictionary=[c for c in BAR_COLUMNS if c in table.column_names])
