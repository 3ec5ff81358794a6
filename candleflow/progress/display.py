"""A Rich progress display for the terminal, fed by :class:`~candleflow.progress.ProgressEvent`s.

:class:`RichSink` is a sink (a callable taking events) that draws one line per operation: a bar,
the two-decimal percentage, the stage ("fetch_segments 6/8"), the positions and micro-stage detail,
the rows / API-call counters and the tracker's ETA. Use it as a context manager around the work; it
may be called from any thread. Pass ``console=`` to render elsewhere (a test renders to a
``StringIO``). The ETA shown is the tracker's smoothed one, not Rich's own speed estimate, so the
terminal agrees with the log and the Prefect artifact.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text

from candleflow.progress.events import ProgressEvent, format_counter, format_duration

__all__ = ["RichSink"]

# Shown beside the bar; other counters stay in the log line (event.summary()).
_SHOWN_COUNTERS = ("rows", "api_calls", "failed_segments")


def _stage_text(event: ProgressEvent) -> str:
    if event.cancelled:
        return "cancelled"
    if event.done:
        return "done"
    if not event.stage:
        return ""
    return f"{event.stage} {event.stage_index}/{event.stage_total}"


def _detail_text(event: ProgressEvent) -> str:
    parts = [p for p in (event.parent_position, event.child_position, event.detail) if p]
    if not event.parent_position and not event.child_position and event.items_total is not None:
        parts.insert(0, f"{event.items_done:,}/{event.items_total:,}")
    return " · ".join(parts)


def _counters_text(event: ProgressEvent) -> str:
    return " · ".join(
        format_counter(name, event.counters[name])
        for name in _SHOWN_COUNTERS
        if name in event.counters
    )


def _eta_text(event: ProgressEvent) -> str:
    if event.done or event.cancelled:
        return f"took {format_duration(event.elapsed)}"
    return f"ETA {format_duration(event.eta)}" if event.eta is not None else "ETA -:--"


class FittedTextColumn(TextColumn):
    """A text column that gives way when a line is too wide: it is cut with "…" on its one line
    before the bar shrinks (a long segment text once squeezed the bar to one character)."""

    def __init__(self, text_format: str, **kwargs: Any) -> None:
        # A wrapable column is the one a Rich table narrows first; the text itself never wraps.
        column = Column(no_wrap=False, overflow="ellipsis")
        super().__init__(text_format, markup=False, table_column=column, **kwargs)

    def render(self, task: Task) -> Text:
        text = super().render(task)
        text.no_wrap, text.overflow = True, "ellipsis"
        return text


class RichSink:
    """Draws progress events with ``rich.progress``; one task line per operation name."""

    def __init__(
        self,
        *,
        console: Console | None = None,
        transient: bool = False,
        refresh_per_second: float = 4.0,
    ) -> None:
        # Text columns take markup=False: details carry user text such as "[2024-01-01, …)".
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[pct]}", markup=False, justify="right"),
            TextColumn("{task.fields[stage]}", markup=False, style="cyan"),
            FittedTextColumn("{task.fields[detail]}"),
            TextColumn("{task.fields[counters]}", markup=False, style="green"),
            TextColumn("{task.fields[eta]}", markup=False, style="magenta"),
            console=console,
            transient=transient,
            refresh_per_second=refresh_per_second,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def __enter__(self) -> RichSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __call__(self, event: ProgressEvent) -> None:
        pct = f"{event.percentage:6.2f}%"
        stage = _stage_text(event)
        detail = _detail_text(event)
        counters = _counters_text(event)
        eta = _eta_text(event)
        with self._lock:
            task = self._tasks.get(event.operation)
            if task is None:
                # Fields go in with the task: the refresh thread may draw it at once.
                task = self.progress.add_task(
                    event.operation,
                    total=100.0,
                    pct=pct,
                    stage=stage,
                    detail=detail,
                    counters=counters,
                    eta=eta,
                )
                self._tasks[event.operation] = task
        self.progress.update(
            task,
            completed=event.percentage,
            pct=pct,
            stage=stage,
            detail=detail,
            counters=counters,
            eta=eta,
        )
