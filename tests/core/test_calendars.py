"""Expected bars against NYSE's published 2024 schedule (golden answers checked by hand).

NYSE 2024 holidays: Jan 1, Jan 15, Feb 19, Mar 29, May 27, Jun 19, Jul 4, Sep 2, Nov 28, Dec 25.
Early closes (13:00 ET): Jul 3, Nov 29, Dec 24. 262 weekdays − 10 holidays = 252 sessions.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from candleflow.errors import InvalidRequest
from candleflow.loading.calendars import expected_bars, to_utc

NY = "America/New_York"
HOLIDAYS_2024 = [
    "2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27",
    "2024-06-19", "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25",
]  # fmt: skip
EARLY_CLOSES_2024 = ["2024-07-03", "2024-11-29", "2024-12-24"]
Y2024 = (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC"))


def _local_days(starts: pd.DatetimeIndex) -> pd.Series:
    local = starts.tz_convert(NY)
    return pd.Series(1, index=local).groupby(local.date).sum()


def test_xnys_has_252_daily_sessions_in_2024_and_none_on_holidays() -> None:
    grid = expected_bars("XNYS", "1d", *Y2024)
    assert len(grid) == 252
    dates = {ts.date().isoformat() for ts in grid.starts}
    assert not dates & set(HOLIDAYS_2024)
    assert all(ts.weekday() < 5 for ts in grid.starts)
    assert grid.starts[0] == pd.Timestamp("2024-01-02", tz="UTC")


def test_hourly_bars_start_on_the_clock_hour_with_the_first_at_the_open() -> None:
    day = expected_bars("XNYS", "1h", to_utc("2024-01-02"), to_utc("2024-01-03"))
    local = [ts.strftime("%H:%M") for ts in day.starts.tz_convert(NY)]
    assert local == ["09:30", "10:00", "11:00", "12:00", "13:00", "14:00", "15:00"]
    ends = [ts.strftime("%H:%M") for ts in day.ends.tz_convert(NY)]
    assert ends == ["10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00"]


def test_hourly_bar_counts_per_day_for_2024() -> None:
    per_day = _local_days(expected_bars("XNYS", "1h", *Y2024).starts)
    assert len(per_day) == 252
    early = {dt.date.fromisoformat(d) for d in EARLY_CLOSES_2024}
    assert {d for d, n in per_day.items() if n == 4} == early
    assert (per_day.drop(index=list(early)) == 7).all()
    assert int(per_day.sum()) == 249 * 7 + 3 * 4


def test_minute_bars_normal_day_and_early_close() -> None:
    per_day = _local_days(
        expected_bars("XNYS", "1m", to_utc("2024-11-27"), to_utc("2024-11-30")).starts
    )
    assert per_day.to_dict() == {dt.date(2024, 11, 27): 390, dt.date(2024, 11, 29): 210}


def test_open_follows_daylight_saving_in_utc() -> None:
    before = expected_bars("XNYS", "1h", to_utc("2024-03-08"), to_utc("2024-03-09"))
    after = expected_bars("XNYS", "1h", to_utc("2024-03-11"), to_utc("2024-03-12"))
    assert before.starts[0] == pd.Timestamp("2024-03-08 14:30", tz="UTC")
    assert after.starts[0] == pd.Timestamp("2024-03-11 13:30", tz="UTC")


def test_session_alignment_counts_from_the_open() -> None:
    day = expected_bars("XNYS", "1h", to_utc("2024-01-02"), to_utc("2024-01-03"), align="session")
    local = [ts.strftime("%H:%M") for ts in day.starts.tz_convert(NY)]
    assert local == ["09:30", "10:30", "11:30", "12:30", "13:30", "14:30", "15:30"]
    assert day.ends[-1].tz_convert(NY).strftime("%H:%M") == "16:00"


def test_lunch_break_is_not_a_bar_on_hong_kong() -> None:
    day = expected_bars("XHKG", "1h", to_utc("2024-01-02", "XHKG"), to_utc("2024-01-03", "XHKG"))
    local = [ts.strftime("%H:%M") for ts in day.starts.tz_convert("Asia/Hong_Kong")]
    assert local == ["09:30", "10:00", "11:00", "13:00", "14:00", "15:00"]


def test_fx_24_5_has_no_weekend_bars() -> None:
    grid = expected_bars(
        "24/5", "1h", pd.Timestamp("2024-01-05", tz="UTC"), pd.Timestamp("2024-01-09", tz="UTC")
    )
    assert len(grid) == 48
    assert all(ts.weekday() < 5 for ts in grid.starts)


def test_daily_range_includes_a_cme_session_that_opened_the_evening_before() -> None:
    grid = expected_bars("CMES", "1d", to_utc("2024-01-02", "CMES"), to_utc("2024-01-04", "CMES"))
    assert [ts.date().isoformat() for ts in grid.starts] == ["2024-01-02", "2024-01-03"]


def test_empty_and_closed_ranges() -> None:
    saturday = expected_bars("XNYS", "1h", to_utc("2024-01-06"), to_utc("2024-01-07"))
    assert len(saturday) == 0
    reversed_range = expected_bars("XNYS", "1h", to_utc("2024-01-08"), to_utc("2024-01-02"))
    assert len(reversed_range) == 0


def test_unknown_calendar_names_the_value() -> None:
    with pytest.raises(InvalidRequest, match="unknown calendar 'NOPE'"):
        expected_bars("NOPE", "1h", *Y2024)


def test_to_utc_reads_naive_times_in_the_exchange_zone() -> None:
    assert to_utc("2024-07-01 09:30") == pd.Timestamp("2024-07-01 13:30", tz="UTC")
    assert to_utc("2024-07-01T09:30:00+00:00") == pd.Timestamp("2024-07-01 09:30", tz="UTC")
    with pytest.raises(InvalidRequest, match="malformed date"):
        to_utc("2024-13-45")


# --- forex (FX: 24/5 New York) and CME futures (GLOBEX) -------------------------------------
# Golden answers transcribed by hand from the trading hours, not computed by the code under test:
# IDEALPRO forex trades from Sunday 17:00 to Friday 17:00 New York, continuously; CME Globex
# equity futures trade 17:00–16:00 Chicago (a 60-minute maintenance break every day), and on
# Thanksgiving (Thu 2026-11-26) and the Friday after, the session ends at 12:00 Chicago
# (exchange_calendars' CMES special closes).
CHICAGO = "America/Chicago"


def test_a_full_fx_week_has_120_hourly_bars_from_sunday_evening_to_friday_1700_new_york() -> None:
    # Saturday 2026-11-14 to Saturday 2026-11-21 (UTC): the whole week and nothing around it.
    grid = expected_bars("FX", "1h", pd.Timestamp("2026-11-14", tz="UTC"),
                         pd.Timestamp("2026-11-21 12:00", tz="UTC"))  # fmt: skip
    local = grid.starts.tz_convert(NY)
    assert len(grid) == 5 * 24
    assert local[0] == pd.Timestamp("2026-11-15 17:00", tz=NY)  # Sunday evening
    assert local[-1] == pd.Timestamp("2026-11-20 16:00", tz=NY)  # the last bar ends Fri 17:00
    assert grid.ends[-1] == pd.Timestamp("2026-11-20 17:00", tz=NY)
    assert not any(ts.weekday() == 5 for ts in local)  # none on Saturday
    assert not any(ts.weekday() == 6 and ts.hour < 17 for ts in local)


def test_fx_daily_bars_are_the_five_weekday_sessions() -> None:
    grid = expected_bars("FX", "1d", pd.Timestamp("2026-11-14", tz="UTC"),
                         pd.Timestamp("2026-11-21 12:00", tz="UTC"))  # fmt: skip
    assert [ts.strftime("%a %d") for ts in grid.starts] == [
        "Mon 16",
        "Tue 17",
        "Wed 18",
        "Thu 19",
        "Fri 20",
    ]


def test_an_es_week_on_globex_has_23_hourly_bars_a_day_and_none_in_the_maintenance_break() -> None:
    grid = expected_bars("GLOBEX", "1h", pd.Timestamp("2026-11-14", tz="UTC"),
                         pd.Timestamp("2026-11-21 12:00", tz="UTC"))  # fmt: skip
    local = grid.starts.tz_convert(CHICAGO)
    assert len(grid) == 5 * 23
    assert local[0] == pd.Timestamp("2026-11-15 17:00", tz=CHICAGO)
    assert local[-1] == pd.Timestamp("2026-11-20 15:00", tz=CHICAGO)
    assert not any(ts.hour == 16 for ts in local)  # 16:00-17:00 CT: the daily break
    per_session = pd.Series(1, index=local).groupby((local + pd.Timedelta(hours=7)).date).sum()
    assert list(per_session) == [23, 23, 23, 23, 23]


def test_thanksgiving_shortens_the_globex_sessions_to_1200_chicago() -> None:
    grid = expected_bars("GLOBEX", "1h", pd.Timestamp("2026-11-21", tz="UTC"),
                         pd.Timestamp("2026-11-28", tz="UTC"))  # fmt: skip
    local = grid.starts.tz_convert(CHICAGO)
    per_session = pd.Series(1, index=local).groupby((local + pd.Timedelta(hours=7)).date).sum()
    # Mon-Wed: 17:00-16:00 (23 bars); Thanksgiving and Friday: 17:00 the evening before-12:00 (19).
    assert {d.isoformat(): int(n) for d, n in per_session.items()} == {
        "2026-11-23": 23, "2026-11-24": 23, "2026-11-25": 23, "2026-11-26": 19, "2026-11-27": 19,
    }  # fmt: skip
    assert grid.ends[-1] == pd.Timestamp("2026-11-27 12:00", tz=CHICAGO)
    christmas = expected_bars("GLOBEX", "1d", pd.Timestamp("2026-12-24", tz="UTC"),
                              pd.Timestamp("2026-12-29", tz="UTC"))  # fmt: skip
    assert [ts.strftime("%m-%d") for ts in christmas.starts] == ["12-24", "12-28"]


def test_globex_minute_bars_skip_the_break_and_a_session_is_1380_minutes() -> None:
    lo, hi = (
        pd.Timestamp("2026-11-17 21:00", tz=CHICAGO),
        pd.Timestamp("2026-11-18 21:00", tz=CHICAGO),
    )
    grid = expected_bars("GLOBEX", "1m", lo.tz_convert("UTC"), hi.tz_convert("UTC"))
    local = grid.starts.tz_convert(CHICAGO)
    assert len(grid) == 24 * 60 - 60
    assert not any(ts.hour == 16 for ts in local)
