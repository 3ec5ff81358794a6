"""Bars keep a readable width: a long segment text is cut with "…" on its one line, the bar is
not squeezed to a character (recorded Rich consoles at 80 columns)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from candleflow.progress.display import FittedTextColumn, RichSink

LONG = "Segment 4/10: 2024-01-01 09:30 → 2024-01-31 16:00 America/New_York · " * 3


def _render(progress: Progress, console: Console, buffer: io.StringIO) -> list[str]:
    console.print(progress.make_tasks_table(progress.tasks))
    return [line for line in buffer.getvalue().splitlines() if line.strip()]


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=80, force_terminal=False, color_system=None), buffer


def _bar_cells(line: str, before: str, after: str) -> int:
    return line.index(after) - (line.index(before) + len(before))


def test_the_load_bar_keeps_its_width_and_the_detail_is_cut() -> None:
    console, buffer = _console()
    sink = RichSink(console=console)
    sink.progress.add_task(
        "load AAPL 1h", total=100, completed=40, pct="40.00%", stage="fetch", detail=LONG,
        counters="12 API calls", eta="ETA 0:12",
    )  # fmt: skip
    lines = _render(sink.progress, console, buffer)
    assert len(lines) == 1, lines
    line = lines[0]
    assert _bar_cells(line, "load AAPL 1h", "40.00%") >= 12, line
    assert "…" in line and "Segment 4/10" in line and "ETA 0:12" in line


def test_a_fitted_column_keeps_any_bar_readable() -> None:
    console, buffer = _console()
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:6.2f}%"),
        FittedTextColumn("{task.fields[detail]}"), console=console,
    )  # fmt: skip
    progress.add_task("run", total=100, completed=40, detail=LONG)
    lines = _render(progress, console, buffer)
    assert len(lines) == 1 and _bar_cells(lines[0], "run", "40.00%") >= 12, lines
