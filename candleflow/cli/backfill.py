"""``candleflow backfill`` (a universe × timeframes, one progress row each plus a total) and
``candleflow features`` (one series' feature columns), both through their Prefect flows.

Input is checked before Prefect starts; Ctrl+C cancels cleanly (running loads keep what they
fetched, queued rows are marked cancelled; exit code 130).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from candleflow.cli.common import (
    DEFAULT_STORE,
    EXIT_FAILED,
    EXIT_OK,
    QuietOption,
    SourceOption,
    StoreOption,
    VerboseOption,
    check_store,
    connect_api,
    err,
    flow_exit_code,
    out,
    run_flow_in_process,
    show_prefect_logs,
    sigint_cancels,
    stored_source,
)
from candleflow.errors import CandleflowError
from candleflow.progress import ProgressEvent
from candleflow.progress.display import FittedTextColumn


class QueueDisplay:
    """Rich progress rows: one per symbol × timeframe (fed by queue rows) and a total row (fed
    by the backfill's own progress events)."""

    def __init__(self, series: list[tuple[str, str]]) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.percentage:6.2f}%"),
            TextColumn("{task.fields[status]:<11}", markup=False),
            FittedTextColumn("{task.fields[detail]}"),  # cut before the bars shrink
            console=err,
        )
        self.rows: dict[tuple[str, str], TaskID] = {
            (s, tf): self.progress.add_task(f"{s} {tf}", total=100.0, status="queued", detail="")
            for s, tf in series
        }
        self.total = self.progress.add_task("total", total=100.0, status="", detail="")

    def on_row(self, row: Any) -> None:
        task = self.rows.get(row.key)
        if task is not None:
            detail = row.reason if row.status == "failed" else row.detail
            self.progress.update(task, completed=row.progress, status=row.status, detail=detail)

    def on_event(self, event: ProgressEvent) -> None:
        self.progress.update(self.total, completed=event.percentage, detail=event.detail)


def backfill(
    universe: Annotated[
        str, typer.Argument(help="YAML/CSV universe file, or comma-separated symbols.")
    ],
    timeframes: Annotated[str, typer.Option(help="Comma-separated timeframes.")] = "1d,1h",
    parallel: Annotated[int, typer.Option(help="Series loaded at the same time.")] = 4,
    mode: Annotated[str, typer.Option(help="local, tail, backfill or full.")] = "tail",
    source: Annotated[str, typer.Option(help="Default source: synthetic, files or ib.")] = (
        "synthetic"
    ),
    store: StoreOption = DEFAULT_STORE,
    start: Annotated[str | None, typer.Option(help="First date (exchange time).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (inclusive).")] = None,
    features: Annotated[
        str, typer.Option(help="Feature spec: default, a YAML file, or none.")
    ] = "default",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> int:
    """Backfill every symbol of UNIVERSE × timeframes, then their features (see deployments/)."""
    from candleflow.errors import InvalidRequest
    from candleflow.features.catalogue import parse_feature_spec
    from candleflow.loading.universe import parse_universe
    from candleflow.models import LoadMode
    from candleflow.sources.options import parse_source_name
    from candleflow.timeframes import parse_timeframe

    entries = parse_universe(universe)
    tfs = [parse_timeframe(t).name for t in timeframes.split(",") if t.strip()]
    if not tfs:
        raise InvalidRequest("--timeframes is empty: give e.g. 1d,1h")
    LoadMode.parse(mode)
    if parallel < 1:
        raise InvalidRequest(f"--parallel must be at least 1, got {parallel}")
    parse_source_name(source)
    if features.strip().lower() not in ("none", ""):
        parse_feature_spec(_spec_argument(features))
    check_store(store)

    from flows.backfill import backfill as backfill_flow

    params: dict[str, Any] = dict(
        universe=universe, timeframes=tfs, mode=mode, max_parallel=parallel, features=features,
        source=source, store=str(store), start=start, end=end,
    )  # fmt: skip
    display = QueueDisplay([(e.symbol, tf) for e in entries for tf in tfs])
    state, handle = _run_backfill(backfill_flow, params, display, quiet=quiet, verbose=verbose)
    if handle.summary is not None:
        _print_summary(handle.summary)
    code = flow_exit_code(state, handle)
    if code is not None:
        return code
    if state.message:  # completed with warnings: some series failed
        err.print(f"warning: {state.message}", highlight=False, markup=False)
        return EXIT_FAILED
    return EXIT_OK


def _spec_argument(spec: str) -> object:
    path = Path(spec).expanduser()
    return path if spec.lower().endswith((".yaml", ".yml")) or path.is_file() else spec


def _run_backfill(
    flow_fn: Any, params: dict[str, Any], display: QueueDisplay, *, quiet: bool, verbose: bool
) -> tuple[Any, Any]:
    """Like ``run_flow_in_process``, with one display row per queue row."""
    if verbose:
        show_prefect_logs()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from candleflow.progress import CancelToken
    from tasks.progress import progress_context

    if verbose:  # Prefect set its loggers' levels on import
        show_prefect_logs()
    connect_api(quiet=quiet)
    token = CancelToken()
    with contextlib.ExitStack() as stack:
        if not quiet:
            stack.enter_context(display.progress)
        stack.enter_context(sigint_cancels(token))
        stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        handle = stack.enter_context(
            progress_context(
                extra_sinks=[] if quiet else [display.on_event],
                row_sinks=[] if quiet else [display.on_row],
                token=token,
            )
        )
        state = flow_fn(**params, return_state=True)
    return state, handle


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(
        title=f"backfill: {summary['done']} done, {summary['failed']} failed, "
        f"{summary['cancelled']} cancelled in {summary['wall_s']:.1f} s"
    )
    columns = ("symbol", "timeframe", "status", "rows", "API calls", "duration", "reason")
    for col in columns:
        table.add_column(
            col, justify="right" if col in ("rows", "API calls", "duration") else "left"
        )
    for row in summary["rows"]:
        table.add_row(*(str(row[c]) if c != "rows" else f"{row[c]:,}" for c in columns))
    out().print(table)


def features(
    symbol: Annotated[str, typer.Argument(help="Ticker symbol, e.g. AAPL.")],
    timeframe: Annotated[str, typer.Option(help="Bar size, e.g. 1d or 1h.")] = "1d",
    spec: Annotated[str, typer.Option(help="Feature spec: default or a YAML file.")] = "default",
    source: SourceOption = None,
    store: StoreOption = DEFAULT_STORE,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> int:
    """Compute SYMBOL's features beside its stored bars (only the rows that changed)."""
    from candleflow.features.catalogue import parse_feature_spec
    from candleflow.models import parse_symbol
    from candleflow.store.bar_store import validate_source_name
    from candleflow.timeframes import parse_timeframe

    sym, tf = parse_symbol(symbol), parse_timeframe(timeframe).name
    if source is not None:
        validate_source_name(source)
    spec_value = _spec_argument(spec)
    parse_feature_spec(spec_value)
    check_store(store)
    source = stored_source(store, sym, tf, source)

    from flows.features import features as features_flow

    state, handle = run_flow_in_process(
        features_flow,
        dict(symbol=sym, timeframe=tf, source=source, store=str(store), spec=str(spec_value)),
        quiet=quiet,
        verbose=verbose,
    )
    code = flow_exit_code(state, handle, reraise=(CandleflowError,))
    if code is not None:
        return code
    s = handle.summary or {}
    out().print(
        f"features {sym} {tf}: {s.get('mode')} ({s.get('reason')}), {s.get('feature_count')} "
        f"features, {s.get('rows_recomputed', 0):,} of {s.get('rows', 0):,} rows computed",
        highlight=False, markup=False,
    )  # fmt: skip
    return EXIT_OK


def register(app: typer.Typer) -> None:
    app.command()(backfill)
    app.command()(features)
