"""The thin adapter between the core's progress/cancellation and Prefect (DESIGN §3).

This is the only module that knows both sides. While a flow runs, :func:`open_run` holds the
run's :class:`~candleflow.progress.ProgressTracker` and :class:`~candleflow.progress.CancelToken`
in a context variable (tasks reach them with :func:`current_run`), and wires them to Prefect:

- :class:`ArtifactSink` keeps ONE progress artifact per flow run up to date from the tracker's
  events — throttled (≥ 0.5 s apart and only on a visible change; the final value always goes
  out) — with a description carrying the stage and micro-stage, e.g.
  ``Fetching segment 3/8: 2024-01-01 → 2024-01-31 · 1,250 bars · 4 API calls``;
- :class:`CancelWatcher` polls the flow run's state and sets the token when it enters CANCELLING
  (in-process runs are never interrupted by Prefect, DESIGN §8);
- SIGTERM (how a worker or ``serve`` cancels a deployment run) sets the token instead of raising
  ``TerminationSignal`` in the middle of a write; a second SIGTERM falls back to Prefect's handler;
- our loggers (``candleflow``, ``tasks``, ``flows``) are sent to the run's Prefect logs, and a
  filter on Prefect's run loggers keeps a clean cancel of our runs from being logged as an error;
- :func:`cancelled_state` is how a flow ends cancelled: one message saying what was saved and how
  the run was cancelled (:func:`cancel_cause`), which stays the run's final state even though a
  worker or ``serve`` force-sets a generic Cancelled state of its own after the process exits
  (:func:`keep_final_state`).

A caller that starts a flow in-process (the CLI, tests) enters :func:`progress_context` first to
add its own sinks (a Rich bar) and to get a handle with the token it may cancel, the flow run id
and the final summary.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from candleflow.progress import (
    CancelToken,
    ProgressEvent,
    ProgressTracker,
    Sink,
    Span,
    format_counter,
    format_duration,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

__all__ = [
    "ArtifactSink",
    "CancelWatcher",
    "HoldOnCancel",
    "QueueRow",
    "QueueTable",
    "RowProgress",
    "RunContext",
    "RunHandle",
    "cancel_cause",
    "cancelled_state",
    "current_run",
    "describe_event",
    "keep_final_state",
    "open_run",
    "progress_context",
    "publish_summary",
    "publish_table",
    "read_run_artifacts",
    "read_run_progress",
    "restore_final_state",
]

logger = logging.getLogger(__name__)

#: Stage name → what the artifact says while it runs.
STAGE_VERBS: dict[str, str] = {
    "validate_symbol": "Validating symbol",
    "check_head_timestamp": "Checking head timestamp",
    "load_local": "Reading stored bars",
    "analyze_gaps": "Analyzing gaps",
    "plan_segments": "Planning segments",
    "fetch_segments": "Fetching",
    "merge_bars": "Merging bars",
    "save_bars": "Saving bars",
    "compute_features": "Computing features",
    "backfill": "Backfilling",
    "read_bars": "Reading stored bars",
    "report": "Writing the report",
}
_STOP_STATES = frozenset({"CANCELLING", "CANCELLED"})
#: Cancel-token reasons set here (they end up in task and flow state messages).
API_CANCEL_REASON = "cancelled through the Prefect API"
SIGTERM_REASON = "stopped by SIGTERM"
#: The loggers candleflow owns (CONVENTIONS 7): the core, the tasks and the flows.
OWN_LOGGERS: tuple[str, ...] = ("candleflow", "tasks", "flows")


def describe_event(event: ProgressEvent, percentage: float | None = None) -> str:
    """The artifact description: stage + micro-stage, bars, API calls (and the end state)."""
    if event.cancelled:
        pct = event.percentage if percentage is None else percentage
        head = f"Cancelled at {pct:.2f}%"
    elif event.done:
        head = f"Done in {format_duration(event.elapsed)}"
    else:
        verb = STAGE_VERBS.get(event.stage, event.stage.replace("_", " ").capitalize())
        detail = event.detail
        if event.stage == "compute_features" and event.items_total:
            head = f"{feature_position(event)}: {detail}" if detail else feature_position(event)
        elif event.stage == "optimize":
            head = optimize_position(event)
        elif event.stage == "fetch_segments":
            # "Segment 3/8: …" reads as "Fetching segment 3/8: …".
            head = f"{verb} {detail[:1].lower()}{detail[1:]}" if detail else f"{verb} segments"
        else:
            head = f"{verb}: {detail}" if detail else verb
    parts = [head]
    if "rows" in event.counters:
        parts.append(format_counter("bars", event.counters["rows"]))
    if "api_calls" in event.counters:
        parts.append(format_counter("api_calls", event.counters["api_calls"]))
    if event.counters.get("failed_segments"):
        parts.append(format_counter("failed_segments", event.counters["failed_segments"]))
    return " · ".join(parts)


def feature_position(event: ProgressEvent) -> str:
    """ "Feature 4/15" from a compute_features event (features advance by their columns)."""
    return f"Feature {event.items_done:,}/{event.items_total or 0:,}"


def optimize_position(event: ProgressEvent) -> str:
    """ "Iteration 5/50 · Candle 7,300/10,000" from an optimize event (candles while a backtest
    runs in this process; only iterations between batches and on Dask)."""
    parent = event.parent_position
    if not parent:
        total = f"/{event.items_total:,}" if event.items_total is not None else ""
        parent = f"Iteration {event.items_done:,}{total}"
    return " · ".join(p for p in (parent, event.child_position) if p)


# ----------------------------------------------------------------------------- artifact sink


class ArtifactSink:
    """Keeps one Prefect progress artifact in step with a tracker's events.

    The artifact is created on the first event. Later events update it when at least
    ``min_interval`` seconds passed since the last update *and* what is shown (the percentage to
    one decimal, or the description) changed; a final (done/cancelled) event always goes out, and
    :meth:`close` sends the last event if a throttled one is still pending. ``create``/``update``
    default to Prefect's ``create_progress_artifact``/``update_progress_artifact``.
    """

    def __init__(
        self,
        key: str | None = None,
        *,
        min_interval: float = 0.5,
        create: Callable[..., UUID] | None = None,
        update: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        self.key = key
        self.artifact_id: UUID | None = None
        self.updates = 0
        self._create: Callable[..., Any] = create or create_progress_artifact
        self._update: Callable[..., Any] = update or update_progress_artifact
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: tuple[float, str] | None = None
        self._sent_at = -float("inf")
        self._pending: ProgressEvent | None = None
        self._final = False
        self._cancelled_at: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._final:
                return
            final = event.done or event.cancelled
            if event.cancelled and self._cancelled_at is None:
                self._cancelled_at = event.percentage
            shown = self._shown(event)
            now = self._clock()
            if self.artifact_id is not None and not final:
                if shown == self._sent:
                    self._pending = None
                    return
                if now - self._sent_at < self._min_interval:
                    self._pending = event
                    return
            self._send(event, shown, now)
            self._final = event.done

    def start(self, description: str) -> None:
        """Create the artifact at 0 % (so it exists, tied to the flow run, before any stage)."""
        with self._lock:
            if self.artifact_id is None:
                self.artifact_id = self._create(progress=0.0, key=self.key, description=description)
                self._sent, self._sent_at = (0.0, description), -float("inf")

    def close(self) -> None:
        """Send the last throttled event, if any (call when the run ends)."""
        with self._lock:
            if self._pending is not None and not self._final:
                event = self._pending
                self._send(event, self._shown(event), 0.0)

    def _shown(self, event: ProgressEvent) -> tuple[float, str]:
        # After a cancel the run still merges and saves, and the tracker counts the stopped
        # stages as done; the artifact keeps showing how far the run got when it was cancelled.
        pct = self._cancelled_at if self._cancelled_at is not None else event.percentage
        return round(pct, 1), describe_event(event, pct)

    def _send(self, event: ProgressEvent, shown: tuple[float, str], now: float) -> None:
        pct = self._cancelled_at if self._cancelled_at is not None else event.percentage
        progress, description = float(pct), shown[1]
        if self.artifact_id is None:
            self.artifact_id = self._create(
                progress=progress, key=self.key, description=description
            )
        else:
            self._update(self.artifact_id, progress=progress, description=description)
            self.updates += 1
        self._sent, self._sent_at, self._pending = shown, now, None


class HoldOnCancel:
    """Wraps a sink: after a cancel, events keep the percentage reached when it came.

    A cancelled run still merges and saves, and the tracker counts the stopped stages as done;
    a display should show how far the run got, not a near-complete bar.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._held: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.cancelled:
            if self._held is None:
                self._held = event.percentage
            event = dataclasses.replace(event, percentage=self._held)
        self.sink(event)


# ----------------------------------------------------------------------------- cancel watcher


class CancelWatcher:
    """A daemon thread that sets ``token`` once the flow run is CANCELLING or CANCELLED.

    ``read_state(flow_run_id)`` returns the state type name; by default it asks the Prefect API.
    Read errors are logged (once) and polling goes on. The thread runs in a copy of the context
    that created the watcher, so its log lines belong to that flow run (Prefect's API log handler
    finds the run in the context).
    """

    def __init__(
        self,
        flow_run_id: UUID,
        token: CancelToken,
        *,
        interval: float = 0.5,
        read_state: Callable[[UUID], str | None] | None = None,
    ) -> None:
        self.flow_run_id = flow_run_id
        self.token = token
        self.interval = interval
        self._read_state = read_state
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run,),
            name=f"candleflow-cancel-watcher-{flow_run_id}",
            daemon=True,
        )

    def start(self) -> CancelWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with contextlib.ExitStack() as stack:
            read = self._read_state
            if read is None:
                from prefect.client.orchestration import get_client

                client = stack.enter_context(get_client(sync_client=True))

                def read(flow_run_id: UUID) -> str | None:
                    state = client.read_flow_run(flow_run_id).state
                    return None if state is None else str(state.type.value)

            failed = False
            while not self._stop.wait(self.interval) and not self.token.cancelled:
                try:
                    state_type = read(self.flow_run_id)
                except Exception:
                    if not failed:
                        logger.warning("cannot read the state of flow run %s", self.flow_run_id,
                                       exc_info=True)  # fmt: skip
                        failed = True
                    continue
                if state_type in _STOP_STATES:
                    logger.warning("flow run %s is %s: stopping at the next segment boundary",
                                   self.flow_run_id, state_type)  # fmt: skip
                    self.token.cancel(API_CANCEL_REASON)
                    return


# ----------------------------------------------------------------------------- run context


@dataclass
class RunHandle:
    """What an in-process caller shares with the flow run it starts (see progress_context)."""

    token: CancelToken
    extra_sinks: tuple[Sink, ...] = ()
    min_interval: float | None = None
    flow_run_id: UUID | None = None
    summary: dict[str, object] | None = None
    row_sinks: tuple[Callable[[QueueRow], None], ...] = ()
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class RunContext:
    """The running flow's tracker and token (what tasks reach through current_run())."""

    tracker: ProgressTracker
    token: CancelToken
    flow_run_id: UUID | None = None
    artifact: ArtifactSink | None = None
    handle: RunHandle | None = None
    #: Open spans the flow shares with its tasks by name (the optimize flow's "optimize" stage,
    #: under which thread-runner tasks open candle child spans); empty outside a flow.
    spans: dict[str, Span] = field(default_factory=dict)


_CALLER: contextvars.ContextVar[RunHandle | None] = contextvars.ContextVar(
    "candleflow_caller", default=None
)
_RUN: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "candleflow_run", default=None
)


@contextlib.contextmanager
def progress_context(
    *,
    extra_sinks: Sequence[Sink] = (),
    token: CancelToken | None = None,
    min_interval: float | None = None,
    row_sinks: Sequence[Callable[[QueueRow], None]] = (),
) -> Iterator[RunHandle]:
    """Enter before calling a flow in-process: its run gets these sinks and this token.

    ``min_interval`` overrides the tracker's event throttle (0 → every event, for tests); the
    Prefect artifact keeps its own 0.5 s throttle whatever it is. ``row_sinks`` get every
    change of a backfill's queue rows (see :class:`QueueTable`), e.g. for one terminal row each.
    """
    handle = RunHandle(
        token=token or CancelToken(),
        extra_sinks=tuple(extra_sinks),
        min_interval=min_interval,
        row_sinks=tuple(row_sinks),
    )
    reset = _CALLER.set(handle)
    try:
        yield handle
    finally:
        _CALLER.reset(reset)


def current_run() -> RunContext:
    """The running flow's context; outside a flow (``task.fn()`` in tests) a silent one."""
    run = _RUN.get()
    if run is None:
        tracker = ProgressTracker.null()
        return RunContext(tracker, tracker.cancel_token)
    return run


def _flow_run_id() -> UUID | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run.id if ctx is not None and ctx.flow_run is not None else None


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from free text."""
    text = "-".join(parts).lower()
    return "-".join("".join(c if c.isalnum() else "-" for c in text).split("-")).strip("-") or "run"


@contextlib.contextmanager
def open_run(
    operation: str,
    stages: Sequence[tuple[str, float]],
    *,
    key: str | None = None,
    min_interval: float = 0.25,
    watch_interval: float = 0.5,
) -> Iterator[RunContext]:
    """Set up progress and cancellation for the current flow run (see the module docstring)."""
    handle = _CALLER.get()
    token = handle.token if handle is not None else CancelToken()
    flow_run_id = _flow_run_id()
    artifact = ArtifactSink(key) if flow_run_id is not None else None
    sinks: list[Sink] = [artifact] if artifact is not None else []
    if handle is not None:
        sinks.extend(handle.extra_sinks)
        handle.flow_run_id = flow_run_id
        if handle.min_interval is not None:
            min_interval = handle.min_interval
    tracker = ProgressTracker(
        operation, sinks, stages=stages, min_interval=min_interval, cancel_token=token
    )
    run = RunContext(tracker, token, flow_run_id, artifact, handle)
    reset = _RUN.set(run)
    with contextlib.ExitStack() as stack:
        stack.callback(_RUN.reset, reset)
        if artifact is not None:
            artifact.start(f"Starting {operation}")
            stack.callback(artifact.close)
        stack.enter_context(_sigterm_sets(token))
        if flow_run_id is not None:
            _quiet_clean_cancels(flow_run_id)
            stack.enter_context(_core_logs_to_prefect())
            watcher = CancelWatcher(flow_run_id, token, interval=watch_interval).start()
            stack.callback(watcher.stop)
        if handle is not None:
            handle.started.set()
            stack.callback(handle.finished.set)
        yield run


@contextlib.contextmanager
def _sigterm_sets(token: CancelToken) -> Iterator[None]:
    """While the run lasts, the first SIGTERM sets the token (the run stops at the next segment
    and saves); a second one hands over to the handler installed before (Prefect's, which raises
    ``TerminationSignal``)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread; a watcher still sees API cancels
        return
    previous = signal.getsignal(signal.SIGTERM)
    received = 0

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Counted, not inferred from the token: a worker cancelling a run first sets the state
        # (the watcher may already have set the token) and then sends one SIGTERM.
        nonlocal received
        received += 1
        if received > 1 and callable(previous):
            previous(signum, frame)
            return
        logger.warning("SIGTERM received: stopping at the next segment boundary")
        token.cancel(SIGTERM_REASON)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _core_logs_to_prefect() -> Iterator[None]:
    """Send the records of our loggers (:data:`OWN_LOGGERS`) to the run's Prefect logs, each
    unless already configured (``PREFECT_LOGGING_EXTRA_LOGGERS=candleflow,tasks,flows``, as the
    deployments in prefect.yaml set it)."""
    from prefect.logging.handlers import APILogHandler

    added: list[tuple[logging.Logger, APILogHandler]] = []
    for name in OWN_LOGGERS:
        own = logging.getLogger(name)
        if not any(isinstance(h, APILogHandler) for h in own.handlers):
            added.append((own, APILogHandler()))
            own.addHandler(added[-1][1])
    try:
        yield
    finally:
        for own, handler in added:
            own.removeHandler(handler)


# ----------------------------------------------------------------------------- ending cancelled

#: Our flow runs in this process (ids as Prefect's log records carry them), for the filter below;
#: insertion-ordered so that a long-lived process forgets the oldest.
_OUR_RUNS: dict[str, None] = {}
_OUR_RUNS_MAX = 10_000
_OUR_RUNS_LOCK = threading.Lock()
#: Prefect's loggers of flow and task runs (what the UI shows as a run's logs).
RUN_LOGGERS: tuple[str, ...] = ("prefect.flow_runs", "prefect.task_runs")


class _CleanCancelFilter(logging.Filter):
    """On Prefect's run loggers: a clean cancel of one of our runs is not an error.

    Prefect logs two ERROR records when a flow ends by returning a Cancelled state, both only
    because the state is not Completed: the task engine logs each task that did not complete as
    ``Finished in state Cancelled(…)`` at ERROR (``task_engine.py``, ``log_finished_message``),
    and the flow engine's ``run_flow``, which the worker's entrypoint gives the run's logger, logs
    the ``CancelledRun`` that ``run_flow_sync`` raises from the Cancelled state's result as
    "Engine execution exited with unexpected exception" (``flow_engine.py``). For our runs the
    first becomes INFO (the level at which the flow engine logs its own final state) and the
    second is dropped (the flow has logged why it was cancelled, and the engine logs "Finished in
    state Cancelled(…)" at INFO). Records of other runs pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if str(getattr(record, "flow_run_id", None)) not in _OUR_RUNS:
            return True
        from prefect.exceptions import CancelledRun

        if record.exc_info and isinstance(record.exc_info[1], CancelledRun):
            return False
        if str(record.msg).startswith("Finished in state Cancelled("):
            if not logging.getLogger(record.name).isEnabledFor(logging.INFO):
                return False
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


_CLEAN_CANCEL_FILTER = _CleanCancelFilter()


def _quiet_clean_cancels(flow_run_id: UUID) -> None:
    """Put one of our flow runs under :class:`_CleanCancelFilter` (installed once per process)."""
    with _OUR_RUNS_LOCK:
        _OUR_RUNS[str(flow_run_id)] = None
        while len(_OUR_RUNS) > _OUR_RUNS_MAX:
            del _OUR_RUNS[next(iter(_OUR_RUNS))]
        for name in RUN_LOGGERS:
            run_logger = logging.getLogger(name)
            if _CLEAN_CANCEL_FILTER not in run_logger.filters:
                run_logger.addFilter(_CLEAN_CANCEL_FILTER)


def cancel_cause(run: RunContext) -> str:
    """How the run was cancelled, worded for its final state message.

    "cancelled through the Prefect API (UI, CLI or client)" when the run went through a
    Cancelling state (the UI's Cancel button, ``prefect flow-run cancel``, a client) — also when a
    worker then stopped the process with SIGTERM; a message of that state goes in the
    parenthesis, or stands alone when it says how itself ("cancelled with `candleflow cancel`").
    Otherwise the cancel token's reason: "stopped by SIGTERM", "interrupted (Ctrl+C)", ….
    """
    if run.flow_run_id is not None:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                states = client.read_flow_run_states(run.flow_run_id)
        except Exception:
            logger.warning("cannot read the states of flow run %s", run.flow_run_id,
                           exc_info=True)  # fmt: skip
            states = []
        cancelling = [s for s in states if s.type.value == "CANCELLING"]
        if cancelling:
            note = (cancelling[-1].message or "").strip()
            if note.lower().startswith("cancelled "):
                return note
            return f"{API_CANCEL_REASON} ({note or 'UI, CLI or client'})"
    reason = run.token.reason.strip()
    if not reason:
        return "cancelled"
    if reason.split(" ", 1)[0] in {"cancelled", "stopped", "interrupted", "terminated"}:
        return reason
    return f"cancelled ({reason})"


def cancelled_state(message: str) -> State[Any]:
    """What a flow returns when cancelled: ``Cancelled(message=message)``, the message logged as a
    warning, and kept as the run's final state when a runner stops the run
    (:func:`keep_final_state`; top-level deployment runs only — nothing overrides the state of
    an in-process run or a subflow)."""
    from prefect import get_run_logger
    from prefect.context import FlowRunContext
    from prefect.states import Cancelled

    get_run_logger().warning(message)
    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx is not None else None
    if (
        flow_run is not None
        and flow_run.deployment_id is not None
        and flow_run.parent_task_run_id is None
    ):
        keep_final_state(flow_run.id, message)
    return Cancelled(message=message)


#: Seconds the keeper waits for a runner's state after ours: the runner's grace before SIGKILL
#: (30 s) plus the on_cancellation hooks it first runs in a new process, on a busy machine.
KEEP_TIMEOUT = 300.0


def keep_final_state(flow_run_id: UUID, message: str) -> None:
    """Keep ``Cancelled(message)`` the run's final state after its runner force-set its own.

    A deployment run cancelled through the API is stopped by its runner (a worker, or
    ``serve``), and the runner always has the last word: it SIGTERMs the flow's process group
    (our flow saves and returns its Cancelled state), waits for the group to exit (polling every
    3 s), runs the flow's on_cancellation hooks in a new process, then *force*-sets a Cancelled
    state of its own, "Flow run was cancelled successfully." (Prefect 3.8:
    ``runner/_cancellation_manager.py`` ``CancellationManager.cancel`` →
    ``runner/_cancel_finalizer.py`` ``finalize_cancelled_state`` →
    ``runner/_state_proposer.py`` ``propose_cancelled``, ``force=True``). No setting or hook runs
    after that, and nothing of the flow process is left. So a small detached process — its own
    session, out of the group the runner kills and waits for — runs :func:`restore_final_state`:
    once a Cancelled state lands after ours, it sets ours again. The one place that works around
    Prefect's runner: ``tests/e2e/test_worker_cancel.py`` fails when it stops working, and when
    Prefect's runner stops overriding the state (then this can go).
    """
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys; from tasks.progress import restore_final_state; " \
           "restore_final_state(sys.argv[1], sys.argv[2])"  # fmt: skip
    subprocess.Popen(
        [sys.executable, "-c", code, str(flow_run_id), message],
        cwd=Path(__file__).resolve().parents[1],  # where `tasks` is importable
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def restore_final_state(
    flow_run_id: UUID | str,
    message: str,
    *,
    client: Any = None,
    timeout: float = KEEP_TIMEOUT,
    interval: float = 0.5,
) -> bool:
    """Once a Cancelled state follows the run's ``Cancelled(message)``, set ours again; True if
    it did. Leaves the run alone when a state of another type follows ours (a retry, say) or
    nothing follows within ``timeout`` seconds; API errors are retried until then, and the last
    one is logged to the run's logs. ``client`` is a sync Prefect client (default: a new one).
    """
    from prefect.states import Cancelled

    run_id = UUID(str(flow_run_id))
    failure: Exception | None = None
    with contextlib.ExitStack() as stack:
        if client is None:
            from prefect.client.orchestration import get_client

            client = stack.enter_context(get_client(sync_client=True))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
                ours = [i for i, s in enumerate(states)
                        if s.is_cancelled() and s.message == message]  # fmt: skip
                later = states[ours[-1] + 1 :] if ours else []
                if later and not all(s.is_cancelled() for s in later):
                    return False
                if later:
                    client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
                    return True
            except Exception as exc:
                failure = exc
            time.sleep(interval)
    if failure is not None:
        from prefect.logging.handlers import APILogHandler
        from prefect.logging.loggers import flow_run_logger

        flow_run_logger(flow_run_id=run_id).warning(
            "could not restore the final state %r: %s", message, failure
        )
        APILogHandler().flush()
    return False


# ----------------------------------------------------------------------------- reading back


def read_run_artifacts(
    client: Any, flow_run_ids: Sequence[UUID], types: Sequence[str] = ("progress",)
) -> list[Any]:
    """Artifacts of the given flow runs, most recently updated first (a sync Prefect client)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    if not flow_run_ids:
        return []
    artifact_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=list(flow_run_ids)),
        type=ArtifactFilterType(any_=list(types)),
    )
    return list(
        client.read_artifacts(
            artifact_filter=artifact_filter, sort=ArtifactSort.UPDATED_DESC, limit=200, offset=0
        )
    )


def read_run_progress(client: Any, flow_run_ids: Sequence[UUID]) -> dict[UUID, tuple[float, str]]:
    """The progress (0–100) and description of each flow run's progress artifact."""
    found: dict[UUID, tuple[float, str]] = {}
    for artifact in read_run_artifacts(client, flow_run_ids):
        run_id, data = artifact.flow_run_id, artifact.data
        if run_id is not None and run_id not in found and isinstance(data, int | float):
            found[run_id] = (float(data), artifact.description or "")
    return found


# ----------------------------------------------------------------------------- summary artifact


def publish_summary(key: str, title: str, rows: Sequence[tuple[str, object]]) -> UUID | None:
    """A markdown artifact with a two-column table of what the run did."""
    from prefect.artifacts import create_markdown_artifact

    lines = [f"### {title}", "", "| | |", "|---|---|"]
    for name, value in rows:
        text = str(value).replace("|", "\\|").replace("\n", "<br>")
        lines.append(f"| {name} | {text} |")
    artifact_id = create_markdown_artifact(markdown="\n".join(lines), key=key, description=title)
    return artifact_id if isinstance(artifact_id, UUID) else None


def publish_table(key: str, title: str, rows: Sequence[Mapping[str, object]]) -> UUID | None:
    """A table artifact (a new version under ``key``: tables are not updatable in place)."""
    from prefect.artifacts import create_table_artifact

    artifact_id = create_table_artifact(table=[dict(r) for r in rows], key=key, description=title)
    return artifact_id if isinstance(artifact_id, UUID) else None


# ----------------------------------------------------------------------------- backfill queue

#: Row statuses in the order a series goes through them (the last three are final).
QUEUE_STATUSES: tuple[str, ...] = (
    "queued", "validating", "fetching", "engineering", "storing", "done", "failed", "cancelled",
)  # fmt: skip
FINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
#: Load stage → the row status shown while it runs.
_STAGE_STATUS: dict[str, str] = {
    "validate_symbol": "validating",
    "check_head_timestamp": "validating",
    "load_local": "fetching",
    "analyze_gaps": "fetching",
    "plan_segments": "fetching",
    "fetch_segments": "fetching",
    "merge_bars": "storing",
    "save_bars": "storing",
    "compute_features": "engineering",
}


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One symbol × timeframe of a backfill, as its queue table shows it."""

    symbol: str
    timeframe: str
    status: str = "queued"
    progress: float = 0.0
    detail: str = ""
    rows: int = 0
    api_calls: int = 0
    duration: float = 0.0
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.timeframe)

    def record(self) -> dict[str, object]:
        """The row as the table artifact stores it (plain JSON values)."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "status": self.status,
            "progress": f"{self.progress:.2f}%",
            "micro-stage": self.detail,
            "rows": self.rows,
            "API calls": self.api_calls,
            "duration": f"{self.duration:.2f} s",
            "reason": self.reason,
        }


class QueueTable:
    """The live queue of a backfill: rows updated from any thread, published as a table artifact.

    :meth:`update` changes a row and tells the ``listeners`` (e.g. a terminal display) at once;
    publishing is separate because an artifact belongs to the flow run whose context creates it,
    and rows change inside child runs: the backfill's own thread calls :meth:`publish` (throttled:
    at most every ``min_interval`` seconds, and only when something changed) while it waits, and
    :meth:`flush` at the end. Each publication is a new version under the same ``key``.
    """

    def __init__(
        self,
        key: str,
        series: Sequence[tuple[str, str]],
        *,
        title: str = "backfill queue",
        min_interval: float = 1.0,
        listeners: Sequence[Callable[[QueueRow], None]] = (),
        publish: Callable[[str, str, Sequence[Mapping[str, object]]], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.title = title
        self.publications = 0
        self._rows: dict[tuple[str, str], QueueRow] = {
            (symbol, tf): QueueRow(symbol, tf) for symbol, tf in series
        }
        self._min_interval = min_interval
        self._listeners = tuple(listeners)
        self._publish = publish or publish_table
        self._clock = clock
        self._lock = threading.Lock()
        self._dirty = True
        self._sent_at = -float("inf")

    def rows(self) -> list[QueueRow]:
        with self._lock:
            return list(self._rows.values())

    def row(self, symbol: str, timeframe: str) -> QueueRow:
        with self._lock:
            return self._rows[(symbol, timeframe)]

    def update(self, symbol: str, timeframe: str, **changes: Any) -> QueueRow:
        """Change fields of a row (a final status is never overwritten by a later event)."""
        with self._lock:
            old = self._rows[(symbol, timeframe)]
            if old.status in FINAL_STATUSES:
                return old
            status = changes.get("status", old.status)
            if status not in QUEUE_STATUSES:
                raise ValueError(f"unknown queue status {status!r}: use one of {QUEUE_STATUSES}")
            if "progress" in changes:  # never backwards
                changes["progress"] = max(old.progress, float(changes["progress"]))
            new = dataclasses.replace(old, **changes)
            if new == old:
                return old
            self._rows[(symbol, timeframe)] = new
            self._dirty = True
        for listener in self._listeners:
            try:
                listener(new)
            except Exception:
                logger.exception("queue row listener %r failed", listener)
        return new

    def counts(self) -> dict[str, int]:
        """How many rows are in each status."""
        counts = dict.fromkeys(QUEUE_STATUSES, 0)
        for row in self.rows():
            counts[row.status] += 1
        return counts

    def publish(self) -> bool:
        """Publish a new version if rows changed and ``min_interval`` passed; True if sent."""
        now = self._clock()
        with self._lock:
            if not self._dirty or now - self._sent_at < self._min_interval:
                return False
        return self.flush()

    def flush(self) -> bool:
        """Publish a new version now if anything changed since the last one."""
        with self._lock:
            if not self._dirty:
                return False
            records = [row.record() for row in self._rows.values()]
            self._dirty, self._sent_at = False, self._clock()
        counts = self.counts()
        summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        self._publish(self.key, f"{self.title}: {summary}", records)
        self.publications += 1
        return True


class RowProgress:
    """A sink for a child run's progress events that keeps one queue row (and the backfill's
    aggregate span) up to date.

    The child's 0–100 % maps onto ``[low, high]`` of the row (the load on 0–80, features on
    80–100); ``span`` (a child span of the backfill's stage with ``total=1000``) follows the row.
    """

    def __init__(
        self,
        queue: QueueTable,
        symbol: str,
        timeframe: str,
        *,
        low: float = 0.0,
        high: float = 100.0,
        span: Span | None = None,
        started: float | None = None,
        base: QueueRow | None = None,
    ) -> None:
        self.queue, self.symbol, self.timeframe = queue, symbol, timeframe
        self.low, self.high, self.span = low, high, span
        self.started = time.monotonic() if started is None else started
        self.base = base

    def __call__(self, event: ProgressEvent) -> None:
        progress = self.low + (self.high - self.low) * event.percentage / 100.0
        changes: dict[str, Any] = {
            "progress": round(progress, 2),
            "duration": time.monotonic() - self.started,
        }
        status = _STAGE_STATUS.get(event.stage)
        if status is not None and not (event.done or event.cancelled):
            changes["status"] = status
        if event.stage == "compute_features" and event.items_total:
            position = feature_position(event)
            changes["detail"] = f"{position}: {event.detail}" if event.detail else position
        elif event.stage:
            changes["detail"] = event.detail or STAGE_VERBS.get(event.stage, event.stage)
        base_rows = self.base.rows if self.base is not None else 0
        base_calls = self.base.api_calls if self.base is not None else 0
        if "rows" in event.counters:
            changes["rows"] = base_rows + event.counters["rows"]
        if "api_calls" in event.counters:
            changes["api_calls"] = base_calls + event.counters["api_calls"]
        row = self.queue.update(self.symbol, self.timeframe, **changes)
        if self.span is not None:
            self.span.update(done=int(row.progress * 10))
