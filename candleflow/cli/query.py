"""``candleflow query "SQL"``: SQL (DuckDB) over the whole store, for people or, with ``--json``,
as a list of objects for another tool.

The views are ``bars`` (source, symbol, timeframe, timestamp, open, high, low, close, volume) and
``features`` (source, symbol, timeframe, timestamp and the feature columns); timestamps are UTC.
E.g. ``candleflow query "select symbol, count(*) as n from bars group by symbol" --json``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from candleflow.cli.common import DEFAULT_STORE, existing_store, out, write_stdout

_SHOWN_ROWS = 50


def query(
    sql: Annotated[str, typer.Argument(help="SQL over the views bars and features.")],
    store: Annotated[str, typer.Option(help="Store root: a folder, or s3://bucket/prefix.")] = str(
        DEFAULT_STORE
    ),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the rows as a JSON list of objects.")
    ] = False,
) -> None:
    """Answer SQL over the store: views bars and features (DuckDB; times in UTC)."""
    from candleflow.store.query import query_records

    existing_store(store)
    records = query_records(store, sql)
    if as_json:
        write_stdout(json.dumps(records) + "\n")
        return
    if not records:
        out().print("(no rows)", highlight=False, soft_wrap=True)
        return
    table = Table(*records[0].keys(), show_edge=False, highlight=False)
    for record in records[:_SHOWN_ROWS]:
        table.add_row(*("" if v is None else str(v) for v in record.values()))
    out().print(table)
    if len(records) > _SHOWN_ROWS:
        out().print(
            f"… {len(records) - _SHOWN_ROWS:,} more rows (--json prints them all)",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command()(query)
