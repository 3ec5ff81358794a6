"""A recorded Rich display: without --verbose, Prefect's log lines never reach the live region
(the CLI's terminal handler filters them); our own warnings are printed above it, whole."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from candleflow.cli.common import terminal_log_filter
from candleflow.progress import ProgressEvent
from candleflow.progress.display import RichSink


def _log(name: str, level: int, message: str) -> None:
    logging.getLogger(name).log(level, message)


def test_prefect_s_lines_stay_out_of_the_live_display() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system=None)
    sink = RichSink(console=console)
    logger_names = ("prefect.flow_runs", "prefect.task_runs", "EventsWorker", "candleflow.test")
    saved = {name: logging.getLogger(name).level for name in logger_names}
    with sink:
        # As main() installs it, while the display is live (Rich redirects stderr above it).
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        handler.addFilter(terminal_log_filter)
        root = logging.getLogger()
        # Only the CLI's handler: Prefect's own console handler, installed on the root logger
        # by earlier tests that imported Prefect, is not what this test is about.
        others, root.handlers = root.handlers, [handler]
        try:
            for name in logger_names:
                logging.getLogger(name).setLevel(logging.INFO)
            sink(ProgressEvent(operation="load AAPL 1h", percentage=27.5, stage="fetch_segments"))
            _log("prefect.flow_runs", logging.ERROR, "Finished in state Failed('boom')")
            _log("prefect.task_runs", logging.ERROR, "Task run failed with exception: boom")
            _log("EventsWorker", logging.WARNING, "Still processing items: 7 items remaining...")
            _log("candleflow.test", logging.WARNING, "x.csv: 3 rows repaired (rule: high < low)")
            sink(ProgressEvent(operation="load AAPL 1h", percentage=27.52, stage="fetch_segments"))
        finally:
            root.handlers = others
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)
    shown = buffer.getvalue()
    assert "27.52" in shown
    assert "Finished in state" not in shown and "Task run failed" not in shown
    assert "Still processing items" not in shown
    assert "WARNING candleflow.test: x.csv: 3 rows repaired (rule: high < low)" in shown
