"""``candleflow backtest`` and ``candleflow optimize``: one backtest on stored bars (the core,
no Prefect), and a parameter search through the optimize flow with one progress line
("Iteration 10/20 · Candle 7,300/10,000") and a results table.

Search spaces are written ``"fast=5:50,slow=10:200"`` (``low:high`` inclusive, ``low:high:step``
for integers, ``a|b|c`` for a list of choices); the core's
:func:`candleflow.optimize.space.parse_space` reads them.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from candleflow.cli.common import (
    DEFAULT_STORE,
    EXIT_OK,
    QuietOption,
    SourceOption,
    StoreOption,
    VerboseOption,
    check_store,
    flow_exit_code,
    out,
    run_flow_in_process,
    stored_source,
)
from candleflow.errors import InvalidRequest, NoData
from candleflow.progress.events import format_duration

if TYPE_CHECKING:
    from candleflow.progress import ProgressEvent

__all__ = ["register"]


# ----------------------------------------------------------------------------- backtest


def _json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def backtest(
    symbol: Annotated[str, typer.Argument(help="Ticker symbol, e.g. AAPL.")],
    timeframe: Annotated[str, typer.Option(help="Bar size, e.g. 1h or 1d.")] = "1h",
    strategy: Annotated[str, typer.Option(help="sma_cross, rsi_reversion, bollinger_breakout.")] = (
        "sma_cross"
    ),
    params: Annotated[str, typer.Option(help="Strategy parameters, e.g. fast=10,slow=20.")] = "",
    cash: Annotated[float, typer.Option(help="Starting cash.")] = 10_000.0,
    commission: Annotated[float, typer.Option(help="Commission per fill (fraction).")] = 0.0,
    slippage: Annotated[float, typer.Option(help="Slippage per fill (fraction).")] = 0.0,
    source: SourceOption = None,
    store: StoreOption = DEFAULT_STORE,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as one JSON object.")
    ] = (False),
) -> int:
    """Backtest one parameter set on the stored bars of SYMBOL (no Prefect needed)."""
    from candleflow.backtest import BacktestConfig, get_strategy, run_backtest
    from candleflow.models import parse_symbol
    from candleflow.store.bar_store import BarStore
    from candleflow.timeframes import parse_timeframe

    spec = get_strategy(strategy)
    resolved = spec.parse_params(params)
    config = BacktestConfig(cash=cash, commission=commission, slippage=slippage)
    tf = parse_timeframe(timeframe)
    check_store(store)
    name = parse_symbol(symbol)
    source = stored_source(store, name, tf.name, source)
    bars = BarStore(store).read(source, name, tf)
    if len(bars) < 2:
        raise NoData(
            f"the store {str(store)!r} has {len(bars)} {source} bars of {name} {tf.name}: "
            f"run `candleflow load {name} --timeframe {tf.name} --source {source} --store "
            f"{store}` first"
        )
    result = run_backtest(bars, spec, resolved, config=config, timeframe=tf)
    report: dict[str, object] = {
        "symbol": name,
        "timeframe": tf.name,
        "strategy": spec.name,
        "params": resolved,
        "start": bars.index[0].isoformat(),
        "end": bars.index[-1].isoformat(),
        **{k: _json_value(v) for k, v in result.metrics.to_dict().items()},
    }
    if as_json:
        print(json.dumps(report, sort_keys=False))
        return EXIT_OK
    table = Table(title=f"backtest {name} {tf.name} {spec.name} " + _params_text(resolved))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.to_dict().items():
        table.add_row(key, _format(value))
    out().print(table)
    return EXIT_OK


def _params_text(params: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _format(value: object, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


# ----------------------------------------------------------------------------- optimize


#: Terminal columns from which the line shows the run's name and a long bar.
_WIDE = 110


class OptimizeDisplay:
    """One line for an optimization, in the seed's shape: the bar, the percentage with two
    decimals, "Iteration 10/20 · Candle 7,300/10,000" (or what the search is doing between
    backtests: "choosing next points 3/16 (0:04)"), and the ETA.

    After a cancel the line keeps the percentage and position the cancel found (the run goes on
    to save the best result so far, which moves the tracker) and says so.
    """

    def __init__(self, console: Console) -> None:
        from candleflow.progress.display import FittedTextColumn

        # On a narrow terminal (80 columns) the position must still fit whole: a short label
        # and bar leave it the room ("optimize ━━━━━━━━━━  22.27% Iteration 10/20 · Candle …").
        self._narrow = console.width < _WIDE
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=10 if self._narrow else 24),
            TextColumn("{task.fields[pct]}", markup=False, justify="right", style="cyan"),
            FittedTextColumn("{task.fields[position]}"),
            TextColumn("{task.fields[eta]}", markup=False, style="magenta"),
            console=console,
        )
        self._lock = threading.Lock()
        self._task: TaskID | None = None
        self._frozen: tuple[float, str] | None = None

    def __enter__(self) -> OptimizeDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._task is None:
                label = "optimize" if self._narrow else event.operation
                self._task = self.progress.add_task(label, total=100.0, pct="", position="", eta="")
            task = self._task
            if event.cancelled and self._frozen is None:
                self._frozen = (event.percentage, _position(event))
            if self._frozen is not None:
                percentage, position = self._frozen
                position = f"{position} · cancelled, saving the best so far"
                eta = f"after {format_duration(event.elapsed)}"
            else:
                percentage, position = event.percentage, _position(event)
                if event.done:
                    eta = f"took {format_duration(event.elapsed)}"
                else:
                    eta = f"ETA {format_duration(event.eta)}" if event.eta is not None else ""
            self.progress.update(task, completed=percentage, pct=f"{percentage:6.2f}%",
                                 position=position, eta=eta)  # fmt: skip


def _position(event: ProgressEvent) -> str:
    from candleflow.progress.wording import STAGE_VERBS, optimize_position

    if event.done:
        done = [
            f"{event.counters[name]:,} {name if event.counters[name] != 1 else name[:-1]}"
            for name in ("iterations", "candles")
            if name in event.counters
        ]
        return " · ".join(["done", *done])
    if event.stage == "optimize":
        return optimize_position(event)
    if not event.stage:
        return "starting"
    verb = STAGE_VERBS.get(event.stage, event.stage.replace("_", " "))
    return f"{verb}: {event.detail}" if event.detail else verb


def optimize(
    symbol: Annotated[str, typer.Argument(help="Ticker symbol, e.g. AAPL.")],
    timeframe: Annotated[str, typer.Option(help="Bar size, e.g. 1h or 1d.")] = "1h",
    strategy: Annotated[str, typer.Option(help="sma_cross, rsi_reversion, bollinger_breakout.")] = (
        "sma_cross"
    ),
    method: Annotated[str, typer.Option(help="bayes, random or grid.")] = "bayes",
    iterations: Annotated[int, typer.Option(help="Parameter sets to evaluate.")] = 50,
    space: Annotated[
        str | None,
        typer.Option(help="Search space, e.g. fast=5:50,slow=10:200 (default per strategy)."),
    ] = None,
    objective: Annotated[str, typer.Option(help="sharpe, return, calmar, cagr, …")] = "sharpe",
    batch_size: Annotated[int, typer.Option(help="Parameter sets per task.")] = 8,
    concurrency: Annotated[int, typer.Option(help="Tasks evaluated at once.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the search.")] = 0,
    cash: Annotated[float, typer.Option(help="Starting cash.")] = 10_000.0,
    commission: Annotated[float, typer.Option(help="Commission per fill (fraction).")] = 0.0,
    slippage: Annotated[float, typer.Option(help="Slippage per fill (fraction).")] = 0.0,
    dask: Annotated[bool, typer.Option("--dask", help="Evaluate on a local Dask cluster.")] = False,
    dask_address: Annotated[
        str | None, typer.Option(help="Dask scheduler address (with --dask).")
    ] = None,
    source: SourceOption = None,
    store: StoreOption = DEFAULT_STORE,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> int:
    """Search strategy parameters on the stored bars of SYMBOL through the optimize flow.

    Ctrl+C stops at the next chunk of candles and reports the best result so far (exit 130).
    """
    # The backtest package imports numba (~0.5 s): only inside commands, so `--help` stays quick.
    from candleflow.backtest import BacktestConfig, get_strategy
    from candleflow.models import parse_symbol
    from candleflow.optimize.search import check_search
    from candleflow.optimize.space import parse_space
    from candleflow.store.bar_store import BarStore
    from candleflow.timeframes import parse_timeframe

    # Everything a user can get wrong is checked before Prefect starts.
    name = parse_symbol(symbol)
    tf = parse_timeframe(timeframe)
    spec = get_strategy(strategy)
    parse_space(space, spec)
    check_search(method, iterations, objective, batch_size=batch_size, concurrency=concurrency)
    BacktestConfig(cash=cash, commission=commission, slippage=slippage)
    if dask_address and not dask:
        raise InvalidRequest("--dask-address needs --dask")
    check_store(store)
    source = stored_source(store, name, tf.name, source)
    if len(BarStore(store).read(source, name, tf)) < 2:
        raise NoData(
            f"the store {str(store)!r} has no {source} bars of {name} {tf.name}: run "
            f"`candleflow load {name} --timeframe {tf.name} --source {source} --store {store}` "
            "first"
        )

    from flows.optimize import optimize as optimize_flow

    state, handle = run_flow_in_process(
        optimize_flow,
        dict(
            symbol=name, timeframe=tf.name, strategy=spec.name, space=space, method=method,
            iterations=iterations, objective=objective, source=source, store=str(store),
            batch_size=batch_size, concurrency=concurrency, seed=seed, cash=cash,
            commission=commission, slippage=slippage, dask=dask, dask_address=dask_address,
        ),
        quiet=quiet,
        verbose=verbose,
        display=OptimizeDisplay,
    )  # fmt: skip
    if handle.summary is not None:
        _print_results(handle.summary)
    code = flow_exit_code(state, handle, reraise=(InvalidRequest, NoData))
    return EXIT_OK if code is None else code


def _print_results(summary: Mapping[str, Any]) -> None:
    rows: list[dict[str, Any]] = list(summary.get("top") or [])
    title = (
        f"{summary.get('method')} search of {summary.get('strategy')} on {summary.get('symbol')} "
        f"{summary.get('timeframe')} · {summary.get('iterations')} iterations · "
        f"objective {summary.get('objective')}"
    )
    table = Table(title=title)
    params = [str(p) for p in summary.get("params", [])]
    metrics = [
        ("objective", "objective"), ("total_return", "return"), ("sharpe", "sharpe"),
        ("max_drawdown", "max DD"), ("trades", "trades"), ("final_equity", "equity"),
    ]  # fmt: skip
    for header in ("#", *params, *(h for _, h in metrics)):
        table.add_column(header, justify="right")
    for i, row in enumerate(rows, start=1):
        cells = [_format(row.get(p)) for p in params]
        cells += [_format(row.get(k), 2 if k == "final_equity" else 4) for k, _ in metrics]
        table.add_row(str(i), *cells)
    out().print(table)
    report = summary.get("report_html")
    if report:
        out().print(f"report: {report}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(backtest)
    app.command()(optimize)
