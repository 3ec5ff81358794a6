"""The terminal line of ``candleflow optimize``: one line in the seed's shape ("Iteration 3/20 ·
Candle 7,300/10,000", two decimals), the phases between backtests, and a cancel that keeps the
figure and position where it struck while the run saves the best so far."""

from __future__ import annotations

import io

from rich.console import Console

from candleflow.cli.optimize import OptimizeDisplay
from candleflow.progress import ProgressEvent

OPERATION = "optimize AAPL 5m sma_cross"


def _event(percentage: float, **fields: object) -> ProgressEvent:
    return ProgressEvent(operation=OPERATION, percentage=percentage, **fields)  # type: ignore[arg-type]


def _render(events: list[ProgressEvent], width: int = 160) -> tuple[OptimizeDisplay, str]:
    console = Console(file=io.StringIO(), width=width, record=True, force_terminal=False)
    with OptimizeDisplay(console) as display:
        for event in events:
            display(event)
    return display, console.export_text()


def test_one_line_with_iteration_and_candles_and_two_decimals() -> None:
    running = _event(
        22.27,
        stage="optimize",
        items_done=2,
        items_total=20,
        parent_position="Iteration 3/20",
        child_position="Candle 7,300/10,000",
        eta=12.0,
    )
    display, text = _render([running])
    assert len(display.progress.tasks) == 1
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert OPERATION in lines[0] and "22.27%" in lines[0]
    assert "Iteration 3/20 · Candle 7,300/10,000" in lines[0] and "ETA 0:12" in lines[0]


def test_phases_between_backtests_are_named() -> None:
    choosing = _event(
        2.0, stage="optimize", items_done=0, items_total=30, detail="choosing next points 3/16"
    )
    display, _ = _render([choosing])
    fields = display.progress.tasks[0].fields
    assert fields["position"] == "Iteration 0/30 · choosing next points 3/16"


def test_a_cancel_keeps_the_figure_and_position_where_it_struck() -> None:
    struck: dict[str, object] = {
        "stage": "optimize",
        "items_done": 6,
        "items_total": 30,
        "parent_position": "Iteration 7/30",
        "child_position": "Candle 12,288/48,360",
    }
    events = [
        _event(22.27, **struck),
        _event(22.27, cancelled=True, **struck),
        _event(97.0, stage="report", detail="drawing the equity chart", cancelled=True),
    ]
    display, text = _render(events)
    task = display.progress.tasks[0]
    assert task.completed == 22.27 and task.fields["pct"].strip() == "22.27%"
    assert task.fields["position"].startswith("Iteration 7/30 · Candle 12,288/48,360 · cancelled")
    assert "97.00%" not in text and "report" not in text


def test_the_end_says_what_was_simulated() -> None:
    done = _event(100.0, stage="report", done=True, elapsed=32.0,
                  counters={"iterations": 30, "candles": 1_450_800})  # fmt: skip
    _, text = _render([done])
    assert "100.00% done · 30 iterations · 1,450,800 candles" in text and "took 0:32" in text


def test_an_80_column_terminal_still_shows_the_whole_position() -> None:
    running = _event(
        22.27,
        stage="optimize",
        items_done=9,
        items_total=20,
        eta=12.0,
        parent_position="Iteration 10/20",
        child_position="Candle 7,300/10,000",
    )
    _, text = _render([running], width=80)
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) <= 80, text
    assert "22.27% Iteration 10/20 · Candle 7,300/10,000 ETA 0:12" in lines[0]
