"""``candleflow show``: what the store holds for a series — range, rows, partitions, gaps left —
or, with ``--start``/``--end``/``--csv``, the stored bars themselves (for a person, or as CSV/JSON
for another tool).

Without ``--source`` the series is looked up in every source of the store: the one that holds it
is shown, and when several do, the choice is the user's (exit 2, naming them).
"""

from __future__ import annotations

import json
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from candleflow.cli.common import (
    DEFAULT_STORE,
    FALLBACK_SOURCE,
    SourceOption,
    StoreOption,
    err,
    existing_store,
    out,
    stored_source,
    write_stdout,
)
from candleflow.errors import InvalidRequest
from candleflow.store.bar_store import BarStore

#: Rows shown at each end of a window of bars in the terminal (all of them go to --csv/--json).
_EDGE_ROWS = 5


def show(
    symbol: Annotated[str, typer.Argument(help="Ticker symbol, e.g. AAPL.")],
    timeframe: Annotated[str, typer.Option(help="Bar size, e.g. 1h or 1d.")] = "1h",
    source: SourceOption = None,
    store: StoreOption = DEFAULT_STORE,
    exchange: Annotated[
        str | None,
        typer.Option(help="Exchange calendar for gap analysis; default: recorded, else XNYS."),
    ] = None,
    align: Annotated[
        str | None,
        typer.Option(help="Bar alignment (clock|session); default: recorded or detected."),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Show the bars from this date/time (exchange time).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Show the bars up to this date (inclusive) or date/time.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON: the report, or with --start/--end the bars."),
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print the bars (of --start/--end) as CSV.")
    ] = False,
) -> None:
    """Show what is stored for SYMBOL: range, rows, partitions, and the gaps left by class.

    With --start/--end: the stored bars of that window (first and last rows, and the count);
    with --csv or --json every one of them, in exchange time, ready for another tool.
    """
    from candleflow.models import parse_symbol
    from candleflow.timeframes import parse_timeframe

    if as_json and as_csv:
        raise InvalidRequest("--json and --csv both given: choose one output format")
    name, tf = parse_symbol(symbol), parse_timeframe(timeframe)
    existing_store(store)
    bar_store = BarStore(store)
    chosen = source if source is not None else _holder(bar_store, name, tf.name, store)
    meta = bar_store.read_meta(chosen, name, tf)
    calendar = exchange or _recorded_calendar(meta, name)
    if as_csv or start is not None or end is not None:
        _show_bars(bar_store, chosen, name, tf.name, calendar, start, end, as_json, as_csv)
        return
    from candleflow.store.inspect import describe_series, render_text

    report = describe_series(bar_store, chosen, name, tf, calendar=calendar, align=align)
    if as_json:
        print(json.dumps(report.to_dict(), indent=None, sort_keys=True))
    else:
        text = "\n".join([render_text(report), *_provenance(report.meta)])
        out().print(text, highlight=False, markup=False)


def _recorded_calendar(meta: dict[str, object], symbol: str) -> str:
    """The calendar the series was loaded on: as recorded, else its instrument class's."""
    from candleflow.instruments import default_calendar

    instrument = meta.get("instrument")
    recorded = meta.get("calendar") or (
        instrument.get("calendar") if isinstance(instrument, dict) else None
    )
    return str(recorded) if recorded else default_calendar(symbol)


def _provenance(meta: dict[str, object]) -> list[str]:
    """Where the bars came from: the qualified contract, the imported file, its time zone."""
    lines: list[str] = []
    instrument = meta.get("instrument")
    if isinstance(instrument, dict):
        words = [
            str(instrument.get(k))
            for k in ("sec_type", "exchange", "currency")
            if instrument.get(k)
        ]
        for key, label in (("expiry", "expiry"), ("multiplier", "multiplier"), ("con_id", "conId")):
            if instrument.get(key):
                words.append(f"{label} {instrument[key]}")
        name = instrument.get("long_name")
        lines.append(f"instrument  {' '.join(words)}" + (f" · {name}" if name else ""))
    if meta.get("import_file"):
        kind = meta.get("import_format") or "csv"
        lines.append(f"imported    {meta['import_file']} ({kind} layout)")
    zone, origin = meta.get("time_zone"), meta.get("time_zone_from")
    if zone:
        said = {"file": "as the file says", "exchange": "naive times read as exchange time",
                "tz": "naive times read as --tz"}.get(str(origin), str(origin or ""))  # fmt: skip
        lines.append(f"time zone   {zone}" + (f" ({said})" if said else ""))
    return lines


def _holder(bar_store: BarStore, symbol: str, timeframe: str, root: str) -> str:
    """The one source holding the series; several is the user's choice, none falls back (with a
    word on the timeframes the symbol is stored at, if any)."""
    source = stored_source(root, symbol, timeframe, None)
    if source == FALLBACK_SOURCE and not bar_store.partitions(source, symbol, timeframe):
        elsewhere = sorted(
            {f"{tf} ({src})" for src, sym, tf in bar_store.series() if sym == symbol}
        )
        if elsewhere:
            err.print(
                f"note: {symbol} is stored at other timeframes: {', '.join(elsewhere)}",
                highlight=False,
                markup=False,
            )
    return source


def _show_bars(
    bar_store: BarStore,
    source: str,
    symbol: str,
    timeframe: str,
    calendar: str,
    start: str | None,
    end: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    from candleflow.loading.calendars import calendar_tz, get_calendar
    from candleflow.store.window import bar_records, bars_csv, parse_window, read_window

    get_calendar(calendar)
    tz = calendar_tz(calendar)
    window = parse_window(start, end, timeframe, tz)
    bars = read_window(bar_store, source, symbol, timeframe, window)
    if as_csv:
        write_stdout(bars_csv(bars, timeframe, tz))
    elif as_json:
        write_stdout(json.dumps(bar_records(bars, timeframe, tz)) + "\n")
    else:
        out().print(_bars_table(bars, source, symbol, timeframe, tz))


def _bars_table(
    bars: pd.DataFrame, source: str, symbol: str, timeframe: str, tz: object
) -> Table | str:
    from candleflow.store.window import bar_records

    title = f"{source}/{symbol}/{timeframe}: {len(bars):,} bar{'s' if len(bars) != 1 else ''}"
    if not len(bars):
        return f"{title} in this window (nothing stored there)"
    table = Table(title=title, title_justify="left")
    from candleflow.timeframes import parse_timeframe

    daily = parse_timeframe(timeframe).is_daily
    table.add_column("session" if daily else f"time ({tz})", no_wrap=True)
    for column in ("open", "high", "low", "close", "volume"):
        table.add_column(column, justify="right")
    if len(bars) <= 2 * _EDGE_ROWS:
        shown = [bars]
    else:
        shown = [bars.iloc[:_EDGE_ROWS], bars.iloc[-_EDGE_ROWS:]]
    records = [bar_records(part, timeframe, tz) for part in shown]  # type: ignore[arg-type]
    places = _decimals([r[c] for part in records for r in part for c in ("open", "high", "low")])
    for i, part in enumerate(records):
        if i:
            table.add_row(f"… {len(bars) - 2 * _EDGE_ROWS:,} more …", "", "", "", "", "")
        for record in part:
            when, *prices, volume = record.values()
            cells = ["-" if p is None else f"{float(p):,.{places}f}" for p in prices]  # type: ignore[arg-type]
            table.add_row(str(when).replace("T", " "), *cells, _volume(volume))
    return table


def _decimals(prices: list[object]) -> int:
    """The fewest decimals (2 to 6) that write every shown price exactly: one width per column."""
    for places in range(2, 7):
        if all(p is None or round(float(p), places) == float(p) for p in prices):  # type: ignore[arg-type]
            return places
    return 6


def _volume(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{float(value):,.2f}"  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    app.command()(show)
