"""The optimization stages as Prefect tasks (DESIGN §6): read the bars, evaluate a batch of
parameter sets, save the report of the best run (rendered by :mod:`candleflow.optimize.reports`).

A task costs ~5 ms on threads and ~100 ms on Dask while one backtest can take less than a
millisecond, so :func:`evaluate_batch` backtests a *batch* of parameter sets through
:func:`candleflow.optimize.evaluate.evaluate_params`. On the thread runner it shares the flow's
:class:`~candleflow.backtest.PreparedBars` (and so its indicator cache), reports each backtest as a
candle child span of the flow's "optimize" stage and stops at the next block of candles when the
run's token is set; on Dask it gets a plain bar frame (everything it takes must pickle), reports
its evaluations and candles as Dask events the flow mirrors
(:class:`~candleflow.optimize.monitor.BatchMeter`) and stops when the flow sets a Dask event.
All tasks use ``NO_CACHE``: hashing bars costs more than a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from candleflow.backtest import BacktestConfig, BacktestResult, Metrics, PreparedBars
from candleflow.errors import Cancelled, NoData
from candleflow.optimize.evaluate import evaluate_params
from candleflow.optimize.monitor import BatchMeter, Pulse
from candleflow.optimize.reports import ReportFiles, write_report
from candleflow.store.bar_store import BarStore
from tasks.progress import current_run

__all__ = [
    "OPTIMIZE_SPAN",
    "REPORT_SPAN",
    "BatchOutcome",
    "ReportFiles",
    "evaluate_batch",
    "read_bars",
    "save_report",
]

#: The flow's span that evaluate_batch opens its candle child spans under (see RunContext.spans).
OPTIMIZE_SPAN = "optimize"
#: The flow's report stage, which save_report counts its steps in.
REPORT_SPAN = "report"


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one batch produced: the metrics of its first ``len(metrics)`` parameter sets, and
    whether it stopped early because the run was cancelled."""

    metrics: tuple[Metrics, ...]
    cancelled: bool = False


@task(cache_policy=NO_CACHE)
def read_bars(store: str, source: str, symbol: str, timeframe: str) -> pd.DataFrame:
    """The stored bars of the series; NoData (saying how to load them) when there are none."""
    run = current_run()
    with run.tracker.stage("read_bars") as stage, Pulse(stage, token=run.token):
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
    progress_topic: str | None = None,
    batch: str = "",
) -> BatchOutcome:
    """Backtest every parameter set on bars ``[0, stop)``; on cancellation keep what finished.

    With ``progress_topic`` (a Dask run) the batch's progress goes to the flow as Dask events
    under that topic, and the Dask event ``{progress_topic}-cancel`` stops it.
    """
    run = current_run()
    with _dask_meter(progress_topic, batch) as meter:
        token = meter.token if meter is not None else run.token
        try:
            metrics = evaluate_params(
                bars, strategy, param_sets, config=config, stop=stop, timeframe=timeframe,
                progress=run.spans.get(OPTIMIZE_SPAN), cancel_token=token, meter=meter,
            )  # fmt: skip
        except Cancelled as exc:
            done = exc.partial if isinstance(exc.partial, list) else []
            return BatchOutcome(tuple(done), cancelled=True)
    return BatchOutcome(tuple(metrics))


@contextlib.contextmanager
def _dask_meter(topic: str | None, batch: str) -> Iterator[BatchMeter | None]:
    """On a Dask worker: a meter publishing to ``topic`` and polling its cancel event."""
    if topic is None:
        yield None
        return
    from distributed import Event, get_client, get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a worker (a direct call): nothing to report to
        yield None
        return
    # The meter's thread polls the event: it needs the worker's client found here, in the task.
    cancel = Event(f"{topic}-cancel", client=get_client())  # type: ignore[no-untyped-call]

    def publish(message: dict[str, Any]) -> None:
        worker.log_event(topic, message)

    with BatchMeter(batch, publish, cancelled=cancel.is_set) as meter:
        yield meter


@task(cache_policy=NO_CACHE)
def save_report(
    result: BacktestResult, top: pd.DataFrame, store: str, folder: str, name: str, title: str
) -> ReportFiles:
    """Write the best run's equity curve (PNG) and an HTML report beside the store's bars
    (counted as two steps of the flow's "report" stage)."""
    return write_report(
        result, top, store, folder, name, title, progress=current_run().spans.get(REPORT_SPAN)
    )
