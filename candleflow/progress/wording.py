"""How progress reads: the words for each stage, the description of an event (the Prefect
artifact's, the CLI's ``watch``), positions such as "Feature 4/15" and "Iteration 5/50 · Candle
7,300/10,000", and :class:`HoldOnCancel` for displays that must not run ahead after a cancel."""

from __future__ import annotations

import dataclasses

from candleflow.progress.events import ProgressEvent, Sink, format_counter, format_duration

__all__ = [
    "STAGE_VERBS",
    "HoldOnCancel",
    "describe_event",
    "describe_progress",
    "feature_position",
    "optimize_position",
]

#: Stage name → what the artifact says while it runs.
STAGE_VERBS: dict[str, str] = {
    "validate_symbol": "Validating symbol",
    "check_head_timestamp": "Checking head timestamp",
    "load_local": "Reading stored bars",
    "analyze_gaps": "Analyzing gaps",
    "plan_segments": "Planning segments",
    "fetch_segments": "Fetching",
    "merge_bars": "Merging bars",
    "save_bars": "Saving bars",
    "compute_features": "Computing features",
    "backfill": "Backfilling",
    "read_bars": "Reading stored bars",
    "report": "Writing the report",
}


def describe_event(event: ProgressEvent, percentage: float | None = None) -> str:
    """The artifact description: stage + micro-stage, bars, API calls (and the end state)."""
    if event.cancelled:
        pct = event.percentage if percentage is None else percentage
        head = f"Cancelled at {pct:.2f}%"
    elif event.done:
        head = f"Done in {format_duration(event.elapsed)}"
    else:
        verb = STAGE_VERBS.get(event.stage, event.stage.replace("_", " ").capitalize())
        detail = event.detail
        if event.stage == "compute_features" and event.items_total:
            head = f"{feature_position(event)}: {detail}" if detail else feature_position(event)
        elif event.stage == "optimize":
            head = optimize_position(event)
        elif event.stage == "fetch_segments":
            # "Segment 3/8: …" reads as "Fetching segment 3/8: …".
            head = f"{verb} {detail[:1].lower()}{detail[1:]}" if detail else f"{verb} segments"
        else:
            head = f"{verb}: {detail}" if detail else verb
    parts = [head]
    if "rows" in event.counters:
        parts.append(format_counter("bars", event.counters["rows"]))
    if "api_calls" in event.counters:
        parts.append(format_counter("api_calls", event.counters["api_calls"]))
    if event.counters.get("failed_segments"):
        parts.append(format_counter("failed_segments", event.counters["failed_segments"]))
    return " · ".join(parts)


def describe_progress(event: ProgressEvent, percentage: float | None = None) -> str:
    """The progress artifact's description (also what ``watch`` and ``runs`` show): percent with
    two decimals, the ETA while running (once the tracker has a meaningful one), then
    :func:`describe_event`, e.g. "62.50% · ETA 0:12 · Fetching segment 3/8: 2024-03-01 →
    2024-03-31 · 1,250 bars · 4 API calls".

    The Prefect UI rounds the progress value to a whole percent and its run page's card cuts the
    description after about 40 characters, so the exact figure and the ETA go first; a final
    event reads as :func:`describe_event` says it.
    """
    text = describe_event(event, percentage)
    if event.done or event.cancelled:  # "Done in 0:32", "Cancelled at 62.50%" say it already
        return text
    pct = event.percentage if percentage is None else percentage
    parts = [f"{pct:.2f}%"]
    if event.eta is not None:
        parts.append(f"ETA {format_duration(event.eta)}")
    return " · ".join([*parts, text])


def feature_position(event: ProgressEvent) -> str:
    """ "Feature 4/15" from a compute_features event (features advance by their columns)."""
    return f"Feature {event.items_done:,}/{event.items_total or 0:,}"


def optimize_position(event: ProgressEvent) -> str:
    """ "Iteration 5/50 · Candle 7,300/10,000" from an optimize event, then what the search is
    doing when it is not backtesting ("choosing next points 3/16 (0:04)"). The candles are those
    of the backtest in flight, counted as simulated (in this process or on a Dask worker);
    between backtests only the iteration shows."""
    parent = event.parent_position
    if not parent:
        total = f"/{event.items_total:,}" if event.items_total is not None else ""
        parent = f"Iteration {event.items_done:,}{total}"
    return " · ".join(p for p in (parent, event.child_position, event.detail) if p)


class HoldOnCancel:
    """Wraps a sink: after a cancel, events keep the percentage reached when it came.

    A cancelled run still merges and saves, and the tracker counts the stopped stages as done;
    a display should show how far the run got, not a near-complete bar.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._held: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.cancelled:
            if self._held is None:
                self._held = event.percentage
            event = dataclasses.replace(event, percentage=self._held)
        self.sink(event)
