"""Logs of our flow runs in Prefect: our loggers (``candleflow``, ``tasks``, ``flows``) reach the
run's logs in the UI, and a clean cancel of one of our runs is not logged as an error."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from uuid import UUID

__all__ = ["OWN_LOGGERS", "RUN_LOGGERS", "own_logs_to_prefect", "quiet_clean_cancels"]

#: The loggers candleflow owns (CONVENTIONS 7): the core, the tasks and the flows.
OWN_LOGGERS: tuple[str, ...] = ("candleflow", "tasks", "flows")


@contextlib.contextmanager
def own_logs_to_prefect() -> Iterator[None]:
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


def quiet_clean_cancels(flow_run_id: UUID) -> None:
    """Put one of our flow runs under :class:`_CleanCancelFilter` (installed once per process)."""
    with _OUR_RUNS_LOCK:
        _OUR_RUNS[str(flow_run_id)] = None
        while len(_OUR_RUNS) > _OUR_RUNS_MAX:
            del _OUR_RUNS[next(iter(_OUR_RUNS))]
        for name in RUN_LOGGERS:
            run_logger = logging.getLogger(name)
            if _CLEAN_CANCEL_FILTER not in run_logger.filters:
                run_logger.addFilter(_CLEAN_CANCEL_FILTER)
