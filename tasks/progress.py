"""The thin adapter between the core's progress/cancellation and Prefect (DESIGN §3).

While a flow runs, :func:`open_run` holds the run's
:class:`~candleflow.progress.ProgressTracker` and :class:`~candleflow.progress.CancelToken` in a
context variable (tasks reach them with :func:`current_run`), and wires them to Prefect:

- :class:`ArtifactSink` keeps ONE progress artifact per flow run up to date from the tracker's
  events — throttled (≥ 0.5 s apart and only on a visible change; the final value always goes
  out) — with a description carrying the percent (two decimals), stage, micro-stage, counters
  and ETA (:func:`~candleflow.progress.wording.describe_progress`);
- cancellation (:mod:`tasks.cancel`): a watcher of the run's state, SIGTERM as a clean stop;
- logs (:mod:`tasks.logs`): our loggers reach the run's logs; a clean cancel is no error;
- :func:`publish_summary` and :func:`publish_table`: the run's summary and table artifacts;
  :class:`LiveTable`: ONE table artifact per run updated in place (the backfill queue).

A caller that starts a flow in-process (the CLI, tests) enters :func:`progress_context` first to
add its own sinks (a Rich bar) and to get a handle with the token it may cancel, the flow run id
and the final summary.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from candleflow.progress import CancelToken, ProgressEvent, ProgressTracker, Sink, Span
from candleflow.progress.queue import QueueRow
from candleflow.progress.wording import describe_progress
from tasks.cancel import CancelWatcher, sigterm_sets_token
from tasks.logs import own_logs_to_prefect, quiet_clean_cancels

logger = logging.getLogger(__name__)

__all__ = [
    "ArtifactSink",
    "LiveTable",
    "RunContext",
    "RunHandle",
    "artifact_key",
    "current_run",
    "open_run",
    "progress_context",
    "publish_summary",
    "publish_table",
]

# ----------------------------------------------------------------------------- artifact sink


class ArtifactSink:
    """Keeps one Prefect progress artifact in step with a tracker's events.

    The artifact is created by :meth:`start` (or on the first event). Later events update it
    when at least ``min_interval`` seconds passed since the last send (the creation counts) *and*
    what is shown (the percentage to two decimals, or the description) changed; a final
    (done/cancelled) event always goes out, and :meth:`close` sends the last event if a throttled
    one is still pending. ``create``/``update`` default to Prefect's
    ``create_progress_artifact``/``update_progress_artifact``.

    With ``background`` (the default) the creation and the updates are sent from a thread of
    their own, in order, the latest value winning, so neither a slow API nor the round trips
    themselves hold up the work or the other sinks (a terminal bar); :meth:`close` waits until
    everything is out — the flow returns after its last value is in the API. That thread holds
    the creation back ``first_delay`` seconds (default ``min_interval``) and then creates the
    artifact with the latest value, or at once on a final event or :meth:`close`: a run that ends
    within it makes one request (its final value) instead of two, and no request competes with
    the run's first stages for the API and the CPU.
    """

    def __init__(
        self,
        key: str | None = None,
        *,
        min_interval: float = 0.5,
        create: Callable[..., UUID] | None = None,
        update: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        first_delay: float | None = None,
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
        self._created = False  # the creation was sent (or handed to the sender)
        self._first_delay = min_interval if first_delay is None else first_delay
        self._sender = _LatestSender(self._send_update) if background else None

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._final:
                return
            final = event.done or event.cancelled
            if event.cancelled and self._cancelled_at is None:
                self._cancelled_at = event.percentage
            shown = self._shown(event)
            now = self._clock()
            # While the sender holds the creation back, every value only replaces the one it
            # will create the artifact with: no request, no throttle.
            holding = self._sender is not None and self._sender.holding
            if self._created and not final and not holding:
                if shown == self._sent:
                    self._pending = None
                    return
                if now - self._sent_at < self._min_interval:
                    self._pending = event
                    return
            self._send(event, shown, now)
            self._final = event.done
            if final and self._sender is not None:
                self._sender.release()

    def start(self, description: str) -> None:
        """Create the artifact at 0 % — in the background, ``first_delay`` later with the latest
        value by then; the next update follows ``min_interval`` after that at the earliest."""
        with self._lock:
            if not self._created:
                if self._sender is not None:
                    self._sender.hold(self._first_delay)
                self._put(0.0, description)
                self._sent, self._sent_at = (0.0, description), self._clock()

    def close(self) -> None:
        """Send the last throttled event, if any, and wait until every update is out (call when
        the run ends)."""
        with self._lock:
            if self._pending is not None and not self._final:
                event = self._pending
                self._send(event, self._shown(event), 0.0)
        if self._sender is not None:
            self._sender.release()
            self._sender.close()

    def _shown(self, event: ProgressEvent) -> tuple[float, str]:
        # After a cancel the run still merges and saves, and the tracker counts the stopped
        # stages as done; the artifact keeps showing how far the run got when it was cancelled.
        pct = self._cancelled_at if self._cancelled_at is not None else event.percentage
        return round(pct, 2), describe_progress(event, pct)

    def _send(self, event: ProgressEvent, shown: tuple[float, str], now: float) -> None:
        pct = self._cancelled_at if self._cancelled_at is not None else event.percentage
        self._put(float(pct), shown[1])
        self._sent, self._sent_at, self._pending = shown, now, None

    def _put(self, progress: float, description: str) -> None:
        # With a sender the API call leaves the tracker's thread (the work's): a slow API delays
        # the artifact, never the work or the other sinks; close() waits for the last value.
        self._created = True
        if self._sender is None:
            self._send_update(progress, description)
        else:
            self._sender.put(progress, description)

    def _send_update(self, progress: float, description: str) -> None:
        if self.artifact_id is None:
            self.artifact_id = self._create(
                progress=progress, key=self.key, description=description
            )
            return
        self._update(self.artifact_id, progress=progress, description=description)
        self.updates += 1


class _LatestSender:
    """Calls ``send(*item)`` from one background thread for the latest item put; items put
    while a send is under way replace each other (the latest value wins). The thread runs in
    the context of its first ``put`` (Prefect's settings and client live in context variables).
    """

    def __init__(self, send: Callable[[float, str], None]) -> None:
        self._send = send
        self._cond = threading.Condition()
        self._latest: tuple[float, str] | None = None
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._hold_until: float | None = None  # time.monotonic() before which nothing is sent

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the items put meanwhile replace each other), or until
        :meth:`release`."""
        with self._cond:
            self._hold_until = time.monotonic() + seconds if seconds > 0 else None

    def release(self) -> None:
        """End the hold now."""
        with self._cond:
            self._hold_until = None
            self._cond.notify_all()

    @property
    def holding(self) -> bool:
        """Whether the hold is still on (what is put now is sent when it ends)."""
        with self._cond:
            return self._hold_until is not None and time.monotonic() < self._hold_until

    def put(self, progress: float, description: str) -> None:
        with self._cond:
            closed = self._closed
            if not closed:
                self._latest = (progress, description)
        if closed:  # after the run's end: nobody is left to wait for, send it here
            self._send(progress, description)
            return
        with self._cond:
            if self._thread is None:
                context = contextvars.copy_context()
                self._thread = threading.Thread(
                    target=context.run, args=(self._run,), name="progress-artifact", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until the latest item put so far has been sent."""
        with self._cond:
            while (self._latest is not None or self._busy) and self._thread is not None:
                self._cond.wait()

    def close(self) -> None:
        self.drain()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._latest is None or self._hold_until is not None):
                    if self._hold_until is None:
                        self._cond.wait()
                    elif (left := self._hold_until - time.monotonic()) > 0:
                        self._cond.wait(left)
                    else:
                        self._hold_until = None
                if self._latest is None:
                    return
                item, self._latest, self._busy = self._latest, None, True
            try:
                self._send(*item)
            except Exception:  # the API unreachable for a moment: the next value will tell
                logger.warning("progress artifact update failed", exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


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
        stack.enter_context(sigterm_sets_token(token))
        if flow_run_id is not None:
            quiet_clean_cancels(flow_run_id)
            stack.enter_context(own_logs_to_prefect())
            watcher = CancelWatcher(flow_run_id, token, interval=watch_interval).start()
            stack.callback(watcher.stop)
        if handle is not None:
            handle.started.set()
            stack.callback(handle.finished.set)
        yield run


# ----------------------------------------------------------------------------- summary artifact


def publish_summary(
    key: str,
    title: str,
    rows: Sequence[tuple[str, object]],
    images: Sequence[tuple[str, str]] = (),
) -> UUID | None:
    """A markdown artifact with a two-column table of what the run did, then ``images`` as
    (caption, URL) — a ``data:`` URI shows in the UI on any machine (DESIGN §8)."""
    from prefect.artifacts import create_markdown_artifact

    lines = [f"### {title}", "", "| | |", "|---|---|"]
    for name, value in rows:
        text = str(value).replace("|", "\\|").replace("\n", "<br>")
        lines.append(f"| {name} | {text} |")
    for caption, url in images:
        lines += ["", f"![{caption}]({url})"]
    artifact_id = create_markdown_artifact(markdown="\n".join(lines), key=key, description=title)
    return artifact_id if isinstance(artifact_id, UUID) else None


def publish_table(key: str, title: str, rows: Sequence[Mapping[str, object]]) -> UUID | None:
    """A table artifact (a new version under ``key``: tables are not updatable in place)."""
    from prefect.artifacts import create_table_artifact

    artifact_id = create_table_artifact(table=[dict(r) for r in rows], key=key, description=title)
    return artifact_id if isinstance(artifact_id, UUID) else None


class LiveTable:
    """One table artifact per run, kept current in place: the first call creates it (tied to the
    flow run whose context calls), later calls PATCH its data and description.

    Prefect's helpers only publish a new *version* of a table under its key, and every version
    linked to a run is one more card on the run's Artifacts tab (27 cards for a 12-series
    backfill); the API's artifact update takes any ``data``, so the run keeps one card and the
    key's page (its latest version is this artifact) shows the same table. Call it as a
    :class:`~candleflow.progress.queue.QueueTable` ``publish`` callable.
    """

    def __init__(self) -> None:
        self.artifact_id: UUID | None = None
        self.updates = 0

    def __call__(self, key: str, title: str, rows: Sequence[Mapping[str, object]]) -> UUID | None:
        import json

        from prefect.artifacts import TableArtifact
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        table = [dict(r) for r in rows]
        if self.artifact_id is None:
            self.artifact_id = publish_table(key, title, table)
            return self.artifact_id
        data = json.dumps(TableArtifact._sanitize(table))
        with get_client(sync_client=True) as client:
            client.update_artifact(self.artifact_id, ArtifactUpdate(data=data, description=title))
        self.updates += 1
        return self.artifact_id
