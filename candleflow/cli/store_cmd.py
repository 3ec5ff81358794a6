"""``candleflow store migrate``: move a store of the first layout (``bars/SOURCE/SYMBOL/TF/``) to
the ``key=value`` one that query engines read as one table, in place.

Each file is copied, its rows checked, and only then the original removed, so an interrupted
migration is resumed by running the command again; on a migrated store it does nothing.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from candleflow.cli.common import DEFAULT_STORE, existing_store, out

store_app = typer.Typer(
    help="Maintain the bar store (layout migration).", no_args_is_help=True, add_completion=False
)


@store_app.command("migrate")
def migrate(
    store: Annotated[str, typer.Option(help="Store root: a folder, or s3://bucket/prefix.")] = str(
        DEFAULT_STORE
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print what was moved as JSON.")] = False,
) -> None:
    """Move the store to the key=value layout (source=/symbol=/timeframe=/year=) in place.

    Resumable: run it again after an interruption. Stop loads into the store while it runs.
    """
    from candleflow.store.migrate import migrate_store

    existing_store(store)
    report = migrate_store(store)
    if as_json:
        print(json.dumps(report.to_dict(), sort_keys=True))
        return
    bars = [s for s in report.series if s.kind == "bars"]
    features = [s for s in report.series if s.kind == "features"]
    if not report.series:
        out().print(
            f"{report.root}: already in the key=value layout", highlight=False, soft_wrap=True
        )
        return
    for s in report.series:
        out().print(
            f"{s.kind:<8} {s.source}/{s.symbol}/{s.timeframe}: {s.files} file(s), "
            f"{s.rows:,} rows verified",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    out().print(
        f"{report.root}: migrated {len(bars)} bar series ({report.rows:,} rows) and "
        f"{len(features)} feature series",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
