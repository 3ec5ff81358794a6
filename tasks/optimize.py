"""The optimization stages as Prefect tasks (DESIGN §6): read the bars, evaluate a batch of
parameter sets, save the report of the best run.

A task costs ~5 ms on threads and ~100 ms on Dask while one backtest can take less than a
millisecond, so :func:`evaluate_batch` backtests a *batch* of parameter sets through
:func:`candleflow.optimize.evaluate_params`. On the thread runner it shares the flow's
:class:`~candleflow.backtest.PreparedBars` (and so its indicator cache), reports each backtest as a
candle child span of the flow's "optimize" stage and stops at the next chunk when the run's token
is set; on Dask it gets a plain bar frame (everything it takes must pickle) and reports nothing.
All tasks use ``NO_CACHE``: hashing bars costs more than a batch.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from candleflow.backtest import BacktestConfig, BacktestResult, Metrics, PreparedBars
from candleflow.errors import Cancelled, NoData
from candleflow.optimize import evaluate_params
from candleflow.store import BarStore
from tasks.progress import current_run

__all__ = ["BatchOutcome", "ReportFiles", "evaluate_batch", "read_bars", "save_report"]

#: The flow's span that evaluate_batch opens its candle child spans under (see RunContext.spans).
OPTIMIZE_SPAN = "optimize"


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one batch produced: the metrics of its first ``len(metrics)`` parameter sets, and
    whether it stopped early because the run was cancelled."""

    metrics: tuple[Metrics, ...]
    cancelled: bool = False


@task(cache_policy=NO_CACHE)
def read_bars(store: str, source: str, symbol: str, timeframe: str) -> pd.DataFrame:
    """The stored bars of the series; NoData (saying how to load them) when there are none."""
    with current_run().tracker.stage("read_bars"):
        bars = BarStore(store).read(source, symbol, timeframe)
    if len(bars) < 2:
        raise NoData(
            f"the store {store!r} has {len(bars)} {source} bars of {symbol} {timeframe}: "
            f"run `candleflow load {symbol} --timeframe {timeframe} --source {source} "
            f"--store {store}` first"
        )
    return bars


@task(cache_policy=NO_CACHE)
def evaluate_batch(
    bars: pd.DataFrame | PreparedBars,
    strategy: str,
    param_sets: Sequence[Mapping[str, object]],
    config: BacktestConfig | None = None,
    stop: int | None = None,
    timeframe: str | None = None,
) -> BatchOutcome:
    """Backtest every parameter set on bars ``[0, stop)``; on cancellation keep what finished."""
    run = current_run()
    try:
        metrics = evaluate_params(
            bars, strategy, param_sets, config=config, stop=stop, timeframe=timeframe,
            progress=run.spans.get(OPTIMIZE_SPAN), cancel_token=run.token,
        )  # fmt: skip
    except Cancelled as exc:
        done = exc.partial if isinstance(exc.partial, list) else []
        return BatchOutcome(tuple(done), cancelled=True)
    return BatchOutcome(tuple(metrics))


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where the best run's report went."""

    png: Path
    html: Path


@task(cache_policy=NO_CACHE)
def save_report(
    result: BacktestResult, top: pd.DataFrame, folder: Path, name: str, title: str
) -> ReportFiles:
    """Write the best run's equity curve (PNG) and an HTML report beside it."""
    with current_run().tracker.stage("report"):
        folder.mkdir(parents=True, exist_ok=True)
        png = folder / f"{name}.png"
        page = folder / f"{name}.html"
        image = render_equity_png(result, title)
        png.write_bytes(image)
        page.write_text(render_html(result, top, title, image), encoding="utf-8")
        return ReportFiles(png, page)


def render_equity_png(result: BacktestResult, title: str) -> bytes:
    """The equity curve (and drawdown below it) as PNG bytes (matplotlib's Agg canvas: no
    pyplot, no global backend, safe in any thread)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    equity = result.equity
    drawdown = equity / equity.cummax() - 1.0
    # Fixed margins: a constrained layout triples the time (it matters on a cancel).
    figure = Figure(figsize=(10, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.07, hspace=0.08)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot(equity.index, equity.to_numpy(), linewidth=1.0, color="#1f77b4")
    top.axhline(result.config.cash, color="grey", linewidth=0.6, linestyle="--")
    top.set_title(title)
    top.set_ylabel("equity")
    top.grid(alpha=0.3)
    bottom.fill_between(drawdown.index, drawdown.to_numpy() * 100.0, 0.0, color="#d62728")
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:,.4f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_html(result: BacktestResult, top: pd.DataFrame, title: str, png: bytes) -> str:
    """A self-contained page: best parameters and metrics, the curve, the top table, trades."""
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    metrics = pd.DataFrame(list(result.metrics.to_dict().items()), columns=["metric", "value"])
    trades = result.trades.drop(columns=["entry_bar", "exit_bar"], errors="ignore").tail(50)
    image = base64.b64encode(png).decode("ascii")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Best parameters: <b>{html.escape(params)}</b> ({result.strategy})</p>"
        f"<img alt='equity curve' src='data:image/png;base64,{image}'>"
        f"<h2>Metrics</h2>{_table(metrics)}<h2>Top parameter sets</h2>{_table(top)}"
        f"<h2>Last {len(trades)} closed trades</h2>{_table(trades)}</body></html>"
    )
