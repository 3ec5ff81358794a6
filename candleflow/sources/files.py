"""Import a user's bars from CSV or Parquet files: ``FileSource``, a finite source.

A ``FileSource`` reads one file (served for every symbol) or a directory of per-symbol files
(``AAPL.csv``, ``AAPL.parquet``, ``AAPL_1h.csv``…). Each file is read once per source (cached by
path and modification time; ``reads`` counts the parses) by the loader in
:mod:`candleflow.sources.file_formats`, which recognises the common vendor layouts, and its bars
are checked against the price rules of :mod:`candleflow.sources.file_prices` — rows breaking
them are dropped and counted, or with ``strict`` the file is refused. What was repaired is logged
as one warning line each. As a finite source it reports its first and its last bar
(``head_timestamp``, ``tail_timestamp``), so a load plans only within them, and it describes each
series for its metadata: the file, its layout, and the time zone its times were read in.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

import pandas as pd

from candleflow.errors import InvalidRequest, NoData, UnknownSymbol
from candleflow.loading.calendars import (
    DEFAULT_CALENDAR,
    Alignment,
    calendar_tz,
    detect_alignment,
    get_calendar,
)
from candleflow.models import Instrument, Segment, parse_symbol
from candleflow.sources.file_formats import CSV_SUFFIXES, PARQUET_SUFFIXES, LoadedBars, load_bars
from candleflow.sources.file_prices import check_prices
from candleflow.sources.options import parse_path, parse_time_zone
from candleflow.timeframes import TIMEFRAMES, Timeframe, parse_timeframe

logger = logging.getLogger(__name__)

__all__ = ["FileSource"]

_LISTED_FILES = 5
#: Bars the alignment of a file is judged on (years of intraday bars; detection is linear).
_ALIGNMENT_SAMPLE = 50_000
#: A file whose typical step between bars is this many bar lengths is read at the wrong size.
_SPACING_FACTOR = 4
_SPACING_MIN_BARS = 5


def _is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES


@dataclass(frozen=True, slots=True)
class _Cached:
    mtime_ns: int
    size: int
    path: Path
    bars: LoadedBars
    dropped: int = 0  # rows the price rules dropped


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

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        calendar_tz: str | None = None,
        strict: bool = False,
    ) -> None:
        self.path = parse_path(path)
        self._tz: tzinfo | None = parse_time_zone(calendar_tz)
        self.strict = strict
        self._lock = threading.Lock()
        self._api_calls = 0
        self._reads = 0
        self._cache: dict[tuple[str, bool, str], _Cached] = {}

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    @property
    def api_calls(self) -> int:
        """Calls of ``validate``, ``head_timestamp`` and ``fetch`` so far."""
        with self._lock:
            return self._api_calls

    @property
    def reads(self) -> int:
        """Files parsed so far (a file is parsed once, until it changes)."""
        with self._lock:
            return self._reads

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
        return pd.Timestamp(self._bars(instrument, timeframe).index[0])

    def tail_timestamp(self, instrument: Instrument, timeframe: Timeframe | str) -> pd.Timestamp:
        """The last bar of the instrument's file (the start of it)."""
        return pd.Timestamp(self._bars(instrument, timeframe).index[-1])

    def fetch(
        self, instrument: Instrument, timeframe: Timeframe | str, segment: Segment
    ) -> pd.DataFrame:
        """The file's bars starting in ``[segment.start, segment.end)`` (``NoData`` if none)."""
        self._count()
        frame = self._bars(instrument, timeframe)
        index = frame.index
        lo = int(index.searchsorted(segment.start, side="left"))
        hi = int(index.searchsorted(segment.end, side="left"))
        if hi <= lo:
            raise NoData(
                f"{self._describe(instrument.symbol, timeframe)} has no bars in "
                f"{segment.label()} (the file covers {frame.index[0]} … {frame.index[-1]})"
            )
        return frame.iloc[lo:hi].copy()

    def series_meta(self, instrument: Instrument, timeframe: Timeframe | str) -> dict[str, object]:
        """What the series' metadata records of its import: ``import_file``, ``import_format``
        (the vendor layout recognised), ``time_zone`` (the zone the file's times were read in;
        empty for daily dates) and ``time_zone_from`` (``file``, ``exchange``, ``tz`` or
        ``date``; see :class:`~candleflow.sources.file_formats.LoadedBars`)."""
        cached = self._load(instrument.symbol, timeframe, instrument.calendar)
        return {
            "import_file": str(cached.path),
            "import_format": cached.bars.layout,
            "time_zone": cached.bars.time_zone,
            "time_zone_from": cached.bars.time_zone_from,
        }

    def read(
        self, symbol: str, timeframe: Timeframe | str, calendar: str = DEFAULT_CALENDAR
    ) -> pd.DataFrame:
        """The whole file of ``symbol`` as a canonical bar frame: sorted, de-duplicated, and
        without the rows breaking the price rules (or ``InvalidRequest`` when ``strict``)."""
        return self._load(symbol, timeframe, calendar).bars.frame.copy()

    def detect_alignment(
        self, symbol: str, timeframe: Timeframe | str, calendar: str = DEFAULT_CALENDAR
    ) -> Alignment:
        """``clock`` or ``session``: which bar grid the symbol's file follows, judged on its
        first 50,000 bars (see :func:`candleflow.loading.calendars.detect_alignment`;
        ``InvalidRequest`` when unclear)."""
        frame = self._load(symbol, timeframe, calendar).bars.frame
        # A grid shows in any stretch of bars: judge a long file on its first ones.
        return detect_alignment(
            pd.DatetimeIndex(frame.index[:_ALIGNMENT_SAMPLE]), calendar, timeframe
        )

    def _bars(self, instrument: Instrument, timeframe: Timeframe | str) -> pd.DataFrame:
        """The cached bars of the instrument's file, not copied (``InvalidRequest`` if none)."""
        cached = self._load(instrument.symbol, timeframe, instrument.calendar)
        if cached.bars.frame.empty and cached.dropped:
            raise InvalidRequest(
                f"{cached.path}: all {cached.dropped:,} rows break the price rules (see the "
                "warning above); correct the file, e.g. check its column order and units"
            )
        if cached.bars.frame.empty:
            raise InvalidRequest(
                f"{cached.path} has no bars (a header line and no rows); add one row per bar "
                "below the header"
            )
        return cached.bars.frame

    def _load(self, symbol: str, timeframe: Timeframe | str, calendar: str) -> _Cached:
        """The file of ``symbol`` read and checked — once, until the file changes."""
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
        if cached is not None and (cached.mtime_ns, cached.size) == (
            stat.st_mtime_ns,
            stat.st_size,
        ):
            return cached
        logger.debug("reading %s for %s %s", path, normalized, tf)
        loaded = load_bars(
            path, daily=tf.is_daily, tz=tz, tz_from="exchange" if self._tz is None else "tz"
        )
        with self._lock:
            self._reads += 1
        for notice in loaded.notices:
            logger.warning("%s", notice)
        check = check_prices(loaded.frame, str(path), strict=self.strict)
        if check.dropped:
            logger.warning(
                "%s: dropped %s of %s rows breaking the price rules (%s)", path,
                f"{check.dropped:,}", f"{len(loaded.frame):,}", check.describe(),
            )  # fmt: skip
            kept = loaded.frame.loc[~check.bad]
            loaded = LoadedBars(
                kept, loaded.layout, loaded.time_zone, loaded.time_zone_from, loaded.notices
            )
        spacing = _spacing_notice(loaded.frame.index, tf)
        if spacing:
            logger.warning("%s: %s", path, spacing)
        cached = _Cached(stat.st_mtime_ns, stat.st_size, path, loaded, check.dropped)
        with self._lock:
            self._cache[key] = cached
        return cached

    def close(self) -> None:
        """Forget cached files; safe to call twice."""
        with self._lock:
            self._cache.clear()

    def _describe(self, symbol: str, timeframe: Timeframe | str) -> str:
        if self.path.is_file():
            return str(self.path)
        return f"{self.path} ({symbol} {timeframe})"


def _spacing_notice(index: pd.Index, timeframe: Timeframe) -> str:
    """A line when the file's bars are far coarser than ``timeframe`` (a monthly file read as
    daily bars, hourly as 1m): the load would report most bars missing. ``""`` otherwise."""
    if len(index) < _SPACING_MIN_BARS:
        return ""
    steps = pd.Series(pd.DatetimeIndex(index).asi8).diff().dropna()
    typical = pd.Timedelta(int(steps.median()), "ns")
    bar = pd.Timedelta(days=1) if timeframe.is_daily else timeframe.delta
    # Weekends (daily) and nights (intraday) make some steps long, never the median ones.
    if typical < _SPACING_FACTOR * bar:
        return ""
    fix = (
        "bars longer than a day are not stored: the days between them count as missing"
        if timeframe.is_daily
        else "load it with the file's own bar size"
    )
    return (
        f"its bars are typically {_duration(typical)} apart, much more than {timeframe} bars; "
        f"most {timeframe} bars will show as missing ({fix})"
    )


def _duration(delta: pd.Timedelta) -> str:
    for unit, length in (("day", pd.Timedelta(days=1)), ("hour", pd.Timedelta(hours=1))):
        if delta >= length:
            count = round(delta / length)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    count = round(delta / pd.Timedelta(minutes=1))
    return f"{count} minute{'' if count == 1 else 's'}"
