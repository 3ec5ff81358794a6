"""Plumbing shared by the CLI's command modules: consoles, exit codes, input checks, and running
a flow in-process with a Rich progress display and Ctrl+C as a clean cancel.

Nothing here imports Prefect at module level: commands import flows lazily, so ``candleflow
--help`` stays instant and bad input is rejected before Prefect starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console

from candleflow.errors import InvalidRequest

if TYPE_CHECKING:
    from candleflow.progress import Sink
    from candleflow.progress.display import RichSink

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
DEFAULT_STORE = Path("data")

#: The flag that gives each parameter the core names in an ``InvalidRequest`` (its ``param``):
#: the one table of the CLI's words for them (see :func:`flagged`).
FLAGS: Mapping[str, str] = {
    "source": "--source", "path": "--path", "seed": "--seed", "delay": "--delay",
    "ib_host": "--ib-host", "ib_port": "--ib-port", "client_id": "--client-id",
    "time_scale": "--ib-time-scale", "method": "--method", "objective": "--objective",
    "iterations": "--iterations", "batch_size": "--batch-size", "concurrency": "--concurrency",
}  # fmt: skip

err = Console(stderr=True, soft_wrap=True)  # one error, one line


def out() -> Console:
    # Built per call so tests capturing stdout see the output.
    return Console()


def flagged(exc: InvalidRequest) -> str:
    """The one-line error for ``exc``, naming its parameter as the flag that gave it: "ib_port
    must be a TCP port 1-65535, got 0 (from --ib-port 0)", "… needs a path (give --path)"."""
    return exc.naming(FLAGS, given="from {name} {value}", missing="give {name}")


def check_store(store: Path) -> None:
    """Reject a --store that is not a usable folder (before any work starts)."""
    if store.exists() and not store.is_dir():
        raise InvalidRequest(f"store {store} is not a directory: give a folder for --store")
    if store.exists() and not os.access(store, os.R_OK | os.W_OK | os.X_OK):
        raise InvalidRequest(f"store {store} is not readable and writable: check its permissions")


@contextlib.contextmanager
def sigint_cancels(token: Any) -> Iterator[None]:
    """First Ctrl+C sets the cancel token (clean stop, data saved); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    presses = 0

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        token.cancel("interrupted (Ctrl+C)")
        err.print("cancelling at the next segment… (Ctrl+C again to abort)", markup=False)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def connect_api() -> str:
    """The Prefect API for this command: ``PREFECT_API_URL``, else the managed local server
    (started in the background on first need, announced once on stderr)."""
    from candleflow.cli.managed import ensure_api

    return ensure_api(announce=lambda message: err.print(message, highlight=False, markup=False))


def run_flow_in_process(
    flow_fn: Callable[..., Any],
    parameters: dict[str, Any],
    *,
    quiet: bool = False,
    display: Callable[[Console], AbstractContextManager[Sink]] | None = None,
) -> tuple[Any, Any]:
    """Call ``flow_fn(**parameters)`` here, with Rich progress on stderr and Ctrl+C → cancel.

    ``display(console)`` makes the progress display, a context manager whose value is the sink
    fed the run's events (default: :class:`~candleflow.progress.display.RichSink`, one bar per
    operation); ``quiet`` shows none. Returns ``(final state, progress handle)``; the handle
    carries the flow run id and the summary the flow published.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from candleflow.progress import CancelToken
    from candleflow.progress.wording import HoldOnCancel
    from tasks.progress import progress_context

    connect_api()
    token = CancelToken()
    sinks: list[Sink] = []
    with contextlib.ExitStack() as stack:
        if not quiet:
            make = display if display is not None else _rich_sink
            sinks.append(HoldOnCancel(stack.enter_context(make(err))))
        stack.enter_context(sigint_cancels(token))
        # A CLI run is short and watched; the heartbeat only adds a second at exit (DESIGN §8).
        stack.enter_context(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        handle = stack.enter_context(progress_context(extra_sinks=sinks, token=token))
        state = flow_fn(**parameters, return_state=True)
    return state, handle


def _rich_sink(console: Console) -> RichSink:
    from candleflow.progress.display import RichSink

    return RichSink(console=console)


def flow_exit_code(
    state: Any, handle: Any, *, reraise: tuple[type[Exception], ...] = ()
) -> int | None:
    """Exit code for a flow run that did not complete (``None`` when it did).

    A cancelled run → 130; a failed one → 1 with one line naming the run, unless its error is
    one of ``reraise`` (e.g. bad input), which is raised for ``main`` to map to its exit code.
    """
    run = f"flow run {handle.flow_run_id}" if handle.flow_run_id else "flow run"
    if state.is_cancelled():
        err.print(f"cancelled: {state.message} ({run})", highlight=False, markup=False)
        return EXIT_CANCELLED
    if state.is_completed():
        return None
    error = state.result(raise_on_failure=False)
    if reraise and isinstance(error, reraise):
        raise error
    err.print(f"error: {state.message} ({run})", highlight=False, markup=False)
    return EXIT_FAILED
