"""Plumbing shared by the CLI's command modules: consoles, exit codes, input checks, and running
a flow in-process with a Rich progress display and Ctrl+C as a clean cancel.

Nothing here imports Prefect at module level: commands import flows lazily, so ``candleflow
--help`` stays instant and bad input is rejected before Prefect starts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from candleflow.errors import Cancelled, CandleflowError, InvalidRequest, StoreWriteFailed

if TYPE_CHECKING:
    from candleflow.progress import Sink
    from candleflow.progress.display import RichSink

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
DEFAULT_STORE = "data"
#: ``--store``: a local folder or an object-store root; typed as text so ``s3://`` survives.
StoreOption = Annotated[
    str,
    typer.Option(
        help="Store root: a folder, or s3://bucket/prefix (endpoint and keys from AWS_* variables)."
    ),
]

#: The flag that gives each parameter the core names in an ``InvalidRequest`` (its ``param``):
#: the one table of the CLI's words for them (see :func:`flagged`).
FLAGS: Mapping[str, str] = {
    "source": "--source", "path": "--path", "seed": "--seed", "delay": "--delay",
    "ib_host": "--ib-host", "ib_port": "--ib-port", "client_id": "--client-id",
    "time_scale": "--ib-time-scale", "method": "--method", "objective": "--objective",
    "iterations": "--iterations", "batch_size": "--batch-size", "concurrency": "--concurrency",
    "store": "--store", "calendar_tz": "--tz", "strict": "--strict",
    "ib_exchange": "--ib-exchange", "currency": "--currency", "align": "--align",
    "lanes": "--ib-lanes",
}  # fmt: skip

#: The two output options every command that runs a flow takes, declared once.
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only the result and errors: no progress.")
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show Prefect's run logs on the terminal.")
]

#: ``--source`` of the commands that read stored bars: default, the one source holding them.
SourceOption = Annotated[
    str | None,
    typer.Option(help="Source the bars came from; default: the one that holds the series."),
]

err = Console(stderr=True, soft_wrap=True)  # one error, one line


def out() -> Console:
    # Built per call so tests capturing stdout see the output.
    return Console()


#: The source a command reads when none is given and the store holds the series from none.
FALLBACK_SOURCE = "synthetic"


def stored_source(root: object, symbol: str, timeframe: str, given: str | None) -> str:
    """The source whose ``symbol``/``timeframe`` bars a command reads from the store at ``root``:
    ``given`` (``--source``) when there is one, else the one source that holds the series.
    Several: ``InvalidRequest`` naming them (the choice is the user's); none:
    :data:`FALLBACK_SOURCE`, whose empty series the caller reports."""
    if given is not None:
        return given
    from candleflow.store.bar_store import BarStore
    from candleflow.store.window import find_sources

    sources = find_sources(BarStore(str(root)), symbol, timeframe)
    if len(sources) > 1:
        raise InvalidRequest(
            f"{symbol} {timeframe} is stored from {len(sources)} sources in {root}: "
            f"{', '.join(sources)}; choose one with --source",
            "source",
        )
    return sources[0] if sources else FALLBACK_SOURCE


def existing_store(root: str) -> None:
    """A local store that does not exist is a mistyped --store (bad input), not an empty answer;
    an object-store root is taken as given (its requests say what is wrong with it)."""
    from candleflow.store.objects import is_object_root

    if is_object_root(root):
        return
    path = Path(root).expanduser()
    if not path.exists():
        raise InvalidRequest(
            f"store {root} does not exist: give the folder you loaded into", "store", root
        )
    if not path.is_dir():
        raise InvalidRequest(f"store {root} is not a directory", "store", root)


def write_stdout(text: str) -> None:
    """Write ``text`` to stdout as data for another tool; a reader that stops early (``| head``)
    ends the output quietly, as it does for any Unix filter."""
    import sys

    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when flushing at exit: point stdout at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def flagged(exc: InvalidRequest) -> str:
    """The one-line error for ``exc``, naming its parameter as the flag that gave it: "ib_port
    must be a TCP port 1-65535, got 0 (from --ib-port 0)", "… needs a path (give --path)"."""
    return exc.naming(FLAGS, given="from {name} {value}", missing="give {name}")


def check_store(root: str | Path) -> None:
    """Reject a --store that is not a usable folder or bucket (before any work starts).

    A path that cannot be a folder is bad input (2); a folder the system will not let us write
    (read-only, permissions) is a store failure (1), as it is when found during a save. An
    ``s3://`` root is checked with one request on its bucket: malformed (2), unreachable,
    missing or refused (1); nothing is created.
    """
    from candleflow.store.objects import check_object_root, is_object_root

    if is_object_root(str(root)):
        check_object_root(str(root))
        return
    store = Path(root)
    if store.exists() and not store.is_dir():
        raise InvalidRequest(f"store {store} is not a directory: give a folder for --store")
    existing = next((p for p in (store, *store.parents) if p.exists()), None)
    if existing is not None and existing != store and not existing.is_dir():
        raise InvalidRequest(
            f"store {store} cannot be created: {existing} is a file; give a folder for --store"
        )
    if store.exists() and not os.access(store, os.R_OK | os.W_OK | os.X_OK):
        raise StoreWriteFailed(str(store), str(store), "not readable and writable", errno.EACCES)


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
        err.print("cancelling… what is done is kept (Ctrl+C again to abort)", markup=False)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def connect_api(*, quiet: bool = False) -> str:
    """The Prefect API for this command: ``PREFECT_API_URL``, else the managed local server
    (started in the background on first need, announced once on stderr unless ``quiet``)."""
    from candleflow.cli.managed import ensure_api

    def announce(message: str) -> None:
        if not quiet:
            err.print(message, highlight=False, markup=False)

    return ensure_api(announce=announce)


def terminal_log_filter(record: logging.LogRecord) -> bool:
    """What of the logging reaches the terminal without ``--verbose``: not Prefect's own lines.

    A flow's run logs would break the progress display and repeat, as tracebacks, the one-line
    error the command prints; Prefect's services add shutdown chatter ("EventsWorker: Still
    processing items"). The run's logs are in the UI in full, and ``--verbose`` shows them here.
    """
    if record.name.split(".")[0] == "prefect" or record.name in _PREFECT_SERVICES:
        return False
    return f"{os.sep}prefect{os.sep}" not in (record.pathname or "")


# Prefect's queue services log under their class names, not under "prefect.".
_PREFECT_SERVICES = frozenset({"EventsWorker", "APILogWorker"})


def show_prefect_logs() -> None:
    """``--verbose``: Prefect's logs (run logs included, from INFO) on the terminal as well."""
    os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    # The root logger stays at WARNING: HTTP clients' INFO lines say nothing about the run.
    for handler in logging.getLogger().handlers:
        handler.removeFilter(terminal_log_filter)
        handler.setLevel(logging.INFO)
    for name in ("prefect", "candleflow", "tasks", "flows"):
        logging.getLogger(name).setLevel(logging.INFO)


def run_flow_in_process(
    flow_fn: Callable[..., Any],
    parameters: dict[str, Any],
    *,
    quiet: bool = False,
    verbose: bool = False,
    display: Callable[[Console], AbstractContextManager[Sink]] | None = None,
) -> tuple[Any, Any]:
    """Call ``flow_fn(**parameters)`` here, with Rich progress on stderr and Ctrl+C → cancel.

    ``display(console)`` makes the progress display, a context manager whose value is the sink
    fed the run's events (default: :class:`~candleflow.progress.display.RichSink`, one bar per
    operation); ``quiet`` shows none (nor the managed server's announcement); ``verbose`` shows
    Prefect's logs too (see :func:`show_prefect_logs`). Returns ``(final state, progress
    handle)``; the handle carries the flow run id and the summary the flow published.
    """
    if verbose:
        show_prefect_logs()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from candleflow.progress import CancelToken
    from candleflow.progress.wording import HoldOnCancel
    from tasks.progress import progress_context

    if verbose:  # Prefect set its loggers' levels on import
        show_prefect_logs()
    connect_api(quiet=quiet)
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

    A cancelled run → 130. A run that failed on an error candleflow raises on purpose (a
    ``CandleflowError``: a bad file, a store that cannot be written…) raises it again, so that
    ``main`` prints the same one line and exit code as when it is raised before the flow starts;
    so are ``reraise``'s. Any other failure → 1 with one line naming the run.
    """
    run = f"flow run {handle.flow_run_id}" if handle.flow_run_id else "flow run"
    if state.is_cancelled():
        err.print(f"cancelled: {state.message} ({run})", highlight=False, markup=False)
        return EXIT_CANCELLED
    if state.is_completed():
        return None
    error = state.result(raise_on_failure=False)
    if isinstance(error, CandleflowError) and not isinstance(error, Cancelled):
        raise error
    if reraise and isinstance(error, reraise):
        raise error
    err.print(f"error: {state.message} ({run})", highlight=False, markup=False)
    return EXIT_FAILED
