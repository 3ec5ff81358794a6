"""Import a user's bars from CSV or Parquet files: the loader and normaliser behind ``FileSource``.

A ``FileSource`` reads one file (served for every symbol) or a directory of per-symbol files
(``AAPL.csv``, ``AAPL.parquet``, ``AAPL_1h.csv``…) and turns what vendors write into a canonical
bar frame: column names are matched case-, space- and punctuation-insensitively (``Open``/``o``,
``Vol``/``volume``, ``Date Time``, ``<DATE>`` + ``<TIME>``); timestamps may be ISO text, a date
and a time column, epoch seconds/milliseconds/microseconds/nanoseconds, ``YYYYMMDD`` integers, or
a Parquet ``DatetimeIndex``. Naive intraday times are in the exchange's time zone; a daily row's
date is the session label (midnight UTC of that date). Repairs — missing volume (→ NaN),
duplicated timestamps (the last row wins), rows without any price (dropped) — are warned about;
anything the loader cannot read raises ``InvalidRequest`` naming the file and what to change.
OHLC consistency is left to the store's validation. Parsed files are cached per path and
modification time.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from candleflow.errors import InvalidRequest, NoData, UnknownSymbol
from candleflow.loading.calendars import (
    DEFAULT_CALENDAR,
    Alignment,
    calendar_tz,
    detect_alignment,
    get_calendar,
)
from candleflow.models import INDEX_NAME, PRICE_COLUMNS, Instrument, Segment, parse_symbol
from candleflow.sources.base import empty_bars, normalize_bars
from candleflow.sources.options import parse_path, parse_time_zone
from candleflow.timeframes import TIMEFRAMES, Timeframe, parse_timeframe

logger = logging.getLogger(__name__)

__all__ = ["FileSource"]

_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")
_LISTED_FILES = 5

# Normalised header (lower case, letters and digits only) → canonical column, in priority order.
_TIMESTAMP_NAMES = ("timestamp", "datetime", "ts", "opentime", "starttime", "bartime")
_DATE_NAMES = ("date", "day", "tradedate", "tradingday")
_TIME_NAMES = ("time",)
# Headers pandas invents for an unnamed first column (an index written by ``DataFrame.to_csv``).
_UNNAMED_NAMES = ("unnamed0", "index", "")
_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("open", "o", "openprice"),
    "high": ("high", "h", "highprice"),
    "low": ("low", "l", "lowprice"),
    "close": ("close", "c", "closeprice"),
    "volume": ("volume", "vol", "v"),
}
# Epoch magnitudes (|value| lower bound → unit), for integers/floats in a timestamp column.
_EPOCH_UNITS: tuple[tuple[float, Literal["ns", "us", "ms", "s"]], ...] = (
    (1e17, "ns"),
    (1e14, "us"),
    (1e11, "ms"),
    (1e8, "s"),
)
_YYYYMMDD = (1e7, 1e8)


def _header_key(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _CSV_SUFFIXES + _PARQUET_SUFFIXES


@dataclass(frozen=True, slots=True)
class _Cached:
    mtime_ns: int
    size: int
    frame: pd.DataFrame


class FileSource:
    """Bars read from a CSV/Parquet file, or from a directory of per-symbol files.

    In file mode every well-formed symbol is served from the one file. In directory mode the
    symbol's file is ``SYMBOL.csv``, ``SYMBOL.parquet`` or ``SYMBOL_<anything>.csv|parquet``
    (case-insensitive); when several match, ``SYMBOL_<timeframe>`` wins, then plain ``SYMBOL``,
    and files named for another timeframe (``SYMBOL_1h`` when asked for ``1d``) are not used.
    ``calendar_tz`` (an IANA zone such as ``America/New_York``) overrides the calendar's zone for
    naive intraday timestamps.
    """

    name = "files"

    def __init__(self, path: str | os.PathLike[str], *, calendar_tz: str | None = None) -> None:
        self.path = parse_path(path)
        self._tz: tzinfo | None = parse_time_zone(calendar_tz)
        self._lock = threading.Lock()
        self._api_calls = 0
        self._cache: dict[tuple[str, bool, str], _Cached] = {}

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    @property
    def api_calls(self) -> int:
        """Calls of ``validate``, ``head_timestamp`` and ``fetch`` so far."""
        with self._lock:
            return self._api_calls

    def _count(self) -> None:
        with self._lock:
            self._api_calls += 1

    # -- symbols and files ---------------------------------------------------------------

    def _tables(self) -> list[Path]:
        try:
            return sorted(p for p in self.path.iterdir() if _is_table(p))
        except OSError as exc:
            raise InvalidRequest(f"{self.path}: cannot list the directory ({exc})") from exc

    def _candidates(self, symbol: str) -> list[Path]:
        return [
            p
            for p in self._tables()
            if p.stem.upper() == symbol or p.stem.upper().startswith(symbol + "_")
        ]

    def _holdings(self) -> str:
        names = [p.name for p in self._tables()]
        if not names:
            return f"{self.path} holds no .csv or .parquet files"
        more = f" and {len(names) - _LISTED_FILES} more" if len(names) > _LISTED_FILES else ""
        return f"{self.path} holds {', '.join(names[:_LISTED_FILES])}{more}"

    def _file_for(self, symbol: str, timeframe: Timeframe) -> Path:
        if self.path.is_file():
            return self.path
        candidates = self._candidates(symbol)
        if not candidates:
            raise UnknownSymbol(symbol, self.name, self._holdings())
        plain = [p for p in candidates if p.stem.upper() == symbol]
        exact = [p for p in candidates if p.stem.upper() == f"{symbol}_{timeframe.name.upper()}"]
        other_tf = {f"{symbol}_{name.upper()}" for name in TIMEFRAMES if name != timeframe.name}
        usable = [p for p in candidates if p.stem.upper() not in other_tf]
        for group in (exact, plain, usable):
            if len(group) == 1:
                return group[0]
            if len(group) > 1:
                raise InvalidRequest(
                    f"{self.path}: {', '.join(p.name for p in group)} all match {symbol} "
                    f"{timeframe}; keep one, or name it {symbol}_{timeframe}.csv"
                )
        raise NoData(
            f"{self.path}: no {timeframe} file for {symbol} "
            f"(found {', '.join(p.name for p in candidates)}); add {symbol}_{timeframe}.csv"
        )

    # -- Source protocol -----------------------------------------------------------------

    def validate(self, symbol: str, calendar: str = DEFAULT_CALENDAR) -> Instrument:
        """Resolve ``symbol``; in directory mode its file must exist (else ``UnknownSymbol``)."""
        self._count()
        normalized = parse_symbol(symbol)
        get_calendar(calendar)
        if self.path.is_dir() and not self._candidates(normalized):
            raise UnknownSymbol(normalized, self.name, self._holdings())
        return Instrument(normalized, calendar=calendar.strip(), long_name=f"file {self.path}")

    def head_timestamp(self, instrument: Instrument, timeframe: Timeframe | str) -> pd.Timestamp:
        """The first bar of the instrument's file (``InvalidRequest`` when the file has no rows:
        a header line alone is a bad file, as an empty one is — not a range without data)."""
        self._count()
        frame = self.read(instrument.symbol, timeframe, instrument.calendar)
        if frame.empty:
            path = self._file_for(instrument.symbol, parse_timeframe(timeframe))
            raise InvalidRequest(
                f"{path} has no bars (a header line and no rows); add one row per bar below "
                "the header"
            )
        return pd.Timestamp(frame.index[0])

    def fetch(
        self, instrument: Instrument, timeframe: Timeframe | str, segment: Segment
    ) -> pd.DataFrame:
        """The file's bars starting in ``[segment.start, segment.end)`` (``NoData`` if none)."""
        self._count()
        frame = self.read(instrument.symbol, timeframe, instrument.calendar)
        index = frame.index
        lo = int(index.searchsorted(segment.start, side="left"))
        hi = int(index.searchsorted(segment.end, side="left"))
        if hi <= lo:
            span = f"{frame.index[0]} … {frame.index[-1]}" if len(frame) else "no bars"
            raise NoData(
                f"{self._describe(instrument.symbol, timeframe)} has no bars in "
                f"{segment.label()} (the file covers {span})"
            )
        return frame.iloc[lo:hi].copy()

    def read(
        self, symbol: str, timeframe: Timeframe | str, calendar: str = DEFAULT_CALENDAR
    ) -> pd.DataFrame:
        """The whole file of ``symbol`` as a canonical bar frame, sorted and de-duplicated."""
        normalized = parse_symbol(symbol)
        tf = parse_timeframe(timeframe)
        path = self._file_for(normalized, tf)
        tz = self._tz if self._tz is not None else calendar_tz(calendar)
        try:
            stat = path.stat()
        except OSError as exc:
            raise InvalidRequest(f"{path}: cannot read the file ({exc})") from exc
        key = (str(path.resolve()), tf.is_daily, str(tz))
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or (cached.mtime_ns, cached.size) != (stat.st_mtime_ns, stat.st_size):
            logger.debug("reading %s for %s %s", path, normalized, tf)
            repairs: list[str] = []
            frame = _load_bars(path, daily=tf.is_daily, tz=tz, repairs=repairs)
            for message in repairs:
                # Raised here so the warning points at the caller's code, not the loader's.
                warnings.warn(message, UserWarning, stacklevel=2)
            cached = _Cached(stat.st_mtime_ns, stat.st_size, frame)
            with self._lock:
                self._cache[key] = cached
        return cached.frame.copy()

    def detect_alignment(
        self, symbol: str, timeframe: Timeframe | str, calendar: str = DEFAULT_CALENDAR
    ) -> Alignment:
        """``clock`` or ``session``: which bar grid the symbol's file follows (see
        :func:`candleflow.loading.calendars.detect_alignment`; ``InvalidRequest`` when unclear)."""
        frame = self.read(symbol, timeframe, calendar)
        return detect_alignment(pd.DatetimeIndex(frame.index), calendar, timeframe)

    def close(self) -> None:
        """Forget cached files; safe to call twice."""
        with self._lock:
            self._cache.clear()

    def _describe(self, symbol: str, timeframe: Timeframe | str) -> str:
        if self.path.is_file():
            return str(self.path)
        return f"{self.path} ({symbol} {timeframe})"


# -- loading -----------------------------------------------------------------------------


def _load_bars(path: Path, *, daily: bool, tz: tzinfo, repairs: list[str]) -> pd.DataFrame:
    """Read ``path`` and normalise it into a canonical bar frame (see the module docstring).

    What had to be repaired is appended to ``repairs``, one message each, for the caller to warn.
    """
    raw, index = _read_table(path)
    origin = str(path)
    keys: dict[str, Any] = {}
    for column in raw.columns:
        keys.setdefault(_header_key(column), column)
    found = ", ".join(repr(str(c)) for c in raw.columns) or "none"

    prices = _price_columns(raw, keys, origin, found, repairs)
    drop = np.asarray(prices.loc[:, list(PRICE_COLUMNS)].isna().all(axis=1))
    if drop.any():
        repairs.append(f"{origin}: dropped {int(drop.sum())} row(s) without any price")
    keep = ~drop

    if index is not None:
        moments = _parse_moments(pd.Series(index), origin, "index")
    else:
        moments = _timestamp_column(raw, keys, origin, found)
    moments = pd.DatetimeIndex(moments[keep])
    prices = prices.loc[keep]
    if moments.hasnans:
        row = int(np.flatnonzero(np.asarray(moments.isna()))[0])
        raise InvalidRequest(
            f"{origin}: data row {int(np.flatnonzero(keep)[row]) + 1} has no timestamp; "
            "fill it in or delete the row"
        )
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
    prices = prices.sort_index(kind="stable")
    duplicated = prices.index.duplicated(keep="last")
    if duplicated.any():
        first = prices.index[duplicated][0]
        repairs.append(
            f"{origin}: {int(duplicated.sum())} duplicated timestamp(s) (first {first}); "
            "kept the last row of each"
        )
        prices = prices.loc[~duplicated]
    if prices.empty:
        return empty_bars()
    return normalize_bars(prices, origin=origin)


def _read_table(path: Path) -> tuple[pd.DataFrame, pd.DatetimeIndex | None]:
    """The raw table and, for Parquet written from an indexed frame, its ``DatetimeIndex``."""
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        try:
            frame = pd.read_parquet(path)
        except (ValueError, OSError, pa.ArrowException) as exc:
            raise InvalidRequest(
                f"{path}: not a readable Parquet file ({exc}); re-export it, e.g. with "
                "DataFrame.to_parquet"
            ) from exc
        if isinstance(frame.index, pd.DatetimeIndex):
            return frame, frame.index
        if not isinstance(frame.index, pd.RangeIndex):
            frame = frame.reset_index()
        return frame, None
    try:
        sep = "," if suffix in _COMPRESSED_SUFFIXES else _sniff_separator(path)
        frame = pd.read_csv(path, sep=sep, encoding="utf-8-sig", skipinitialspace=True)
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
    return frame, None


def _sniff_separator(path: Path) -> str:
    """The most frequent of , ; tab | in the header line (comma when none occurs)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


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
) -> pd.DatetimeIndex:
    """Parse the timestamps from the best timestamp column, or from a date + time pair."""
    for name in _TIMESTAMP_NAMES:
        if name in keys:
            return _parse_moments(raw[keys[name]], origin, str(keys[name]))
    date = next((keys[n] for n in _DATE_NAMES if n in keys), None)
    time = next((keys[n] for n in _TIME_NAMES if n in keys), None)
    if date is not None and time is not None:
        return _parse_date_time(raw[date], raw[time], origin, f"{date}' + '{time}")
    for single in (date, time):
        if single is not None:
            return _parse_moments(raw[single], origin, str(single))
    for name in _UNNAMED_NAMES:
        if name in keys:
            return _parse_moments(raw[keys[name]], origin, str(keys[name]))
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
    text = values.astype("string").str.strip()
    if bool(text.dropna().str.fullmatch(r"-?\d+(\.\d+)?").all()) and text.notna().any():
        return _parse_numbers(pd.to_numeric(text), origin, column)
    parsed = _parse_text(text, fmt=None)
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
