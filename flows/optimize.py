"""The ``optimize`` flow: search a strategy's parameters on stored bars (DESIGN §6).

Read it as the pipeline: read the bars from the store, run the core search
(:func:`candleflow.optimize.search.optimize`) whose batches of parameter sets go out as
:func:`tasks.optimize.evaluate_batch` tasks through a task runner — the flow's threads by default,
prefect-dask's ``DaskTaskRunner`` with ``dask=True`` (a local 2-worker cluster, or the scheduler
at ``dask_address``) — then publish the top 10 as a table artifact and the best run's equity curve
as a PNG and an HTML report (``{store}/reports/optimize/{SYMBOL}/{timeframe}/{run}.png/.html``)
referenced from a markdown artifact.

Each round asks the search for ``batch_size × concurrency`` parameter sets and evaluates them as
``concurrency`` tasks at once (the flow keeps Prefect's default thread runner: ``concurrency``
bounds the tasks in flight), so the result depends on the seed, the batch size and the
concurrency — not on the task runner. The progress artifact and the terminal read "Iteration
5/50 · Candle 7,300/10,000": thread-runner tasks count their candles into the flow's span
directly; Dask workers publish theirs as Dask events that the flow mirrors into the same span
while they run (:mod:`candleflow.optimize.monitor`). Stretches that are not backtests (starting
the cluster, skopt choosing points, the report's chart) are named and keep events coming. A
cancel (Prefect UI/API, SIGTERM, Ctrl+C) is shown where it struck and stops the backtests at
their next block of candles (on Dask through a Dask event the batches poll); the flow still
publishes the best result so far and ends Cancelled.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture

from candleflow.backtest import BacktestConfig, Metrics, PreparedBars, get_strategy, run_backtest
from candleflow.errors import Cancelled as CancelledError
from candleflow.errors import InvalidRequest, params_named
from candleflow.models import parse_symbol
from candleflow.optimize.monitor import Pulse, RemoteBatches
from candleflow.optimize.reports import png_data_uri
from candleflow.optimize.search import OptimizationResult, check_search, planned_iterations
from candleflow.optimize.search import optimize as run_search
from candleflow.optimize.space import Dimension, parse_space, space_text
from candleflow.store.objects import is_object_root
from candleflow.timeframes import parse_timeframe
from tasks.cancel import cancel_cause, cancelled_state
from tasks.optimize import (
    OPTIMIZE_SPAN,
    REPORT_SPAN,
    BatchOutcome,
    evaluate_batch,
    read_bars,
    save_report,
)
from tasks.progress import artifact_key, open_run, publish_summary, publish_table
from tasks.results import IN_MEMORY_RESULTS

__all__ = ["TaskBatchEvaluator", "optimize"]

STAGES: tuple[tuple[str, float], ...] = (("read_bars", 2.0), ("optimize", 95.0), ("report", 3.0))
TOP = 10
#: The core search's parameter names, which are the flow's too.
_SEARCH_PARAMS = {p: p for p in ("method", "iterations", "objective", "batch_size", "concurrency",
                                 "base_estimator")}  # fmt: skip
#: Seconds between the cancel watcher's polls of the run state.
WATCH_INTERVAL = 0.25
#: Submits one batch of parameter sets, named by a batch id, as a task.
Submit = Callable[[Sequence[Mapping[str, object]], str], PrefectFuture[BatchOutcome]]


class TaskBatchEvaluator:
    """The core search's ``evaluate_batch``: splits a round of parameter sets into up to
    ``concurrency`` batches of at most ``batch_size`` (at least ``concurrency`` when there are
    enough), submits one task per batch and returns the metrics in order.

    When a task stopped early (cancelled), raises ``Cancelled`` with the metrics of the batches
    before it plus its own finished prefix as ``partial`` — what the core keeps. ``on_batch``
    is told each batch's id and how many it evaluated as its result comes in (Dask batches are
    settled in the progress mirror that way).
    """

    def __init__(
        self,
        submit: Submit,
        batch_size: int,
        concurrency: int,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.submit = submit
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.on_batch = on_batch
        self.tasks = 0
        #: Every parameter set evaluated, with its metrics, in evaluation order.
        self.evaluated: list[tuple[Mapping[str, object], Metrics]] = []

    def __call__(self, param_sets: Sequence[Mapping[str, object]]) -> list[Metrics]:
        n = len(param_sets)
        if n == 0:
            return []
        k = max(-(-n // self.batch_size), min(self.concurrency, n))
        bounds = [round(i * n / k) for i in range(k + 1)]
        ids = [str(self.tasks + j) for j in range(k)]
        futures = [
            self.submit(param_sets[lo:hi], batch)
            for (lo, hi), batch in zip(itertools.pairwise(bounds), ids, strict=True)
        ]
        self.tasks += len(futures)
        outcomes: list[BatchOutcome] = []
        for batch, future in zip(ids, futures, strict=True):
            outcomes.append(future.result())
            if self.on_batch is not None:
                self.on_batch(batch, len(outcomes[-1].metrics))
        metrics: list[Metrics] = []
        for outcome in outcomes:
            metrics.extend(outcome.metrics)
            if outcome.cancelled:
                break
        self.evaluated.extend(zip(param_sets, metrics, strict=False))
        if any(outcome.cancelled for outcome in outcomes):
            raise CancelledError("optimization cancelled", partial=metrics)
        return metrics


@contextlib.contextmanager
def _dask_submitter(
    address: str | None, remote: RemoteBatches, pulse: Pulse
) -> Iterator[Callable[..., PrefectFuture[BatchOutcome]]]:
    """Submit evaluate_batch to a DaskTaskRunner (local 2-worker cluster unless ``address``).

    The workers' progress comes back as Dask events on a topic of this run, handed to
    ``remote`` (applied on ``pulse``'s beats); a cancel of the run sets a Dask event the
    running batches poll, so they stop at their next block of candles.
    """
    try:
        from prefect_dask.task_runners import DaskTaskRunner
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidRequest(
            "dask=True needs prefect-dask: pip install 'candleflow[dask]'"
        ) from None
    from distributed import Event
    from prefect.settings import PREFECT_API_URL, temporary_settings

    runner = (
        DaskTaskRunner(address=address)
        if address
        else DaskTaskRunner(
            cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"}
        )
    )
    updates: dict[Any, Any] = {}
    if not PREFECT_API_URL.value():
        # An in-process run on the ephemeral API: the workers must report to this one, not
        # start an ephemeral API of their own (tasks carry the flow's settings to the workers).
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer._instances.get(None)
        if server is not None and server.running:
            updates[PREFECT_API_URL] = server.api_url
    topic = f"candleflow-progress-{uuid.uuid4().hex}"
    with contextlib.ExitStack() as stack:
        stack.callback(pulse.end_phase)
        stack.enter_context(runner)
        stack.enter_context(temporary_settings(updates=updates))
        # Shown while the cluster shuts down (seconds): the callback runs before runner exits.
        stack.callback(pulse.start_phase, "stopping the Dask cluster")
        with pulse.phase("connecting to Dask" if address else "starting a Dask cluster"):
            client = runner.client  # the cluster starts here (seconds)
        client.subscribe_topic(topic, lambda event: remote.receive(event[1]))  # type: ignore[no-untyped-call]
        stack.callback(_unsubscribe, client, topic)
        cancel = Event(f"{topic}-cancel", client=client)  # type: ignore[no-untyped-call]
        told = threading.Event()
        waiting = "waiting for the Dask workers"

        def follow_workers() -> None:
            if pulse.token.cancelled and not told.is_set():
                told.set()
                cancel.set()  # type: ignore[no-untyped-call]
            if remote.received and pulse.current_phase == waiting:
                pulse.end_phase()  # the workers' own reports show from here on

        pulse.hooks.append(follow_workers)
        stack.callback(pulse.hooks.remove, follow_workers)
        pulse.start_phase(waiting)

        def submit(batch: str, **parameters: Any) -> PrefectFuture[BatchOutcome]:
            parameters.update(progress_topic=topic, batch=batch)
            return runner.submit(evaluate_batch, parameters=parameters)

        yield submit


def _unsubscribe(client: Any, topic: str) -> None:
    with contextlib.suppress(Exception):
        client.unsubscribe_topic(topic)


@flow(
    name="optimize",
    flow_run_name="optimize {symbol} {timeframe} {strategy} {method}",
    log_prints=False,
    **IN_MEMORY_RESULTS,
)
def optimize(
    symbol: str,
    timeframe: str = "1h",
    strategy: str = "sma_cross",
    space: str | dict[str, Any] | None = None,
    method: str = "bayes",
    iterations: int = 50,
    objective: str = "sharpe",
    source: str = "synthetic",
    store: str = "data",
    batch_size: int = 8,
    concurrency: int = 2,
    seed: int = 0,
    cash: float = 10_000.0,
    commission: float = 0.0,
    slippage: float = 0.0,
    split: float | None = None,
    base_estimator: str = "gp",
    dask: bool = False,
    dask_address: str | None = None,
) -> dict[str, Any] | State[Any]:
    """Search ``strategy``'s parameters on the stored ``source`` bars of ``symbol``.

    The ``Args`` below are what the Prefect UI shows beside each field of the run form.

    Args:
        symbol: Ticker whose stored bars to backtest on, e.g. `AAPL` (case-insensitive); load
            them first with the load-data deployment.
        timeframe: Bar length of the series: `1m`, `2m`, `3m`, `5m`, `10m`, `15m`, `20m`,
            `30m`, `1h`, `2h`, `3h`, `4h`, `8h` or `1d`. Default `1h`.
        strategy: `sma_cross` (default; parameters fast, slow, long_only), `rsi_reversion`
            (window, lower, upper, long_only) or `bollinger_breakout` (window, k, long_only).
        space: Ranges to search, as text `name=low:high`, `name=low:high:step` or
            `name=a|b|c` joined by commas, e.g. `fast=5:50,slow=10:200`, or a JSON object
            such as `{"fast": [5, 50], "slow": [10, 200]}`. Empty (default): the strategy's
            own space (sma_cross `fast=5:50,slow=10:200`).
        method: `bayes` (default; Gaussian-process or forest model, see `base_estimator`),
            `random` or `grid` (every cell, at most `iterations`).
        iterations: Parameter sets to evaluate, an integer ≥ 1. Default 50.
        objective: What to maximise: `sharpe` (default), `return`, `cagr`, `calmar`,
            `final_equity`, `win_rate`, `profit_factor` or `max_drawdown` (smallest wins).
        source: Source the bars were loaded from: `synthetic` (default), `files` or `ib`.
        store: Folder of the Parquet bar store; a relative path is taken from the worker's
            working directory (the checkout). Reports go to `reports/optimize/` in it.
            Default `data`.
        batch_size: Parameter sets per Prefect task, an integer ≥ 1. Default 8.
        concurrency: Tasks run at the same time, an integer ≥ 1; each round asks the search
            for `batch_size` × `concurrency` sets. Default 2.
        seed: Seed of the random and Bayesian searches (same seed, same results). Default 0.
        cash: Starting cash of each backtest, in the bars' currency, > 0. Default 10000.
        commission: Commission per fill as a fraction of its value, 0 ≤ commission < 0.1
            (0.001 = 0.1 %). Default 0.
        slippage: Price slippage per fill as a fraction of the open, 0 ≤ slippage < 0.1
            (0.0005 = 5 basis points). Default 0.
        split: In-sample fraction of the bars, 0 < split < 1 (e.g. 0.7): the search sees the
            first part only and the top results are re-run on the rest. Empty (default): all
            bars in sample.
        base_estimator: Model of the `bayes` method: `gp` (default; Gaussian process) or
            `forest` (random forest).
        dask: `true` to run the tasks on a Dask cluster (needs prefect-dask): a local 2-worker
            cluster, or the scheduler at `dask_address`. Default `false` (threads).
        dask_address: Address of a running Dask scheduler, e.g. `tcp://10.0.0.5:8786`, used
            when `dask` is true. Empty (default): a local cluster.

    Returns:
        The summary as a dict (best parameters and metrics, top 10, report paths), or a
        Cancelled state after publishing the best result so far.
    """
    name = parse_symbol(symbol)
    tf = parse_timeframe(timeframe)
    spec = get_strategy(strategy)
    dims = parse_space(space, spec)
    config = BacktestConfig(cash=cash, commission=commission, slippage=slippage)
    with params_named(_SEARCH_PARAMS, "optimize parameter"):
        check_search(method, iterations, objective, batch_size=batch_size,
                     concurrency=concurrency, base_estimator=base_estimator)  # fmt: skip
    label = f"{name} {tf.name} {spec.name}"
    key = artifact_key("optimize", name, tf.name)

    with open_run(f"optimize {label}", STAGES, key=key, watch_interval=WATCH_INTERVAL) as run:
        bars = read_bars(store, source, name, tf.name)
        split_bar = int(len(bars) * split) if split is not None else None
        prepared = PreparedBars.from_frame(bars)
        total = planned_iterations(method, iterations, dims, spec)
        with contextlib.ExitStack() as stack:
            span = stack.enter_context(run.tracker.stage("optimize", total=total, unit="Iteration"))
            remote = RemoteBatches(span)
            pulse = stack.enter_context(Pulse(span, token=run.token, hooks=[remote.pump]))
            on_batch: Callable[[str, int], None] | None = None
            if dask:
                submit_task = stack.enter_context(_dask_submitter(dask_address, remote, pulse))
                # Dask tasks get a plain frame (it pickles) and report through `remote`.
                task_bars: pd.DataFrame | PreparedBars = bars[["open", "close"]]
                on_batch = remote.settle
            else:
                run.spans[OPTIMIZE_SPAN] = span
                stack.callback(run.spans.pop, OPTIMIZE_SPAN, None)
                task_bars = prepared

                def submit_task(batch: str, **parameters: Any) -> PrefectFuture[BatchOutcome]:
                    future: PrefectFuture[BatchOutcome] = evaluate_batch.submit(**parameters)
                    return future

            def submit(
                param_sets: Sequence[Mapping[str, object]], batch: str
            ) -> PrefectFuture[BatchOutcome]:
                return submit_task(
                    batch, bars=task_bars, strategy=spec.name, param_sets=list(param_sets),
                    config=config, stop=split_bar, timeframe=tf.name,
                )  # fmt: skip

            evaluator = TaskBatchEvaluator(submit, batch_size, concurrency, on_batch=on_batch)

            result = run_search(
                bars, spec, dims, method=method,  # type: ignore[arg-type]
                iterations=iterations, objective=objective, config=config, split=split,
                seed=seed, batch_size=batch_size * concurrency,
                base_estimator=base_estimator, timeframe=tf.name, evaluate_batch=evaluator,
                cancel_token=run.token, pulse=pulse,
            )  # fmt: skip
            # What was simulated (memo hits are iterations without a backtest): the end line.
            run.tracker.set_counter("iterations", result.iterations)
            per_evaluation = split_bar if split_bar is not None else len(bars)
            run.tracker.set_counter("candles", len(evaluator.evaluated) * per_evaluation)
        summary = _summarise(result, name, tf.name, dims, evaluator.tasks)
        image = b""
        if result.best is not None:
            with contextlib.ExitStack() as stack:
                report = stack.enter_context(run.tracker.stage("report", total=3, unit="Step"))
                stack.enter_context(Pulse(report, token=run.token))
                run.spans[REPORT_SPAN] = report
                stack.callback(run.spans.pop, REPORT_SPAN, None)
                report.update(detail="backtesting the best parameters")
                best = run_backtest(prepared, spec, result.best.params, config=config,
                                    timeframe=tf, stop=split_bar)  # fmt: skip
                report.advance(1)
                run_name = _run_name(run.flow_run_id)
                folder = f"reports/optimize/{name}/{tf.name}"
                title = f"{label} · best {_params_text(result.best.params)}"
                files = save_report(best, result.to_frame(TOP), store, folder, run_name, title)
            summary["report_png"] = files.png
            summary["report_html"] = files.html
            image = files.image
        if not result.cancelled:
            run.tracker.complete()
        if run.handle is not None:
            run.handle.summary = summary
    _publish(key, label, summary, image)
    if result.cancelled:
        return cancelled_state(
            f"optimize {label} {cancel_cause(run)} after {result.iterations} of {total} "
            f"iterations; best so far: {summary.get('best_params_text', 'none')}"
        )
    return summary


def _run_name(flow_run_id: Any) -> str:
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{str(flow_run_id)[:8]}" if flow_run_id is not None else stamp


def _params_text(params: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _plain(value: object) -> object:
    """JSON-safe: floats rounded to 6 digits, NaN/inf as None."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def _summarise(
    result: OptimizationResult, symbol: str, timeframe: str, dims: Mapping[str, Dimension],
    tasks: int,
) -> dict[str, Any]:  # fmt: skip
    top = result.to_frame(TOP)
    rows = [{k: _plain(v) for k, v in row.items()} for row in top.to_dict("records")]
    summary: dict[str, Any] = {
        "symbol": symbol,
        "timeframe": timeframe,
        "strategy": result.strategy,
        "method": result.method,
        "objective": result.objective,
        "space": space_text(dims),
        "params": list(dims),
        "iterations": result.iterations,
        "infeasible": result.infeasible,
        "tasks": tasks,
        "seed": result.seed,
        "cancelled": result.cancelled,
        "top": rows,
    }
    if result.best is not None:
        summary["best_params"] = dict(result.best.params)
        summary["best_params_text"] = _params_text(result.best.params)
        summary["best_objective"] = _plain(result.best.objective)
        summary["best_metrics"] = {k: _plain(v) for k, v in result.best.metrics.to_dict().items()}
    return summary


def _publish(key: str, label: str, summary: Mapping[str, Any], image: bytes) -> None:
    state = "cancelled" if summary["cancelled"] else "completed"
    publish_table(
        f"{key}-top",
        f"optimize {label}: top {len(summary['top'])} of {summary['iterations']} parameter sets "
        f"by {summary['objective']} ({state})",
        summary["top"],
    )
    rows: list[tuple[str, object]] = [
        ("search", f"{summary['method']} over {summary['space']}, seed {summary['seed']}"),
        ("iterations", f"{summary['iterations']} ({summary['tasks']} tasks)"),
        ("best parameters", summary.get("best_params_text", "none")),
        ("best objective", f"{summary['objective']} = {summary.get('best_objective')}"),
    ]
    metrics = summary.get("best_metrics") or {}
    for metric in ("final_equity", "total_return", "sharpe", "max_drawdown", "trades"):
        if metric in metrics:
            rows.append((metric, metrics[metric]))
    for kind in ("png", "html"):
        path = summary.get(f"report_{kind}")
        if path:
            link = path if is_object_root(path) else Path(path).resolve().as_uri()
            rows.append((f"report ({kind})", f"[{path}]({link})"))
    images: list[tuple[str, str]] = []
    if image:  # embedded: a UI on another machine cannot open file:// (nor a private bucket)
        images.append(("equity and drawdown", png_data_uri(image)))
    publish_summary(f"{key}-summary", f"optimize {label} {state}", rows, images)
