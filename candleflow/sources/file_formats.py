"""Vendor files to canonical bars: reading a CSV/Parquet table, recognising its columns and
timestamps, and turning them into a UTC bar frame (the loader behind ``FileSource``).

Column names are matched case-, space- and punctuation-insensitively (``Open``/``o``,
``Vol``/``volume``, ``Date Time``, ``<DATE>`` + ``<TIME>``); timestamps may be ISO text, a date
and a time column, epoch seconds/milliseconds/microseconds/nanoseconds, ``YYYYMMDD`` integers, or
a Parquet ``DatetimeIndex``. Naive intraday times are in the exchange's time zone (or the one the
user names); a daily row's date is the session label (midnight UTC of that date). What was
repaired is returned as notices for the caller to log; what cannot be read raises
``InvalidRequest`` naming the file and what to change.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from candleflow.errors import InvalidRequest
from candleflow.models import INDEX_NAME, PRICE_COLUMNS
from candleflow.store.frames import empty_bars, normalize_bars

__all__ = ["CSV_SUFFIXES", "PARQUET_SUFFIXES", "LoadedBars", "load_bars"]

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")

# Normalised header (lower case, letters and digits only) → canonical column, in priority order.
_TIMESTAMP_NAMES = (
    "timestamp", "datetime", "ts", "opentime", "starttime", "bartime", "gmttime", "utctime",
    "timegmt", "timeutc", "localtime", "windowstart", "tsevent", "t",
)  # fmt: skip
_DATE_NAMES = ("date", "day", "tradedate", "tradingday")
_TIME_NAMES = ("time",)
# Headers pandas invents for an unnamed first column (an index written by ``DataFrame.to_csv``).
_UNNAMED_NAMES = ("unnamed0", "index", "")
_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("open", "o", "openprice"),
    "high": ("high", "h", "highprice"),
    "low": ("low", "l", "lowprice"),
    "close": ("close", "c", "closeprice"),
    "volume": ("volume", "vol", "v", "tickvol", "tickvolume"),
}
# Epoch magnitudes (|value| lower bound → unit), for integers/floats in a timestamp column.
_EPOCH_UNITS: tuple[tuple[float, Literal["ns", "us", "ms", "s"]], ...] = (
    (1e17, "ns"),
    (1e14, "us"),
    (1e11, "ms"),
    (1e8, "s"),
)
_YYYYMMDD = (1e7, 1e8)
# Timestamp columns whose name says the times are UTC.
_UTC_NAMES = ("gmttime", "utctime", "timegmt", "timeutc")
_NUMBER = r"-?\d+(\.\d+)?"
# IB's text forms: "20240131 09:30:00 US/Eastern" (any IANA zone), "20240131-14:30:00" (UTC).
_IB_ZONED = r"(\d{8})\s+(\d{2}:\d{2}:\d{2})\s+([A-Za-z_]+/[A-Za-z_/+-]+|UTC|GMT)"
_IB_UTC = "%Y%m%d-%H:%M:%S"
_ISO_FORMATS: tuple[tuple[str, str], ...] = (
    (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "%Y-%m-%d %H:%M:%S"),
    (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "%Y-%m-%d %H:%M"),
    (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"),
)
_TEXT_FORMATS: tuple[tuple[str, str], ...] = (
    (r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}\.\d{3}", "%d.%m.%Y %H:%M:%S.%f"),
    (r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}", "%d.%m.%Y %H:%M:%S"),
    (r"\d{2}\.\d{2}\.\d{4}", "%d.%m.%Y"),
    (r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}\.\d{3} GMT[+-]\d{4}", "%d.%m.%Y %H:%M:%S.%f GMT%z"),
    (r"\d{8}-\d{2}:\d{2}:\d{2}", _IB_UTC),
    (r"\d{8}\s+\d{2}:\d{2}:\d{2}", "%Y%m%d %H:%M:%S"),
    (r"\d{4}\.\d{2}\.\d{2} \d{2}:\d{2}:\d{2}", "%Y.%m.%d %H:%M:%S"),
    (r"\d{4}\.\d{2}\.\d{2} \d{2}:\d{2}", "%Y.%m.%d %H:%M"),
    (r"\d{4}\.\d{2}\.\d{2}", "%Y.%m.%d"),
    (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "%Y-%m-%d %H:%M:%S"),
    (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"),
)
# A first line that is a bar, not a header (MetaTrader's history export), and the columns of
# such files by field count.
_HEADERLESS_DATE = re.compile(r"\d{4}[.\-/]\d{2}[.\-/]\d{2}( \d{2}:\d{2}(:\d{2})?)?")
_HEADERLESS_NAMES: dict[int, tuple[str, ...]] = {
    6: ("datetime", "open", "high", "low", "close", "volume"),
    7: ("date", "time", "open", "high", "low", "close", "volume"),
}
# Header marks of vendor layouts (normalised names), checked in order.
_LAYOUT_MARKS: tuple[tuple[str, frozenset[str]], ...] = (
    ("yahoo", frozenset({"adjclose", "price"})),
    ("stooq", frozenset({"ticker", "per"})),
    ("dukascopy", frozenset({"gmttime", "localtime"})),
    ("databento", frozenset({"tsevent", "rtype", "instrumentid"})),
    ("polygon", frozenset({"windowstart", "t", "vw", "transactions"})),
    ("alpaca", frozenset({"tradecount"})),
    ("ib", frozenset({"barcount", "average", "wap"})),
    ("pandas", frozenset({"unnamed0"})),
)


def _header_key(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass(frozen=True, slots=True)
class LoadedBars:
    """A file read into canonical bars (not yet checked against the price rules).

    ``layout`` names the vendor layout recognised (``yahoo``, ``stooq``, ``dukascopy``,
    ``metatrader``, ``polygon``, ``databento``, ``ib``, ``pandas``, ``parquet`` or ``csv``);
    ``time_zone`` is the zone the file's times were read in and ``time_zone_from`` why:
    ``file`` (offsets or epochs in the file, or a column named GMT/UTC), ``exchange`` (naive
    times on the exchange's clock), ``tz`` (naive times in the zone the user named) or ``date``
    (daily rows: the date is the session). ``notices`` say what was repaired, one line each.
    """

    frame: pd.DataFrame
    layout: str
    time_zone: str
    time_zone_from: str
    notices: tuple[str, ...] = field(default_factory=tuple)


def load_bars(
    path: Path, *, daily: bool, tz: tzinfo, tz_from: Literal["exchange", "tz"] = "exchange"
) -> LoadedBars:
    """Read ``path`` and normalise it into a canonical bar frame (see the module docstring).

    ``tz`` is the zone of naive intraday times (``tz_from`` says whose choice it is). Rows are
    sorted; of duplicated timestamps the last row wins; rows without a timestamp and without any
    price (a vendor's footer) are dropped. Prices are not judged here (see ``file_prices``).
    """
    raw, index, headerless = _read_table(path)
    origin = str(path)
    keys: dict[str, Any] = {}
    for column in raw.columns:
        keys.setdefault(_header_key(column), column)
    found = ", ".join(repr(str(c)) for c in raw.columns) or "none"
    layout = _layout(path, keys, headerless)
    notices: list[str] = []

    prices = _price_columns(raw, keys, origin, found, notices)
    if index is not None:
        moments, utc_named = _parse_moments(pd.Series(index), origin, "index"), False
    else:
        moments, utc_named = _timestamp_column(raw, keys, origin, found)
    moments = pd.DatetimeIndex(moments)
    if moments.hasnans:
        blank = np.asarray(moments.isna()) & np.asarray(
            prices.loc[:, list(PRICE_COLUMNS)].isna().all(axis=1)
        )
        if blank.any():
            notices.append(
                f"{origin}: dropped {int(blank.sum())} row(s) without a time or any price"
            )
            moments, prices = moments[~blank], prices.loc[~blank]
    if moments.hasnans:
        row = int(np.flatnonzero(np.asarray(moments.isna()))[0])
        raise InvalidRequest(
            f"{origin}: data row {prices.index[row] + 1} has no timestamp; "
            "fill it in or delete the row"
        )
    if utc_named and moments.tz is None:
        moments = moments.tz_localize("UTC")
    if daily:
        zone, zone_from = "", "date"
    elif moments.tz is not None:
        zone, zone_from = "UTC", "file"
    else:
        zone, zone_from = str(tz), tz_from
    prices.index = _to_utc_index(moments, daily=daily, tz=tz)
    if daily:
        # Distinct times on one date mean intraday bars: keeping one per day would be wrong data.
        clash = prices.index.duplicated(keep=False) & ~moments.duplicated(keep=False)
        if clash.any():
            row = int(np.flatnonzero(clash)[0])
            raise InvalidRequest(
                f"{origin}: several rows fall on {prices.index[row].date()} (e.g. {moments[row]}); "
                "the file holds intraday bars, so load it with an intraday timeframe such as 1h"
            )
    if not prices.index.is_monotonic_increasing:
        prices = prices.sort_index(kind="stable")
    duplicated = prices.index.duplicated(keep="last")
    if duplicated.any():
        first = prices.index[duplicated][0]
        notices.append(
            f"{origin}: {int(duplicated.sum())} duplicated timestamp(s) (first {first}); "
            "kept the last row of each"
        )
        prices = prices.loc[~duplicated]
    frame = empty_bars() if prices.empty else normalize_bars(prices, origin=origin)
    return LoadedBars(frame, layout, zone, zone_from, tuple(notices))


def _layout(path: Path, keys: dict[str, Any], headerless: bool) -> str:
    """The vendor layout the columns show (for the series metadata; parsing does not need it)."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return "parquet"
    if headerless or {"tickvol", "spread"} & keys.keys():
        return "metatrader"
    for layout, marks in _LAYOUT_MARKS:
        if marks & keys.keys():
            return layout
    return "csv"


def _read_table(path: Path) -> tuple[pd.DataFrame, pd.DatetimeIndex | None, bool]:
    """The raw table, for Parquet written from an indexed frame its ``DatetimeIndex``, and
    whether the CSV had no header line (MetaTrader's history export)."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        try:
            frame = pd.read_parquet(path)
        except (ValueError, OSError, pa.ArrowException) as exc:
            raise InvalidRequest(
                f"{path}: not a readable Parquet file ({exc}); re-export it, e.g. with "
                "DataFrame.to_parquet"
            ) from exc
        if isinstance(frame.index, pd.DatetimeIndex):
            return frame, frame.index, False
        if not isinstance(frame.index, pd.RangeIndex):
            frame = frame.reset_index()
        return frame, None, False
    try:
        layout = _CsvLayout() if suffix in _COMPRESSED_SUFFIXES else _sniff_header(path)
        frame = pd.read_csv(
            path, sep=layout.sep, encoding="utf-8-sig", skipinitialspace=True,
            header=None if layout.names else "infer", names=layout.names,
            skiprows=list(layout.skip) or None, engine="c",
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise InvalidRequest(f"{path}: no such file; check the path") from exc
    except pd.errors.EmptyDataError as exc:
        raise InvalidRequest(
            f"{path}: the file is empty; it needs a header line and one row per bar"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise InvalidRequest(
            f"{path}: not a readable CSV file ({exc}); save it as UTF-8 text with a header "
            "line and the same number of fields on every line"
        ) from exc
    if layout.first_column:
        frame = frame.rename(columns={frame.columns[0]: layout.first_column})
    return frame, None, layout.names is not None


@dataclass(frozen=True, slots=True)
class _CsvLayout:
    """How to read a CSV: its separator, the column names when it has no header line, rows to
    skip, and a name for the first column when its header cell names something else."""

    sep: str = ","
    names: list[str] | None = None
    skip: tuple[int, ...] = ()
    first_column: str = ""


def _sniff_header(path: Path) -> _CsvLayout:
    """The separator — the most frequent of , ; tab | in the first line (comma when none
    occurs) — and two vendor quirks: a first line that is a bar, not a header (MetaTrader's
    history export: ``2024.01.02,09:30,1.1,…``), and yfinance's three header lines
    (``Price,Close,…`` / ``Ticker,AAPL,…`` / ``Datetime,,,…``)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        lines = [handle.readline() for _ in range(3)]
    first = lines[0]
    counts = {sep: first.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    sep = best if counts[best] else ","
    fields = [f.strip() for f in first.split(sep)]
    cells = [[f.strip() for f in line.split(sep)] for line in lines[1:]]
    if fields[0].lower() == "price" and cells[0][:1] == ["Ticker"] and len(cells[1]) > 1:
        # yfinance ≥ 0.2.48 writes its column MultiIndex as three header lines.
        return _CsvLayout(sep, skip=(1, 2), first_column=cells[1][0] or "Date")
    if not _HEADERLESS_DATE.fullmatch(fields[0]):
        return _CsvLayout(sep)
    names = _HEADERLESS_NAMES.get(len(fields))
    if names is None:
        raise InvalidRequest(
            f"{path}: the first line is a bar, not a header, and its {len(fields)} fields "
            "match no known layout; add a header line such as date,open,high,low,close,volume"
        )
    return _CsvLayout(sep, list(names))


def _price_columns(
    raw: pd.DataFrame, keys: dict[str, Any], origin: str, found: str, repairs: list[str]
) -> pd.DataFrame:
    """open/high/low/close/volume as float columns (volume NaN, noted in ``repairs``, if absent)."""
    located = {
        column: next((keys[alias] for alias in aliases if alias in keys), None)
        for column, aliases in _COLUMN_ALIASES.items()
    }
    missing = [c for c in PRICE_COLUMNS if located[c] is None]
    if missing:
        raise InvalidRequest(
            f"{origin}: missing price column(s) {', '.join(missing)} (found {found}); "
            "name them open, high, low, close (or o, h, l, c)"
        )
    volume, ticks = located["volume"], keys.get("tickvol")
    # MetaTrader writes <VOL> (exchange volume, 0 for FX and CFDs) beside <TICKVOL>.
    if (
        volume is not None
        and ticks is not None
        and volume != ticks
        and not pd.to_numeric(raw[volume], errors="coerce").fillna(0).any()
    ):
        located["volume"] = ticks
    out = pd.DataFrame(index=raw.index)
    for column, source in located.items():
        if source is None:
            continue
        out[column] = _numbers(raw[source], origin, str(source))
    if located["volume"] is None:
        repairs.append(f"{origin}: no volume column (found {found}); volume is NaN")
        out["volume"] = np.nan
    return out


def _numbers(values: pd.Series, origin: str, column: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    numbers = pd.to_numeric(values, errors="coerce")
    bad = np.asarray(numbers.isna() & values.notna())
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidRequest(
            f"{origin}: column {column!r} holds non-numeric value {values.iloc[row]!r} "
            f"(data row {row + 1}); prices and volumes must be plain numbers like 101.25"
        )
    return numbers.astype("float64")


def _timestamp_column(
    raw: pd.DataFrame, keys: dict[str, Any], origin: str, found: str
) -> tuple[pd.DatetimeIndex, bool]:
    """Parse the timestamps from the best timestamp column, or from a date + time pair; and
    whether the column's name says its times are UTC (Dukascopy's ``Gmt time``)."""
    for name in _TIMESTAMP_NAMES:
        if name in keys:
            column = keys[name]
            return _parse_moments(raw[column], origin, str(column)), name in _UTC_NAMES
    date = next((keys[n] for n in _DATE_NAMES if n in keys), None)
    time = next((keys[n] for n in _TIME_NAMES if n in keys), None)
    if date is not None and time is not None:
        return _parse_date_time(raw[date], raw[time], origin, f"{date}' + '{time}"), False
    for single in (date, time):
        if single is not None:
            return _parse_moments(raw[single], origin, str(single)), False
    for name in _UNNAMED_NAMES:
        if name in keys:
            return _parse_moments(raw[keys[name]], origin, str(keys[name])), False
    raise InvalidRequest(
        f"{origin}: no timestamp column (found {found}); add a header named timestamp, "
        "datetime or date (or separate date and time columns) above the bar times"
    )


def _parse_date_time(
    dates: pd.Series, times: pd.Series, origin: str, column: str
) -> pd.DatetimeIndex:
    """Join a date column and a time-of-day column (``09:30[:00]`` or ``HHMM[SS]`` integers)."""
    if pd.api.types.is_numeric_dtype(times) and times.abs().max() >= _EPOCH_UNITS[-1][0]:
        # A "time" column holding epoch numbers is already a full timestamp.
        return _parse_moments(times, origin, str(times.name))
    if pd.api.types.is_datetime64_any_dtype(dates):
        date_text = pd.Series(pd.DatetimeIndex(dates).strftime("%Y-%m-%d"), index=dates.index)
    else:
        date_text = dates.astype("string").str.strip()
    if pd.api.types.is_numeric_dtype(times):
        clock = times.astype("Int64")
        # HHMMSS when any value needs six digits, else HHMM: 930 is 09:30, 93000 is 09:30:00.
        width = 6 if bool((clock > 2359).any()) else 4
        digits = clock.astype("string").str.zfill(width)
        seconds = digits.str[4:6] if width == 6 else "00"
        time_text = digits.str[0:2] + ":" + digits.str[2:4] + ":" + seconds
    else:
        time_text = times.astype("string").str.strip()
    return _parse_moments(date_text + " " + time_text, origin, column)


def _parse_moments(values: pd.Series, origin: str, column: str) -> pd.DatetimeIndex:
    """Timestamps from datetimes, epoch numbers, ``YYYYMMDD`` integers or text (naive or aware)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.DatetimeIndex(values)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return _parse_numbers(values, origin, column)
    fast = _iso_fast(values)
    if fast is not None:
        return fast
    text = values.astype("string").str.strip()
    present = text.dropna()
    if len(present) and _all_match(present, _NUMBER):
        return _parse_numbers(pd.to_numeric(text), origin, column)
    zoned = _ib_zoned(present)
    if zoned is not None:
        return zoned
    fmt, text = _known_format(present, text)
    parsed = _parse_text(text, fmt=fmt)
    if fmt == _IB_UTC and parsed.tz is None:
        parsed = parsed.tz_localize("UTC")  # IB's formatDate=2 form is UTC
    failed = parsed.isna() & np.asarray(text.notna() & (text != ""))
    if failed.any():
        # A file mixing formats ("2024-01-02" and "2024-01-02 09:30") defeats format inference.
        parsed = _parse_text(text, fmt="mixed")
        failed = parsed.isna() & np.asarray(text.notna() & (text != ""))
    if failed.any():
        row = int(np.flatnonzero(failed)[0])
        raise InvalidRequest(
            f"{origin}: cannot read {text.iloc[row]!r} in column {column!r} (data row {row + 1}) "
            "as a date/time; use ISO form like 2024-01-02 09:30:00 or epoch seconds"
        )
    return parsed


def _iso_fast(values: pd.Series) -> pd.DatetimeIndex | None:
    """Plain ISO text (``2024-01-02 09:30:00``, ``2024-01-02``) parsed in one pass, when every
    value is in the first value's form — the common case of a long file; else ``None`` (the
    general path strips, sniffs and reports bad values)."""
    given = np.asarray(values.notna())
    if not given.any():
        return None
    sample = str(values.iloc[int(given.argmax())])
    fmt = next((f for pattern, f in _ISO_FORMATS if re.fullmatch(pattern, sample)), None)
    if fmt is None:
        return None
    try:
        # Arrow-backed text (pandas' default) parses in Arrow's C strptime, without a copy.
        stamps = pc.strptime(pa.array(values.array), format=fmt, unit="s", error_is_null=True)
        parsed = pd.DatetimeIndex(stamps.to_numpy(zero_copy_only=False)).as_unit("ns")
    except (pa.ArrowException, TypeError, ValueError):
        parsed = pd.DatetimeIndex(pd.to_datetime(values, format=fmt, errors="coerce"))
    if bool(np.any(np.asarray(parsed.isna()) & given)):
        return None
    return parsed


def _ib_zoned(present: pd.Series) -> pd.DatetimeIndex | None:
    """IB's ``YYYYMMDD HH:MM:SS Zone/Name`` (the zone of each row honoured), else ``None``."""
    if not len(present) or not re.fullmatch(_IB_ZONED, str(present.iloc[0])):
        return None
    if not _all_match(present, _IB_ZONED):
        return None
    parts = present.str.extract(_IB_ZONED)
    moments = pd.to_datetime(parts[0] + " " + parts[1], format="%Y%m%d %H:%M:%S")
    out = pd.Series(pd.NaT, index=present.index, dtype="datetime64[ns, UTC]")
    for zone, rows in parts.groupby(2).groups.items():
        try:
            local = pd.DatetimeIndex(moments.loc[rows]).tz_localize(
                str(zone), ambiguous="NaT", nonexistent="shift_forward"
            )
        except (KeyError, ValueError):
            return None  # not a time zone name: let pandas try the text as it is
        out.loc[rows] = local.tz_convert("UTC")
    return pd.DatetimeIndex(out)


def _all_match(text: pd.Series, pattern: str) -> bool:
    """Every value of ``text`` matches ``pattern`` (a sample is tried first: files are long)."""
    return bool(text.head(64).str.fullmatch(pattern).all()) and bool(
        text.str.fullmatch(pattern).all()
    )


def _known_format(present: pd.Series, text: pd.Series) -> tuple[str | None, pd.Series]:
    """A vendor's date form pandas would misread or read slowly, as an explicit format (and the
    text rewritten where a suffix must go): Dukascopy's day-first ``31.01.2024 09:30:00.000``,
    IB's ``20240131 09:30:00 US/Eastern`` (the zone applied later) and ``20240131-14:30:00``
    (UTC). ``None`` leaves the format to pandas."""
    if not len(present):
        return None, text
    sample = str(present.iloc[0])
    for pattern, fmt in _TEXT_FORMATS:
        if re.fullmatch(pattern, sample) and _all_match(present, pattern):
            return fmt, text
    return None, text


def _parse_text(text: pd.Series, fmt: str | None) -> pd.DatetimeIndex:
    with warnings.catch_warnings():
        # pandas warns when it falls back to element-wise parsing; failures are reported below.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return pd.DatetimeIndex(pd.to_datetime(text, errors="coerce", format=fmt))
        except (ValueError, TypeError):
            # Mixed UTC offsets (across a DST change) only parse as UTC.
            return pd.DatetimeIndex(pd.to_datetime(text, errors="coerce", format=fmt, utc=True))


def _parse_numbers(values: pd.Series, origin: str, column: str) -> pd.DatetimeIndex:
    """Epoch s/ms/µs/ns (told apart by magnitude) or ``YYYYMMDD`` integers."""
    numbers = values.astype("float64")
    present = numbers.dropna()
    if present.empty:
        return pd.DatetimeIndex(pd.to_datetime(numbers, unit="s", utc=True))
    magnitude = float(present.abs().median())
    if _YYYYMMDD[0] <= magnitude < _YYYYMMDD[1]:
        text = numbers.astype("Int64").astype("string")
        parsed = pd.DatetimeIndex(pd.to_datetime(text, format="%Y%m%d", errors="coerce"))
        failed = parsed.isna() & np.asarray(numbers.notna())
        if not failed.any():
            return parsed
        row = int(np.flatnonzero(failed)[0])
    else:
        unit = next((u for bound, u in _EPOCH_UNITS if magnitude >= bound), None)
        if unit is not None:
            try:
                return pd.DatetimeIndex(pd.to_datetime(numbers, unit=unit, utc=True))
            except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
                pass
        row = int(np.flatnonzero(np.asarray(numbers.notna()))[0])
    raise InvalidRequest(
        f"{origin}: cannot read {values.iloc[row]!r} in column {column!r} (data row {row + 1}) "
        "as a date/time; numbers must be epoch seconds or milliseconds, or YYYYMMDD dates"
    )


def _to_utc_index(moments: pd.DatetimeIndex, *, daily: bool, tz: tzinfo) -> pd.DatetimeIndex:
    """UTC bar starts: intraday naive times are local to ``tz``; daily rows become session labels.

    A daily label is midnight UTC of the session date: the written date for naive values, the
    UTC date for values at midnight UTC (how most vendors stamp daily epochs), else the date on
    the exchange's clock.
    """
    if daily:
        if moments.tz is None:
            labels = moments.normalize()
        else:
            utc = moments.tz_convert("UTC")
            utc_dates = utc.normalize().tz_localize(None)
            local_dates = utc.tz_convert(tz).normalize().tz_localize(None)
            labels = pd.DatetimeIndex(np.where(utc == utc.normalize(), utc_dates, local_dates))
        return pd.DatetimeIndex(labels.tz_localize("UTC"), name=INDEX_NAME)
    if moments.tz is not None:
        return pd.DatetimeIndex(moments.tz_convert("UTC"), name=INDEX_NAME)
    try:
        local = moments.tz_localize(tz, ambiguous="infer", nonexistent="shift_forward")
    except ValueError:
        # A lone ambiguous hour (autumn DST change) cannot be inferred: take the first occurrence.
        flags = np.ones(len(moments), dtype=bool)
        local = moments.tz_localize(tz, ambiguous=flags, nonexistent="shift_forward")
    return pd.DatetimeIndex(local.tz_convert("UTC"), name=INDEX_NAME)
