"""Shared helpers of the flow tests: capture the sources a flow builds, read artifacts and logs
(``wait_for`` is ``tests.timing``'s, re-exported for the flow tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from candleflow.progress import ProgressEvent
from candleflow.sources.registry import make_source
from tests.timing import wait_for

__all__ = ["EventWaiter", "SourceSpy", "artifacts", "flow_run", "run_logs", "wait_for"]


class SourceSpy:
    """Replaces ``flows.load_data.make_source``: builds the real source (with ``extra`` options)
    and keeps it, so tests can count its fetch calls."""

    def __init__(self, **extra: Any) -> None:
        self.extra = extra
        self.sources: list[Any] = []

    def __call__(self, name: str, **options: Any) -> Any:
        source = make_source(name, **{**options, **self.extra})
        self.sources.append(source)
        return source

    @property
    def fetch_calls(self) -> int:
        return sum(s.fetch_calls for s in self.sources)


class EventWaiter:
    """A sink that sets ``reached`` once ``predicate(event)`` holds for an event."""

    def __init__(self, predicate: Callable[[ProgressEvent], bool]) -> None:
        self.predicate = predicate
        self.reached = threading.Event()

    def __call__(self, event: ProgressEvent) -> None:
        if self.predicate(event):
            self.reached.set()


def flow_run(flow_run_id: UUID) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def artifacts(flow_run_id: UUID, types: tuple[str, ...] = ("progress",)) -> list[Any]:
    from prefect.client.orchestration import get_client

    from candleflow.cli.runs import read_run_artifacts

    with get_client(sync_client=True) as client:
        return read_run_artifacts(client, [flow_run_id], types)


def run_logs(flow_run_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        return list(client.read_logs(log_filter=log_filter))
