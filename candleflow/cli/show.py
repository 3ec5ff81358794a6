"""``candleflow show``: what the store holds for a series — range, rows, partitions, gaps left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from candleflow.cli.common import DEFAULT_STORE, out


def show(
    symbol: Annotated[str, typer.Argument(help="Ticker symbol, e.g. AAPL.")],
    timeframe: Annotated[str, typer.Option(help="Bar size, e.g. 1h or 1d.")] = "1h",
    source: Annotated[str, typer.Option(help="Source the bars came from.")] = "synthetic",
    store: Annotated[Path, typer.Option(help="Store root.")] = DEFAULT_STORE,
    exchange: Annotated[str, typer.Option(help="Exchange calendar for gap analysis.")] = "XNYS",
    align: Annotated[
        str | None,
        typer.Option(help="Bar alignment (clock|session); default: recorded or detected."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show what is stored for SYMBOL: range, rows, partitions, and the gaps left by class."""
    from candleflow.models import parse_symbol
    from candleflow.store.bar_store import BarStore
    from candleflow.store.inspect import describe_series, render_text

    report = describe_series(
        BarStore(store), source, parse_symbol(symbol), timeframe, calendar=exchange, align=align
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=None, sort_keys=True))
    else:
        out().print(render_text(report), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(show)
