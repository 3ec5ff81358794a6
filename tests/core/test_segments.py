"""Segment planning: coverage, IB max span, minimal request count, order per mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candleflow.loading.calendars import BarGrid, expected_bars
from candleflow.loading.gaps import bars_in_gaps, find_gaps
from candleflow.loading.segments import gaps_for_mode, plan_segments
from candleflow.models import Gap, LoadMode
from candleflow.timeframes import parse_timeframe

GRIDS = {
    tf: expected_bars("XNYS", tf, pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC"))
    for tf, a, b in [
        ("1m", "2024-01-01", "2024-01-20"),
        ("5m", "2024-01-01", "2024-03-01"),
        ("1h", "2023-01-01", "2025-01-01"),
        ("1d", "2018-01-01", "2025-01-01"),
    ]
}


def _min_requests(starts: pd.DatetimeIndex, ends: pd.DatetimeIndex, span: pd.Timedelta) -> int:
    """Independent minimum by dynamic programming: best[j] = min over i of best[i] + 1."""
    s, e = starts.asi8, ends.asi8
    limit = span.value
    best = [0] + [10**9] * len(s)
    for j in range(1, len(s) + 1):
        for i in range(j - 1, -1, -1):
            if e[j - 1] - s[i] > limit:
                break
            best[j] = min(best[j], best[i] + 1)
    return best[-1]


@settings(max_examples=80, deadline=None)
@given(
    tf=st.sampled_from(sorted(GRIDS)),
    picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=120, unique=True),
    mode=st.sampled_from([LoadMode.FULL, LoadMode.BACKFILL, LoadMode.TAIL]),
)
def test_segments_cover_each_missing_bar_once_within_span_and_minimal(
    tf: str, picks: list[int], mode: LoadMode
) -> None:
    grid = GRIDS[tf]
    idx = np.unique(np.array(picks) % len(grid))
    missing = BarGrid(grid.starts[idx], grid.ends[idx])
    timeframe = parse_timeframe(tf)

    segments = plan_segments(missing, timeframe, mode)

    for seg in segments:
        assert seg.span <= timeframe.max_span
        assert seg.start in missing.starts and seg.end in missing.ends  # no needless closed time
    hits = [sum(seg.start <= ts < seg.end for seg in segments) for ts in missing.starts]
    assert hits == [1] * len(missing)
    assert sum(seg.bars for seg in segments) == len(missing)
    assert len(segments) == _min_requests(missing.starts, missing.ends, timeframe.max_span)
    order = [seg.start for seg in segments]
    assert order == sorted(order, reverse=mode is LoadMode.TAIL)


def test_two_years_of_hourly_bars_need_one_request_per_30_days() -> None:
    grid = GRIDS["1h"]
    segments = plan_segments(grid, "1h", "full")
    # 2023-01-03 .. 2024-12-31 in spans of at most 30 days, each opening at a session open
    assert len(segments) == 24
    assert len(segments) == _min_requests(grid.starts, grid.ends, parse_timeframe("1h").max_span)
    assert segments[0].start == pd.Timestamp("2023-01-03 14:30", tz="UTC")
    assert segments[-1].end == pd.Timestamp("2024-12-31 21:00", tz="UTC")


def test_unmerged_planning_never_crosses_a_gap() -> None:
    grid = GRIDS["1h"]
    present = grid.starts.delete(list(range(10, 20)) + list(range(40, 45)))
    gaps = find_gaps(grid, present)
    missing = bars_in_gaps(grid, gaps)
    merged = plan_segments(missing, "1h", "full")
    separate = plan_segments(missing, "1h", "full", gaps=gaps, merge_gaps=False)
    assert len(merged) == 1 and len(separate) == 2
    assert [(s.start, s.end) for s in separate] == [(g.start, g.end) for g in gaps]


def test_local_mode_plans_nothing() -> None:
    assert plan_segments(GRIDS["1d"], "1d", "local") == []


def _gap(a: str, b: str) -> Gap:
    return Gap(pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC"), 1)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("tail", ["late"]),
        ("backfill", ["early"]),
        ("full", ["early", "inner", "late"]),
        ("local", []),
    ],
)
def test_gaps_for_mode(mode: str, expected: list[str]) -> None:
    gaps = {
        "early": _gap("2024-01-02", "2024-01-03"),
        "inner": _gap("2024-02-02", "2024-02-03"),
        "late": _gap("2024-03-02", "2024-03-03"),
    }
    done_from, done_through = (
        pd.Timestamp("2024-01-10", tz="UTC"),
        pd.Timestamp("2024-03-01", tz="UTC"),
    )
    chosen = gaps_for_mode(list(gaps.values()), mode, done_from, done_through)
    assert chosen == [gaps[k] for k in expected]
    # a series no load has finished yet: every mode but local fills every gap
    unanchored = gaps_for_mode(list(gaps.values()), mode, None, None)
    assert unanchored == ([] if mode == "local" else list(gaps.values()))


@pytest.mark.parametrize(
    ("calendar", "timeframe", "start", "end", "bars"),
    [
        # FX, 24/5: a week of minute bars is 5 x 1,440; IB allows 1 D per 1-min request.
        ("FX", "1m", "2026-11-15 22:00", "2026-11-20 22:00", 5 * 1440),
        # GLOBEX: 23 h a day; hourly bars, 1 M per request, over two months.
        ("GLOBEX", "1h", "2026-09-01", "2026-11-01", None),
    ],
)
def test_segments_cover_fx_and_futures_grids_within_ibs_spans(
    calendar: str, timeframe: str, start: str, end: str, bars: int | None
) -> None:
    tf = parse_timeframe(timeframe)
    grid = expected_bars(calendar, tf, pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    if bars is not None:
        assert len(grid) == bars
    segments = plan_segments(grid, tf)
    assert sum(s.bars for s in segments) == len(grid)
    assert all(s.span <= tf.max_span for s in segments)
    assert segments[0].start == grid.starts[0] and segments[-1].end == grid.ends[-1]
