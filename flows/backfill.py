"""The ``backfill`` flow: many symbols × timeframes, each a ``load_data`` subflow + features.

Read it as: parse the universe, make one queue row per symbol × timeframe, run the rows on
``max_parallel`` threads — each a ``load_data`` subflow followed by a ``features`` subflow — while
the flow's own thread publishes the queue table (throttled) and watches for a cancel, then write
the per-series metadata and a summary table and end in a state that says how it went.

- **Concurrency and pacing.** Threads, not processes: the sources of one process share their
  pacing state (the IB source takes the process-wide limiter of its gateway), so pacing holds
  across the parallel loads. Each IB load gets its own client id.
- **Isolation.** A row that fails (unknown symbol, source down, a bug) is marked failed with the
  reason; the others go on. The run ends Completed when every row is done, Completed with a
  warning message (and the summary) when some failed, Failed when none succeeded.
- **Progress.** Each row's load maps onto 0–80 % of the row and its features onto 80–100 %;
  the backfill's progress artifact is the mean of its rows (each row a child span of equal
  weight), its description e.g. ``Backfilling: 5/12 done, 1 failed · 3 running``.
- **Cancellation** (API, UI, SIGTERM, Ctrl+C): every running child's token is cancelled — the
  loads stop at their next segment and keep what they fetched, their runs end Cancelled — and
  rows not started yet are marked cancelled. The backfill ends Cancelled.
- **Numbers.** A row's rows and API calls are its load's (bars fetched, every source request),
  the same the load's progress events, summary and metadata give — a stopped load's too.
- **Metadata.** ``_meta.json`` of each successful series gets ``history_rows``,
  ``api_calls_last_run``, ``api_calls_total`` (cumulative over runs), ``batch_size`` (the longest
  span one request may cover for the timeframe), ``segments_last_run`` and ``last_success``,
  beside the ``fetch_duration_s`` the load and the ``feature_count`` the features record.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Final

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from candleflow.errors import InvalidRequest, params_named
from candleflow.features.catalogue import parse_feature_spec
from candleflow.loading.pipeline import LoadSummary, record_backfill
from candleflow.loading.universe import UniverseEntry, parse_universe
from candleflow.models import LoadMode
from candleflow.progress import CancelToken, Span
from candleflow.progress.queue import QueueTable, RowProgress
from candleflow.sources.registry import IBOptions, parse_source_options
from candleflow.store.bar_store import BarStore
from candleflow.timeframes import parse_timeframe
from flows.features import features as features_flow
from flows.features import resolve_spec
from flows.load_data import load_data, load_parameters
from tasks.cancel import cancel_cause, cancelled_state
from tasks.progress import LiveTable, artifact_key, open_run, progress_context, publish_table
from tasks.results import IN_MEMORY_RESULTS

__all__ = ["DEFAULT_TIMEFRAMES", "DEFAULT_UNIVERSE", "backfill"]

logger = logging.getLogger(__name__)

DEFAULT_UNIVERSE: Final = "deployments/universe.yaml"
DEFAULT_TIMEFRAMES: Final = ("1d", "1h")
#: Share of a row's progress taken by the load (the features take the rest).
LOAD_SHARE: Final = 80.0
_NO_FEATURES: Final = frozenset({"", "none", "off", "false"})
# ----------------------------------------------------------------------------- one row


@dataclass(frozen=True, slots=True)
class _Job:
    entry: UniverseEntry
    timeframe: str
    params: Mapping[str, Any]  # load_data's source parameters: source, seed, ib_port, delay, …

    @property
    def source(self) -> str:
        return str(self.params["source"])


def _reason(state: State[Any]) -> str:
    """Why a child run failed: its exception as "Type: message", else the state message."""
    with contextlib.suppress(Exception):
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            return f"{type(error).__name__}: {error}"
    message = state.message or state.name or "failed"
    return message.removeprefix("Flow run encountered an exception: ")


class _Runner:
    """Runs the rows (from pool threads) and cancels the running ones on request."""

    def __init__(
        self,
        queue: QueueTable,
        token: CancelToken,
        span: Span,
        *,
        store: str,
        mode: str,
        start: str | None,
        end: str | None,
        spec: dict[str, Any] | None,
        min_interval: float | None,
    ) -> None:
        self.queue, self.token, self.span = queue, token, span
        self.store, self.mode, self.start, self.end = store, mode, start, end
        self.spec, self.min_interval = spec, min_interval
        self._lock = threading.Lock()
        self._running: set[CancelToken] = set()
        #: (symbol, timeframe) → the ids of its load_data and features flow runs.
        self.flow_runs: dict[tuple[str, str], list[str]] = {}

    def cancel_all(self, reason: str) -> None:
        """Cancel every running row's token and mark the rows not started as cancelled."""
        with self._lock:
            running = list(self._running)
        for token in running:
            token.cancel(reason)
        for row in self.queue.rows():
            if row.status == "queued":
                self.queue.update(row.symbol, row.timeframe, status="cancelled",
                                  reason=f"not started: {reason}")  # fmt: skip

    def run(self, job: _Job) -> str:
        sym, tf = job.entry.symbol, job.timeframe
        token = CancelToken()
        with self._lock:
            self._running.add(token)
        try:
            if self.token.cancelled:
                self.queue.update(sym, tf, status="cancelled",
                                  reason=f"not started: {self.token.reason}")  # fmt: skip
                return "cancelled"
            started = time.monotonic()
            self.queue.update(sym, tf, status="validating", detail="Starting")
            with self.span.child(f"{sym} {tf}", total=1000, weight=1) as span:
                try:
                    status = self._load_and_engineer(job, token, span, started)
                except Exception as exc:  # a bug in one row must not stop the others
                    logger.exception("backfill of %s %s failed", sym, tf)
                    status = "failed"
                    self.queue.update(sym, tf, status="failed", reason=f"{type(exc).__name__}: "
                                      f"{exc}", duration=time.monotonic() - started)  # fmt: skip
            self._update_detail()
            return status
        finally:
            with self._lock:
                self._running.discard(token)

    def _record_run(self, job: _Job, flow_run_id: object) -> None:
        if flow_run_id is not None:
            with self._lock:
                key = (job.entry.symbol, job.timeframe)
                self.flow_runs.setdefault(key, []).append(str(flow_run_id))

    def _update_detail(self) -> None:
        counts = self.queue.counts()
        finished = counts["done"] + counts["failed"] + counts["cancelled"]
        parts = [f"{finished}/{sum(counts.values())} finished"]
        parts += [f"{counts[s]} {s}" for s in ("failed", "cancelled") if counts[s]]
        self.span.update(detail=", ".join(parts))

    def _load_and_engineer(self, job: _Job, token: CancelToken, span: Span, started: float) -> str:
        sym, tf, source, queue = job.entry.symbol, job.timeframe, job.source, self.queue
        sink = RowProgress(queue, sym, tf, high=LOAD_SHARE, span=span, started=started)
        with progress_context(extra_sinks=[sink], token=token, min_interval=self.min_interval) as h:
            state = load_data(
                symbol=sym, timeframe=tf, start=self.start, end=self.end, mode=self.mode,
                exchange=job.entry.exchange, store=self.store, **job.params, return_state=True,
            )  # fmt: skip
        self._record_run(job, h.flow_run_id)
        if not self._finished(state, job, started, load=h.summary):
            return "cancelled" if state.is_cancelled() else "failed"
        load = LoadSummary.from_dict(h.summary or {})
        features = ""
        if self.spec is not None:
            fsink = RowProgress(queue, sym, tf, low=LOAD_SHARE, span=span, started=started,
                                base=queue.row(sym, tf))  # fmt: skip
            queue.update(sym, tf, status="engineering", detail="Features")
            with progress_context(extra_sinks=[fsink], token=token,
                                  min_interval=self.min_interval) as fh:  # fmt: skip
                fstate = features_flow(symbol=sym, timeframe=tf, source=source, store=self.store,
                                       spec=self.spec, return_state=True)  # fmt: skip
            if not self._finished(fstate, job, started, "features: "):
                return "cancelled" if fstate.is_cancelled() else "failed"
            self._record_run(job, fh.flow_run_id)
            count = (fh.summary or {}).get("feature_count")
            features = f", {count} features" if count else ""
        queue.update(sym, tf, status="storing", detail="Recording metadata")
        record_backfill(BarStore(self.store), source, load)
        failed = load.failed_segments
        note = f"{len(failed)} segment(s) failed: " + "; ".join(failed) if failed else ""
        queue.update(sym, tf, status="done", progress=100.0, rows=load.rows_fetched,
                     api_calls=load.api_calls, duration=time.monotonic() - started,
                     detail=f"{load.rows_added:,} new bars{features}", reason=note)  # fmt: skip
        return "done"

    def _finished(
        self,
        state: State[Any],
        job: _Job,
        started: float,
        what: str = "",
        load: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether a child run completed; else its row is marked cancelled or failed (with the
        bars fetched and API calls of a stopped load's summary, the numbers it recorded)."""
        if state.is_completed():
            return True
        cancelled = state.is_cancelled()
        reason = (state.message or "cancelled") if cancelled else _reason(state)
        counts: dict[str, Any] = {}
        if load:
            summary = LoadSummary.from_dict(load)
            counts = {"rows": summary.rows_fetched, "api_calls": summary.api_calls}
        self.queue.update(job.entry.symbol, job.timeframe, duration=time.monotonic() - started,
                          status="cancelled" if cancelled else "failed",
                          reason=f"{what}{reason}", **counts)  # fmt: skip
        return False


# ----------------------------------------------------------------------------- the flow


def _jobs(
    entries: list[UniverseEntry],
    timeframes: list[str],
    source: str,
    seed: int,
    delays: Mapping[str, float] | None,
    source_options: Mapping[str, Any] | None,
) -> list[_Job]:
    """One job per entry × timeframe: the entries of ``source`` with its options (parsed once,
    here), the others with their own source's defaults; every IB load its own client id."""
    given = dict(source_options or {})
    align = given.pop("align", None)  # a load parameter, not a source option
    names = {"source": "source", "seed": "seed", **{k: f"source_options.{k}" for k in given}}
    with params_named(names, "backfill parameter"):
        options = parse_source_options(source, seed=seed, **given)
    client_ids = itertools.count(options.client_id if isinstance(options, IBOptions) else 1)
    delay_of = {k.strip().upper(): float(v) for k, v in (delays or {}).items()}
    jobs: list[_Job] = []
    for entry in entries:
        for tf in timeframes:
            name = entry.source or options.name
            if name == options.name:
                params = load_parameters(options) | ({"align": align} if align else {})
            else:
                params = {"source": name, "seed": seed}
            if name == "ib":
                params["client_id"] = next(client_ids)  # one client id per IB connection
            if entry.symbol in delay_of:  # the synthetic source's seconds per request
                params["delay"] = delay_of[entry.symbol]
            jobs.append(_Job(entry, tf, params))
    return jobs


@flow(name="backfill", flow_run_name="backfill {mode}", log_prints=False, **IN_MEMORY_RESULTS)
def backfill(
    universe: str | list[Any] = DEFAULT_UNIVERSE,
    timeframes: list[str] | None = None,
    mode: str = "tail",
    max_parallel: int = 4,
    features: str | dict[str, Any] | None = "default",
    source: str = "synthetic",
    store: str = "data",
    start: str | None = None,
    end: str | None = None,
    seed: int = 0,
    delays: dict[str, float] | None = None,
    source_options: dict[str, Any] | None = None,
) -> dict[str, Any] | State[Any]:
    """Load every symbol of ``universe`` × ``timeframes`` (default 1d, 1h), then its features.

    The ``Args`` below are what the Prefect UI shows beside each field of the run form.

    Args:
        universe: The symbols: the path of a YAML or CSV file (default
            `deployments/universe.yaml`, relative to the worker's working directory), a list
            such as `["AAPL", {"symbol": "SAP", "exchange": "XETR"}]`, or comma-separated text
            `AAPL,MSFT`. Entries may name their `exchange` (calendar, default `XNYS`) and
            `source`.
        timeframes: Bar lengths to load for every symbol, from `1m`, `2m`, `3m`, `5m`, `10m`,
            `15m`, `20m`, `30m`, `1h`, `2h`, `3h`, `4h`, `8h`, `1d`. Empty (default): `1d`
            and `1h`.
        mode: What each load fetches: `tail` (default) from the last stored bar to `end`;
            `backfill` from `start` to the first stored bar; `full` both plus every gap in
            between; `local` nothing (only check what is stored).
        max_parallel: Series loaded at the same time (threads in this run), an integer ≥ 1.
            Default 4.
        features: Features computed after each successful load: `default` (the standard
            set, and the default), a JSON object such as `{"sma": [10, 50], "rsi": 14}`,
            the path of a `.yaml` file, or `none` to skip them.
        source: Source of the entries that name none: `synthetic` (default; offline), `files`
            or `ib` (Interactive Brokers; gateway given in `source_options`).
        store: Folder of the Parquet bar store; a relative path is taken from the worker's
            working directory (the checkout). Default `data`.
        start: First bar wanted, an ISO date or date-time such as `2024-01-02`, in each
            entry's exchange time zone. Empty (default): as each mode decides (see load-data).
        end: Last bar wanted, written like `start`; a date alone includes that day. Empty
            (default): up to now.
        seed: Seed of the `synthetic` source (the same seed gives the same bars). Default 0.
        delays: Seconds per request of the `synthetic` source for some symbols, as a JSON
            object such as `{"AAPL": 0.5}` (demos, tests); the others wait
            `source_options.delay` (default 0). Default: none.
        source_options: Options of `source` as a JSON object, e.g.
            `{"ib_host": "127.0.0.1", "ib_port": 4002, "client_id": 10}` for `ib` (each IB
            load takes the next client id) or `{"unknown": ["ZZZZ"]}` for `synthetic`.
            Default: none.

    Returns:
        The summary as a dict (in a Completed state with a warning message when some series
        failed), or a Failed state when all failed, or a Cancelled state when cancelled.
    """
    entries = parse_universe(universe)
    tfs = list(dict.fromkeys(parse_timeframe(t).name for t in (timeframes or DEFAULT_TIMEFRAMES)))
    load_mode = LoadMode.parse(mode).value
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise InvalidRequest(f"max_parallel must be an integer ≥ 1, got {max_parallel!r}")
    spec: dict[str, Any] | None = None
    if not (features is None or (isinstance(features, str) and features.lower() in _NO_FEATURES)):
        spec = dict(parse_feature_spec(resolve_spec(features)).to_dict())
    jobs = _jobs(entries, tfs, source, seed, delays, source_options)
    key = artifact_key("backfill")
    began = time.monotonic()
    with open_run(f"backfill {len(jobs)} series", [("backfill", 1)], key=key) as run:
        handle = run.handle
        queue = QueueTable(
            f"{key}-queue",
            [(j.entry.symbol, j.timeframe) for j in jobs],
            listeners=handle.row_sinks if handle is not None else (),
            publish=LiveTable(),  # one card on the run, updated in place
        )
        queue.flush()  # the table exists, all rows queued, before any work starts
        with run.tracker.stage("backfill", total=len(jobs), unit="Series") as span:
            runner = _Runner(
                queue, run.token, span, store=store, mode=load_mode, start=start, end=end,
                spec=spec, min_interval=handle.min_interval if handle else None,
            )  # fmt: skip
            runner._update_detail()
            workers = min(max_parallel, len(jobs))
            with ThreadPoolExecutor(workers, thread_name_prefix="candleflow-backfill") as pool:
                pending = {
                    pool.submit(contextvars.copy_context().run, runner.run, job) for job in jobs
                }
                propagated = False
                while pending:
                    _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    if run.token.cancelled and not propagated:
                        runner.cancel_all(run.token.reason or "backfill cancelled")
                        propagated = True
                    queue.publish()
        queue.flush()
        rows = queue.rows()
        counts = queue.counts()
        for row in rows:
            run.tracker.count("rows", row.rows)
            run.tracker.count("api_calls", row.api_calls)
        wall = time.monotonic() - began
        summary: dict[str, Any] = {
            "series": len(rows),
            "done": counts["done"],
            "failed": counts["failed"],
            "cancelled": counts["cancelled"],
            "wall_s": round(wall, 3),
            "serial_s": round(sum(r.duration for r in rows), 3),
            "rows": [
                r.record()
                | {"duration_s": round(r.duration, 3), "flow_runs": runner.flow_runs.get(r.key, [])}
                for r in rows
            ],
        }
        if not run.token.cancelled and counts["done"]:
            run.tracker.complete()
        if handle is not None:
            handle.summary = summary
    failed = [r for r in rows if r.status == "failed"]
    title = (
        f"backfill summary: {counts['done']} done, {counts['failed']} failed, "
        f"{counts['cancelled']} cancelled in {wall:.1f} s"
    )
    publish_table(f"{key}-summary", title, [r.record() for r in rows])
    log = get_run_logger()
    for row in failed:
        log.warning("%s %s failed: %s", row.symbol, row.timeframe, row.reason)
    if run.token.cancelled:
        return cancelled_state(
            f"backfill {cancel_cause(run)}: {counts['done']} done, {counts['failed']} failed, "
            f"{counts['cancelled']} cancelled in {wall:.1f} s"
        )
    if failed and not counts["done"]:
        return Failed(message=f"every series failed; first: {failed[0].symbol} "
                      f"{failed[0].timeframe}: {failed[0].reason}")  # fmt: skip
    if failed:
        names = ", ".join(f"{r.symbol} {r.timeframe}" for r in failed)
        return Completed(message=f"{len(failed)} of {len(rows)} series failed ({names})",
                         data=summary)  # fmt: skip
    return summary
