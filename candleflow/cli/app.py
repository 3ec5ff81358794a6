"""The ``candleflow`` command line: typer + rich, ``main(argv=None)`` returning an exit code.

Exit codes: 0 ok, 1 failed, 2 bad input, 130 cancelled. Errors print as one line on stderr.
This is the one core module that reaches ``flows/`` — and only inside command functions, so that
importing the core never imports Prefect and ``candleflow --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import click
import typer
from rich.console import Console
from rich.table import Table

from candleflow.cli import backfill as cli_backfill
from candleflow.cli import ib as cli_ib
from candleflow.cli import optimize as cli_optimize
from candleflow.cli import query as cli_query
from candleflow.cli import server as cli_server
from candleflow.cli import show as cli_show
from candleflow.cli import store_cmd as cli_store
from candleflow.cli.common import (
    DEFAULT_STORE,
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    QuietOption,
    StoreOption,
    VerboseOption,
    check_store,
    connect_api,
    err,
    flagged,
    flow_exit_code,
    out,
    run_flow_in_process,
    show_prefect_logs,
    terminal_log_filter,
)
from candleflow.errors import Cancelled, CandleflowError, InvalidRequest, UnknownSymbol

app = typer.Typer(
    name="candleflow",
    help="Load, check, store and study historical market bars.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def demo(
    store: Annotated[
        Path | None, typer.Option(help="Store root (default: a fresh temporary directory).")
    ] = None,
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "AAPL,MSFT",
    timeframes: Annotated[str, typer.Option(help="Comma-separated timeframes.")] = "1d,1h",
    start: Annotated[str, typer.Option(help="First date (exchange time).")] = "2024-01-01",
    end: Annotated[str, typer.Option(help="Last date, inclusive.")] = "2024-12-31",
    source: Annotated[
        str, typer.Option(help="ib (through the IB Gateway simulator) or synthetic.")
    ] = "ib",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run the offline demo: load bars into a store, twice, and report what happened.

    With --source ib (the default) it starts the IB Gateway simulator on a free loopback port and
    loads through the real IB path (ib_async, TWS protocol, pacing), then stops it.
    """
    from candleflow.cli.demo import run_demo

    if source.strip().lower() == "ib":
        cli_ib.quiet_client_logs()
    if verbose:
        show_prefect_logs()
        import prefect  # noqa: F401  (its import sets its loggers' levels: set ours again)

        show_prefect_logs()
    root = store or Path(tempfile.mkdtemp(prefix="candleflow-demo-"))
    result = run_demo(
        root,
        source=source,
        symbols=[s for s in symbols.split(",") if s],
        timeframes=[t for t in timeframes.split(",") if t],
        start=start,
        end=end,
        progress=not quiet and sys.stderr.isatty(),
    )
    table = Table(title=f"candleflow demo · source {result.source} · store {root}")
    for col in ("run", "series", "rows added", "rows", "segments", "API calls", "missing", "s"):
        table.add_column(col, justify="right" if col not in ("run", "series") else "left")
    for run, s in result.loads:
        table.add_row(
            run, f"{s.symbol} {s.timeframe}", f"{s.rows_added:,}", f"{s.rows_after:,}",
            str(s.segments), str(s.api_calls), str(s.missing_bars_left), f"{s.duration_s:.2f}",
        )  # fmt: skip
    out().print(table)
    if result.gateway is not None:
        out().print(
            f"IB simulator {result.gateway}: {result.ib_requests} historical requests, "
            f"{result.pacing_violations} pacing violations",
            highlight=False,
            markup=False,
        )
    if "prefect" in sys.modules:  # the demo ran flows (not --direct)
        from prefect.settings import PREFECT_UI_URL

        ui = PREFECT_UI_URL.value()
        if ui:
            print(f"Prefect UI: {ui}/runs — the demo's flow runs, their progress and artifacts")


@app.command()
def calendars() -> None:
    """List the exchange calendar names accepted by --exchange."""
    from candleflow.loading.calendars import calendar_names

    out().print(" ".join(calendar_names()))


# ----------------------------------------------------------------------------- loading (Prefect)


@app.command()
def load(
    symbol: Annotated[str, typer.Argument(help="Ticker symbol, e.g. AAPL.")],
    timeframe: Annotated[str, typer.Option(help="Bar size: 1m … 1d (see the error for all).")] = (
        "1h"
    ),
    start: Annotated[str | None, typer.Option(help="First date/time (exchange time).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (inclusive) or date/time.")] = None,
    mode: Annotated[str, typer.Option(help="local, tail, backfill or full.")] = "tail",
    source: Annotated[str, typer.Option(help="synthetic, files or ib.")] = "synthetic",
    store: StoreOption = DEFAULT_STORE,
    path: Annotated[
        Path | None, typer.Option(help="CSV/Parquet file or folder (--source files).")
    ] = None,
    exchange: Annotated[
        str | None,
        typer.Option(
            help="Exchange calendar, e.g. XNYS (default: the instrument's own: XNYS for US "
            "stocks, FX for forex, GLOBEX for futures)."
        ),
    ] = None,
    align: Annotated[
        str,
        typer.Option(help="Intraday bar alignment: auto (detect a file's), clock or session."),
    ] = "auto",
    tz: Annotated[
        str | None,
        typer.Option(
            help="Time zone of naive times in --path files, e.g. Europe/London "
            "(default: the exchange's)."
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse a --path file with impossible prices (exit 2) instead of dropping them.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic source.")] = 0,
    delay: Annotated[float, typer.Option(help="Seconds per synthetic request (demos).")] = 0.0,
    ib_host: Annotated[str, typer.Option(help="IB gateway host (--source ib).")] = "127.0.0.1",
    ib_port: Annotated[
        int, typer.Option(help="IB gateway port: 4002/4001 Gateway, 7497/7496 TWS, or ib-sim.")
    ] = 4002,
    client_id: Annotated[int, typer.Option(help="IB API client id (--source ib).")] = 1,
    ib_time_scale: Annotated[
        float, typer.Option(help="IB pacing windows x this; match `ib-sim --time-scale`.")
    ] = 1.0,
    ib_exchange: Annotated[
        str | None,
        typer.Option(help="IB exchange of the contract where it is ambiguous, e.g. CME, NYMEX."),
    ] = None,
    currency: Annotated[
        str | None, typer.Option(help="Currency of the contract (--source ib), e.g. EUR.")
    ] = None,
    ib_lanes: Annotated[
        int,
        typer.Option(
            help="IB requests in flight at once, one connection each (1-4; extra client ids "
            "are --client-id + 1000, + 2000, ...)."
        ),
    ] = 1,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> int:
    """Load bars into the store through the load-data flow, with a progress bar.

    Ctrl+C stops cleanly at the next segment: what was fetched is saved (exit code 130).
    With --source files and no --start/--end, the file's own range is imported; a range outside
    it prints one line saying which range the file holds (exit 0, nothing written).
    """
    from candleflow.loading.pipeline import LoadRequest
    from candleflow.models import parse_symbol
    from candleflow.sources.registry import make_source, parse_source_options

    # Everything a user can get wrong is checked before Prefect starts (well under a second).
    parse_symbol(symbol)
    request = LoadRequest.parse(
        symbol, timeframe, start=start, end=end, mode=mode, calendar=exchange, align=align
    )
    options = parse_source_options(
        source, path=None if path is None else str(path), calendar_tz=tz, strict=strict,
        seed=seed, delay=delay, ib_host=ib_host, ib_port=ib_port, client_id=client_id,
        time_scale=ib_time_scale, ib_exchange=ib_exchange, currency=currency, lanes=ib_lanes,
    )  # fmt: skip
    if options.name == "ib":
        cli_ib.quiet_client_logs()
    # For --source ib this checks that the gateway listens (exit 1 at once when it does not).
    bar_source = make_source(options)
    try:
        # Unknown symbols, missing files, IB contracts.
        bar_source.validate(request.symbol, request.calendar)
    finally:
        bar_source.close()
    check_store(store)

    from flows.load_data import load_data, load_parameters

    state, handle = run_flow_in_process(
        load_data,
        dict(
            symbol=request.symbol, timeframe=timeframe, start=start, end=end, mode=mode,
            exchange=exchange, store=str(store), align=align, **load_parameters(options),
        ),
        quiet=quiet,
        verbose=verbose,
    )  # fmt: skip
    if handle.summary is not None and handle.summary.get("notice"):
        # A range outside what the source holds: one line says so, nothing was written.
        out().print(str(handle.summary["notice"]), highlight=False, markup=False, soft_wrap=True)
    elif handle.summary is not None:
        _print_load_summary(handle.summary, request.calendar)
    code = flow_exit_code(state, handle, reraise=(InvalidRequest, UnknownSymbol))
    if code is not None:
        return code
    summary = handle.summary or {}
    failed = summary.get("failed_segments") or []
    if isinstance(failed, list) and failed:
        err.print(f"warning: {len(failed)} segment(s) failed: " + "; ".join(map(str, failed)),
                  highlight=False, markup=False)  # fmt: skip
    return EXIT_OK


def _print_load_summary(summary: dict[str, object], exchange: str) -> None:
    # The range is the title's second line: as a column it squeezed the numbers at 80 columns.
    title = f"load {summary['symbol']} {summary['timeframe']} ({summary['mode']})"
    table = Table(title=f"{title}\n{exchange_range(summary['start'], summary['end'], exchange)}")
    for col in ("rows added", "rows", "segments", "API calls", "missing", "s"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{summary['rows_added']:,}", f"{summary['rows_after']:,}", str(summary["segments"]),
        str(summary["api_calls"]), str(summary["missing_bars_left"]), str(summary["duration_s"]),
    )  # fmt: skip
    out().print(table)


def exchange_range(start: object, end: object, exchange: str) -> str:
    """A load's window in the exchange's time, to the minute, trimmed to its trading hours:
    "2024-01-02 09:30 → 2024-03-28 16:00 America/New_York" (the window itself is UTC and ends
    at midnight after the last day; a user thinks in sessions)."""
    import pandas as pd

    from candleflow.loading.calendars import get_calendar

    first, last = pd.Timestamp(str(start)), pd.Timestamp(str(end))
    first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
    last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
    cal = get_calendar(exchange, first)
    tz = cal.tz
    with contextlib.suppress(Exception):  # outside the calendar's range: the window as it is
        sessions = cal.sessions_in_range(
            first.tz_convert(tz).normalize().tz_localize(None),
            last.tz_convert(tz).normalize().tz_localize(None),
        )
        opens = cal.opens.reindex(sessions).dropna()
        closes = cal.closes.reindex(sessions).dropna()
        inside_open = opens[(opens >= first) & (opens < last)]
        inside_close = closes[(closes > first) & (closes <= last)]
        # An edge inside a session (a file starting at 15:40) is kept as it is.
        first_in = bool(((opens < first) & (closes > first)).any())
        last_in = bool(((opens < last) & (closes > last)).any())
        if len(inside_open) and len(inside_close):
            if not first_in:
                first = max(first, pd.Timestamp(inside_open.iloc[0]))
            if not last_in:
                last = min(last, pd.Timestamp(inside_close.iloc[-1]))
    fmt = "%Y-%m-%d %H:%M"
    return f"{first.tz_convert(tz):{fmt}} → {last.tz_convert(tz):{fmt}} {tz}"


def _progress_by_run(client: Any, run_ids: Sequence[UUID]) -> dict[UUID, tuple[float, str]]:
    """The latest progress artifact value and description of each flow run."""
    from candleflow.cli.runs import read_run_progress

    return read_run_progress(client, run_ids)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many runs to list (newest first).")] = 20,
    wide: Annotated[
        bool, typer.Option("--wide", help="Show run ids whole (default: a unique prefix).")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print a JSON list: id, name, state, progress, started, stage."
        ),
    ] = False,
) -> None:
    """List recent flow runs with their state and progress.

    Ids are shortened to a unique prefix, which `watch` and `cancel` accept as it is.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from candleflow.cli.runs import short_ids

    if limit < 1:
        raise InvalidRequest(f"--limit must be at least 1, got {limit}")
    connect_api(quiet=as_json)
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
        progress = _progress_by_run(client, [r.id for r in flow_runs])
    if as_json:
        listed = []
        for r in flow_runs:
            pct, description = progress.get(r.id, (None, ""))
            started = r.start_time or r.expected_start_time
            listed.append(
                {
                    "id": str(r.id),
                    "name": r.name,
                    "state": r.state_name,
                    "progress": None if pct is None else round(pct, 2),
                    "started": started.isoformat() if started else None,
                    "stage": description,
                }
            )
        print(json.dumps(listed))
        return
    ids = {r.id: str(r.id) for r in flow_runs} if wide else short_ids([r.id for r in flow_runs])
    table = Table(title="flow runs")
    for col in ("id", "name", "state", "progress", "started", "stage"):
        table.add_column(
            col, justify="right" if col == "progress" else "left", no_wrap=col in ("id", "started")
        )
    for r in flow_runs:
        pct, description = progress.get(r.id, (None, ""))
        started = r.start_time or r.expected_start_time
        table.add_row(
            ids[r.id], r.name, r.state_name or "-", "-" if pct is None else f"{pct:.2f}%",
            started.strftime("%Y-%m-%d %H:%M:%S") if started else "-", description,
        )  # fmt: skip
    console = out()
    if wide:  # as `kubectl -o wide`: wider than the terminal rather than squeezing the columns
        console = Console(width=max(console.width, 160))
    console.print(table)


#: A progress description's leading percent ("42.82% · …"), which ``watch`` shows in its own column.
_LEADING_PERCENT = re.compile(r"^\d+(?:\.\d+)?% · ")


@app.command()
def watch(
    run_id: Annotated[
        str, typer.Argument(help="Flow run id, or a unique start of it (see `candleflow runs`).")
    ],
    interval: Annotated[float, typer.Option(help="Seconds between polls (≤ 1).")] = 0.5,
) -> int:
    """Follow a flow run's progress artifact until the run ends; exit code = its outcome."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from rich.progress import BarColumn, Progress, TextColumn

    from candleflow.cli.runs import check_run_ref, resolve_run_id
    from candleflow.progress.display import FittedTextColumn

    check_run_ref(run_id)
    interval = min(max(interval, 0.05), 1.0)
    connect_api()
    with get_client(sync_client=True) as client:
        flow_run_id = resolve_run_id(client, run_id)
        try:
            flow_run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise InvalidRequest(f"no flow run {run_id}: see `candleflow runs`") from None
        bar = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(),
            TextColumn("{task.percentage:6.2f}%"),
            FittedTextColumn("{task.fields[detail]}"), console=err,
        )  # fmt: skip
        with bar:
            task = bar.add_task(flow_run.name, total=100.0, detail="")
            while True:
                pct, detail = _progress_by_run(client, [flow_run_id]).get(flow_run_id, (0.0, ""))
                # The description leads with the percent too (for the UI's card): shown once.
                detail = _LEADING_PERCENT.sub("", detail)
                bar.update(task, completed=pct, detail=detail)
                state = flow_run.state
                if state is not None and state.is_final():
                    break
                time.sleep(interval)
                flow_run = client.read_flow_run(flow_run_id)
    state_name = flow_run.state_name or "unknown"
    out().print(f"{flow_run.name}: {state_name}", highlight=False, markup=False)
    if state is not None and state.is_completed():
        return EXIT_OK
    return EXIT_CANCELLED if state is not None and state.is_cancelled() else EXIT_FAILED


@app.command()
def cancel(
    run_id: Annotated[
        str, typer.Argument(help="Flow run id, or a unique start of it (see `candleflow runs`).")
    ],
) -> int:
    """Ask a flow run to stop (state CANCELLING): it saves what it fetched and ends Cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelling

    from candleflow.cli.runs import check_run_ref, resolve_run_id

    check_run_ref(run_id)
    connect_api()
    with get_client(sync_client=True) as client:
        flow_run_id = resolve_run_id(client, run_id)
        try:
            flow_run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise InvalidRequest(f"no flow run {run_id}: see `candleflow runs`") from None
        if flow_run.state is not None and flow_run.state.type in (
            StateType.CANCELLING,
            StateType.CANCELLED,
        ):
            out().print(f"{flow_run.name} is already {flow_run.state_name}", markup=False)
            return EXIT_OK
        result: Any = client.set_flow_run_state(
            flow_run_id, Cancelling(message="cancelled with `candleflow cancel`")
        )
    if result.status != SetStateStatus.ACCEPT:
        reason = getattr(result.details, "reason", "") or flow_run.state_name
        err.print(f"error: cannot cancel {flow_run.name}: {reason}", markup=False)
        return EXIT_FAILED
    out().print(f"{flow_run.name}: cancelling", highlight=False, markup=False)
    return EXIT_OK


# Commands living in their own modules register themselves here (no Prefect import at load).
for _module in (cli_show, cli_ib, cli_optimize, cli_backfill, cli_server, cli_query, cli_store):
    _module.register(app)


def _usage_errors() -> tuple[type[Exception], ...]:
    # typer ≥0.29 parses options with its own vendored click: catch both families.
    found: list[type[Exception]] = [click.ClickException]
    with contextlib.suppress(ImportError):
        from typer._click.exceptions import ClickException

        found.append(ClickException)
    return tuple(found)


_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)
_USAGE_ERRORS = _usage_errors()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig, and never touching a host's handlers
        # Prefect's run loggers propagate here: without the level and the filter their lines
        # would break the progress bar (the run's logs reach the API and the UI in full;
        # --verbose lifts both, see common.show_prefect_logs).
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        handler.addFilter(terminal_log_filter)
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    # Prefect's own console handler; set before Prefect is imported (commands import it lazily).
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # The managed server runs with analytics off; the client agrees, so the first interactive
    # `import prefect` does not print a three-line telemetry notice above the progress bar.
    # An explicit DO_NOT_TRACK in the environment wins.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="candleflow", standalone_mode=False)
    except _EXITS as exc:
        return int(exc.exit_code)
    except _ABORTS:
        err.print("cancelled")
        return EXIT_CANCELLED
    except _USAGE_ERRORS as exc:
        exc.show()  # type: ignore[attr-defined]
        return EXIT_BAD_INPUT
    except InvalidRequest as exc:
        err.print(f"error: {flagged(exc)}", highlight=False, markup=False)
        return EXIT_BAD_INPUT
    except UnknownSymbol as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        err.print(f"cancelled: {exc}" if str(exc) else "cancelled", highlight=False, markup=False)
        return EXIT_CANCELLED
    except CandleflowError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return EXIT_FAILED
    return int(result) if isinstance(result, int) else EXIT_OK
