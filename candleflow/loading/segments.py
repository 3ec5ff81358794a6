"""Split missing bars into IB-compliant requests, ordered by load mode.

A segment is one source request ``[start, end)``: it starts at a missing bar's start, ends at a
missing bar's end, and spans no more than the timeframe's IB maximum (DESIGN §4.3). The planner is
greedy over the missing bars in time order — open each segment at the first uncovered missing bar
and extend it to the last missing bar that still ends within the maximum span — which gives the
minimum number of requests (the classic interval-cover argument). With ``merge_gaps`` (the
default) one request may cover several nearby gaps, re-reading the stored bars between them:
IB's pacing budget, not bandwidth, is the scarce resource. Segment bounds never extend into closed
time beyond the bars they cover.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from candleflow.errors import InvalidRequest
from candleflow.loading.calendars import BarGrid
from candleflow.models import Gap, GapClass, LoadMode, Segment
from candleflow.timeframes import Timeframe, parse_timeframe


def plan_segments(
    missing: BarGrid,
    timeframe: Timeframe | str,
    mode: LoadMode | str = LoadMode.FULL,
    *,
    gaps: Sequence[Gap] | None = None,
    merge_gaps: bool = True,
    max_span: pd.Timedelta | None = None,
) -> list[Segment]:
    """Requests covering every bar of ``missing`` exactly once, in the order ``mode`` wants.

    ``missing`` must be sorted (as ``expected_bars`` and ``bars_in_gaps`` return it). Without
    ``merge_gaps``, ``gaps`` must be given and no segment crosses a gap boundary.
    """
    tf = parse_timeframe(timeframe)
    load_mode = LoadMode.parse(mode)
    span = tf.max_span if max_span is None else max_span
    if span < tf.delta and not tf.is_daily:
        raise InvalidRequest(f"max span {span} is shorter than one {tf.name} bar")
    if load_mode is LoadMode.LOCAL or len(missing) == 0:
        return []
    if merge_gaps:
        segments = _greedy(missing.starts, missing.ends, span)
    else:
        if gaps is None:
            raise InvalidRequest("plan_segments(merge_gaps=False) needs the gaps")
        segments = []
        for gap in gaps:
            lo = missing.starts.searchsorted(gap.start, side="left")
            hi = missing.starts.searchsorted(gap.end, side="left")
            segments.extend(_greedy(missing.starts[lo:hi], missing.ends[lo:hi], span))
    if load_mode is LoadMode.TAIL:
        segments.reverse()
    return segments


def _greedy(starts: pd.DatetimeIndex, ends: pd.DatetimeIndex, span: pd.Timedelta) -> list[Segment]:
    segments: list[Segment] = []
    i, n = 0, len(starts)
    while i < n:
        first = starts[i]
        # Ends are sorted with the starts; the bar at i always fits (a bar is shorter than a span).
        j = max(i, int(ends.searchsorted(first + span, side="right")) - 1)
        segments.append(Segment(start=first, end=ends[j], bars=j - i + 1))
        i = j + 1
    return segments


def gaps_for_mode(
    gaps: Sequence[Gap],
    mode: LoadMode | str,
    complete_from: pd.Timestamp | None,
    complete_through: pd.Timestamp | None,
) -> list[Gap]:
    """The fetchable (``missing``) gaps a load in ``mode`` should fill.

    ``complete_from``/``complete_through`` bound the range earlier loads finished cleanly
    (:class:`candleflow.loading.pipeline.Completed`). ``tail`` takes the gaps reaching past
    ``complete_through``, ``backfill`` those starting before ``complete_from``, ``full`` every
    one. Without an anchor — a series no load has finished — every mode but ``local`` takes every
    gap, which is what lets a cancelled or crashed first load resume where it stopped.
    """
    load_mode = LoadMode.parse(mode)
    fetchable = [g for g in gaps if g.kind is GapClass.MISSING]
    if load_mode is LoadMode.LOCAL:
        return []
    if load_mode is LoadMode.TAIL and complete_through is not None:
        return [g for g in fetchable if g.end > complete_through]
    if load_mode is LoadMode.BACKFILL and complete_from is not None:
        return [g for g in fetchable if g.start < complete_from]
    return fetchable
