"""Gap analysis against the XNYS calendar: golden answers and invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from candleflow.loading.calendars import expected_bars, to_utc
from candleflow.loading.gaps import analyze_gaps, bars_in_gaps, find_gaps, missing_mask
from candleflow.models import GapClass

START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC")
GRID = expected_bars("XNYS", "1h", START, END)


def _day(date: str) -> pd.DatetimeIndex:
    s = GRID.starts
    return s[(s >= to_utc(date)) & (s < to_utc(date) + pd.Timedelta(days=1))]


def test_complete_year_minus_one_day_and_three_bars_reports_exactly_two_gaps() -> None:
    removed_day = _day("2024-03-05")
    removed_bars = _day("2024-07-10")[2:5]  # 11:00, 12:00, 13:00 ET
    present = GRID.starts.difference(removed_day).difference(removed_bars)

    report = analyze_gaps(present, "XNYS", "1h", START, END)

    assert report.expected == 1755
    assert report.present == 1745
    assert report.unexpected == 0
    utc = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    assert [(g.start, g.end, g.bars, g.kind) for g in report.gaps] == [
        (utc("2024-03-05 14:30"), utc("2024-03-05 21:00"), 7, GapClass.MISSING),
        (utc("2024-07-10 15:00"), utc("2024-07-10 18:00"), 3, GapClass.MISSING),
    ]


def test_a_complete_store_has_no_gaps_over_weekends_holidays_or_nights() -> None:
    report = analyze_gaps(GRID.starts, "XNYS", "1h", START, END)
    assert report.gaps == ()
    assert report.present == report.expected == 1755


def test_a_gap_spanning_a_weekend_is_one_gap_of_weekday_bars() -> None:
    friday, monday = _day("2024-01-05"), _day("2024-01-08")
    present = GRID.starts.difference(friday[-2:]).difference(monday[:3])
    (gap,) = find_gaps(GRID, present)
    assert gap.bars == 5
    assert gap.start == friday[-2] and gap.end == pd.Timestamp("2024-01-08 17:00", tz="UTC")


def test_classes_before_head_missing_future() -> None:
    head = pd.Timestamp("2024-06-03 13:30", tz="UTC")
    now = pd.Timestamp("2024-06-20 15:30", tz="UTC")  # mid-bar: the 15:00 bar is not finished
    gaps = find_gaps(GRID, GRID.starts[:0], head=head, now=now)
    assert [g.kind for g in gaps] == [GapClass.BEFORE_HEAD, GapClass.MISSING, GapClass.FUTURE]
    assert gaps[0].end == pd.Timestamp(
        "2024-05-31 20:00", tz="UTC"
    )  # Friday's close before the head
    assert gaps[1].start == head
    assert gaps[2].start == pd.Timestamp("2024-06-20 15:00", tz="UTC")
    assert sum(g.bars for g in gaps) == len(GRID)


def test_bars_not_on_the_grid_are_unexpected_not_coverage() -> None:
    session_aligned = expected_bars("XNYS", "1h", START, END, align="session").starts
    report = analyze_gaps(session_aligned, "XNYS", "1h", START, END)
    assert report.unexpected > 0
    assert report.present + report.unexpected == len(session_aligned)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(GRID) - 1), max_size=200, unique=True))
def test_gaps_account_for_exactly_the_removed_bars(removed: list[int]) -> None:
    keep = np.ones(len(GRID), dtype=bool)
    keep[removed] = False
    present = GRID.starts[keep]
    gaps = find_gaps(GRID, present)
    assert sum(g.bars for g in gaps) == len(removed)
    covered = bars_in_gaps(GRID, gaps)
    assert set(covered.starts) == set(GRID.starts[~keep])
    # every gap begins and ends on a trading bar boundary, and gaps never touch each other
    for a, b in itertools.pairwise(gaps):
        assert a.end < b.start
        between = GRID.starts[(GRID.starts >= a.end) & (GRID.starts < b.start)]
        assert len(between) > 0 and between.isin(present).all()


def test_fx_and_globex_gaps_never_include_the_weekend_or_the_maintenance_break() -> None:
    analyze = analyze_gaps
    lo, hi = pd.Timestamp("2026-11-13", tz="UTC"), pd.Timestamp("2026-11-24", tz="UTC")
    # FX: everything stored but Friday 16:00 NY and Sunday 17:00 NY, the bars either side of the
    # weekend: one gap of two bars (consecutive in the grid), the weekend itself no gap.
    fx = expected_bars("FX", "1h", lo, hi).starts
    ny = "America/New_York"
    drop = pd.DatetimeIndex(
        [pd.Timestamp("2026-11-20 16:00", tz=ny), pd.Timestamp("2026-11-22 17:00", tz=ny)]
    ).tz_convert("UTC")
    report = analyze(fx.difference(drop), "FX", "1h", lo, hi)
    assert [(g.start, g.bars) for g in report.gaps] == [(drop[0], 2)]
    # GLOBEX: 15:00 CT stored, 17:00 CT stored, the break 16:00-17:00 is not expected.
    es = expected_bars("GLOBEX", "1h", lo, hi).starts
    report = analyze(es, "GLOBEX", "1h", lo, hi)
    assert report.gaps == () and report.unexpected == 0
    break_bar = pd.DatetimeIndex([pd.Timestamp("2026-11-17 16:00", tz="America/Chicago")])
    assert analyze(es.union(break_bar.tz_convert("UTC")), "GLOBEX", "1h", lo, hi).unexpected == 1


@settings(max_examples=60)
@given(
    picks=st.lists(st.integers(min_value=0, max_value=199), max_size=80),
    extra=st.lists(st.integers(min_value=-5_000, max_value=5_000), max_size=10),
    unit=st.sampled_from(["s", "us", "ns"]),
)
def test_missing_mask_agrees_with_a_set_lookup_in_any_order_and_unit(
    picks: list[int], extra: list[int], unit: str
) -> None:
    grid = expected_bars("XNYS", "1h", pd.Timestamp("2024-03-01", tz="UTC"),
                         pd.Timestamp("2024-04-30", tz="UTC"))  # fmt: skip
    chosen = [grid.starts[i % len(grid)] for i in picks]
    off_grid = [grid.starts[0] + pd.Timedelta(minutes=m) for m in extra]
    present = pd.DatetimeIndex(chosen + off_grid).as_unit(unit)  # unsorted, repeats, off-grid
    expected = ~np.asarray(grid.starts.isin(present))
    assert np.array_equal(missing_mask(grid, present), expected)
