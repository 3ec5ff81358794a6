"""Cancellation as Prefect delivers it, for our flow runs: a watcher that turns a CANCELLING
state into the core's CancelToken (in-process runs are never interrupted by Prefect, DESIGN §8),
SIGTERM (how a worker or ``serve`` stops a deployment run) as a clean stop, the wording of how a
run was cancelled, and the Cancelled state a flow returns — kept final even though a runner
force-sets its own afterwards (:func:`keep_final_state`)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from candleflow.progress import CancelToken

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

    from tasks.progress import RunContext

__all__ = [
    "API_CANCEL_REASON",
    "SIGTERM_REASON",
    "CancelWatcher",
    "cancel_cause",
    "cancelled_state",
    "keep_final_state",
    "restore_final_state",
    "sigterm_sets_token",
]

logger = logging.getLogger(__name__)

_STOP_STATES = frozenset({"CANCELLING", "CANCELLED"})
#: Cancel-token reasons set here (they end up in task and flow state messages).
API_CANCEL_REASON = "cancelled through the Prefect API"
SIGTERM_REASON = "stopped by SIGTERM"
#: Seconds a cancelled run's process absorbs a late SIGTERM (see :func:`sigterm_sets_token`).
LATE_SIGTERM_GRACE = 30.0


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


@contextlib.contextmanager
def sigterm_sets_token(
    token: CancelToken, *, late_grace: float = LATE_SIGTERM_GRACE
) -> Iterator[None]:
    """While the run lasts, the first SIGTERM sets the token (the run stops at the next segment
    and saves); a second one hands over to the handler installed before (Prefect's, which raises
    ``TerminationSignal``).

    A run that ends cancelled absorbs a SIGTERM for ``late_grace`` seconds after it: a worker
    cancelling through the API SIGTERMs the process as our watcher stops the run, and that
    signal may land after the run's last stage, while Prefect records its Cancelled state —
    handed to Prefect's handler there, it would turn a clean cancel into a crash.
    """
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
        if token.cancelled and late_grace > 0:
            signal.signal(signal.SIGTERM, _absorbing(previous, time.monotonic() + late_grace))
        else:
            signal.signal(signal.SIGTERM, previous)


def _absorbing(previous: Any, until: float) -> Callable[[int, FrameType | None], None]:
    """A SIGTERM handler that ignores the signal until ``until`` (monotonic), then puts
    ``previous`` back and hands the signal to it."""

    def on_late_sigterm(signum: int, frame: FrameType | None) -> None:
        if time.monotonic() < until:
            logger.info("SIGTERM after a clean cancel: the run is already stopping")
            return
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.raise_signal(signum)  # the default action, as if never caught

    return on_late_sigterm


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

    code = "import sys; from tasks.cancel import restore_final_state; " \
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
    unreachable_after: float = 60.0,
) -> bool:
    """Once a Cancelled state follows the run's ``Cancelled(message)``, set ours again; True if
    it did. Leaves the run alone when a state of another type follows ours (a retry, say) or
    nothing follows within ``timeout`` seconds; API errors are retried until then (or until the
    API has failed for ``unreachable_after`` seconds in a row), and the last one is logged to the
    run's logs. ``client`` is a sync Prefect client (default: a new one).
    """
    from prefect.states import Cancelled

    run_id = UUID(str(flow_run_id))
    failure: Exception | None = None
    failing_since: float | None = None
    with contextlib.ExitStack() as stack:
        if client is None:
            from prefect.client.orchestration import get_client

            client = stack.enter_context(get_client(sync_client=True))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if failing_since is not None and time.monotonic() - failing_since > unreachable_after:
                break  # the API is gone (e.g. the server stopped): nothing left to keep
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
                failing_since = None
            except Exception as exc:
                failure = exc
                failing_since = failing_since if failing_since is not None else time.monotonic()
            time.sleep(interval)
    if failure is not None:
        from prefect.logging.handlers import APILogHandler
        from prefect.logging.loggers import flow_run_logger

        flow_run_logger(flow_run_id=run_id).warning(
            "could not restore the final state %r: %s", message, failure
        )
        APILogHandler().flush()
    return False
