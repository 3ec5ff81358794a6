"""The ``candleflow`` command line: typer + rich, ``main(argv=None)`` returning an exit code.

Exit codes: 0 ok, 1 failed, 2 bad input, 130 cancelled. Errors print as one line on stderr.
This is the one core module that reaches ``flows/`` — and only inside command functions, so that
importing the core never imports Prefect and ``candleflow --help`` stays instant.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from candleflow.errors import Cancelled, CandleflowError, InvalidRequest, UnknownSymbol

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
DEFAULT_STORE = Path("data")

app = typer.Typer(
    name="candleflow",
    help="Load, check, store and study historical market bars.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _out() -> Console:
    # Built per call so tests capturing stdout see the output.
    return Console()


@app.command()
def demo(
    store: Annotated[
        Path | None, typer.Option(help="Store root (default: a fresh temporary directory).")
    ] = None,
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "AAPL,MSFT",
    timeframes: Annotated[str, typer.Option(help="Comma-separated timeframes.")] = "1d,1h",
    start: Annotated[str, typer.Option(help="First date (exchange time).")] = "2024-01-01",
    end: Annotated[str, typer.Option(help="Last date, inclusive.")] = "2024-12-31",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run the offline demo: load synthetic bars into a store, twice, and report what happened."""
    from candleflow.demo import run_demo

    root = store or Path(tempfile.mkdtemp(prefix="candleflow-demo-"))
    summaries = run_demo(
        root,
        symbols=[s for s in symbols.split(",") if s],
        timeframes=[t for t in timeframes.split(",") if t],
        start=start,
        end=end,
        progress=not quiet and sys.stderr.isatty(),
    )
    table = Table(title=f"candleflow demo · store {root}")
    for col in ("run", "series", "rows added", "rows", "segments", "API calls", "missing", "s"):
        table.add_column(col, justify="right" if col not in ("run", "series") else "left")
    for run, s in summaries:
        table.add_row(
            run, f"{s.symbol} {s.timeframe}", f"{s.rows_added:,}", f"{s.rows_after:,}",
            str(s.segments), str(s.api_calls), str(s.missing_bars_left), f"{s.duration_s:.2f}",
        )  # fmt: skip
    _out().print(table)


@app.command()
def calendars() -> None:
    """List the exchange calendar names accepted by --exchange."""
    from candleflow.calendars import calendar_names

    _out().print(" ".join(calendar_names()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="candleflow", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        err.print("cancelled")
        return EXIT_CANCELLED
    except click.ClickException as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except (InvalidRequest, UnknownSymbol) as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        err.print(f"cancelled: {exc}" if str(exc) else "cancelled", highlight=False, markup=False)
        return EXIT_CANCELLED
    except CandleflowError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return EXIT_FAILED
    return int(result) if isinstance(result, int) else EXIT_OK
