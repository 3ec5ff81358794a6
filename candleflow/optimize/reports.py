"""The report of an optimization's best run: its equity curve (with the drawdown below it) as a
PNG, and a self-contained HTML page with the best parameters, metrics, the top parameter sets and
the last closed trades.

Rendering uses matplotlib's Agg canvas directly — no pyplot, no global backend — so it is safe in
any thread; :func:`write_report` puts both files beside the store's bars (a folder or a bucket).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from candleflow.backtest import BacktestResult
from candleflow.progress import Span

__all__ = ["ReportFiles", "png_data_uri", "render_equity_png", "render_html", "write_report"]


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where the best run's report went (local paths or ``s3://`` URLs), and the picture."""

    png: str
    html: str
    image: bytes = field(default=b"", repr=False, compare=False)


def write_report(
    result: BacktestResult,
    top: pd.DataFrame,
    root: str | Path,
    folder: str,
    name: str,
    title: str,
    progress: Span | None = None,
) -> ReportFiles:
    """Write ``{root}/{folder}/{name}.png`` (the equity curve) and ``.html`` beside it, on a
    local store root or an object store alike (:func:`candleflow.store.files.put_file`);
    ``progress`` (the report stage) is told each step: "drawing the equity chart" (matplotlib's
    first use in a process can take seconds), then "writing the HTML page" (2 items)."""
    from candleflow.store.files import put_file

    if progress is not None:
        progress.update(detail="drawing the equity chart")
    image = render_equity_png(result, title)
    png = put_file(root, f"{folder}/{name}.png", image)
    if progress is not None:
        progress.advance(1, detail="writing the HTML page")
    page = render_html(result, top, title, image).encode("utf-8")
    html_at = put_file(root, f"{folder}/{name}.html", page)
    if progress is not None:
        progress.advance(1)
    return ReportFiles(png, html_at, image)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,…``: the picture inline, for a page or a Prefect markdown artifact
    seen from another machine (where a ``file://`` link shows nothing)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_equity_png(result: BacktestResult, title: str) -> bytes:
    """The equity curve (and drawdown below it) as PNG bytes."""
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
    image = png_data_uri(png)
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Best parameters: <b>{html.escape(params)}</b> ({result.strategy})</p>"
        f"<img alt='equity curve' src='{image}'>"
        f"<h2>Metrics</h2>{_table(metrics)}<h2>Top parameter sets</h2>{_table(top)}"
        f"<h2>Last {len(trades)} closed trades</h2>{_table(trades)}</body></html>"
    )
