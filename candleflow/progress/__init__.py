"""Progress reporting and cooperative cancellation for the core (DESIGN §3).

- :mod:`~candleflow.progress.tracker`: :class:`ProgressTracker` and its weighted :class:`Span`
  tree, turning work done into monotonic, throttled :class:`ProgressEvent` records;
- :mod:`~candleflow.progress.events`: the event record, :class:`CancelToken`, plain sinks and
  formatting helpers;
- :mod:`~candleflow.progress.wording`: how stages and events read (artifact descriptions);
- :mod:`~candleflow.progress.queue`: the backfill queue model (one row per series);
- :mod:`~candleflow.progress.display`: the Rich progress display of the CLI.

Nothing here knows about Prefect; ``tasks/progress.py`` bridges these to Prefect artifacts.
"""

from candleflow.progress.events import (
    CancelToken,
    ListSink,
    LoggingSink,
    ProgressEvent,
    Sink,
    format_counter,
    format_duration,
)
from candleflow.progress.tracker import ProgressTracker, Span

__all__ = [
    "CancelToken",
    "ListSink",
    "LoggingSink",
    "ProgressEvent",
    "ProgressTracker",
    "Sink",
    "Span",
    "format_counter",
    "format_duration",
]
