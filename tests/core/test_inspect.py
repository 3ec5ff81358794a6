"""describe_series: what a stored series holds, with the gaps left, for people and for scripts.

Stores are built on tmp_path. The answers are hand-checked: 2024 XNYS has 1,755 hourly bars
(249 full days × 7 + 3 early closes × 4); 2024-03-05 is a Tuesday in EST (UTC-5), whose seven
bars run 14:30 → 21:00 UTC.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from candleflow.errors import InvalidRequest, StoreCorrupted
from candleflow.loading.calendars import expected_bars
from candleflow.models import GapClass
from candleflow.store.bar_store import BarStore
from candleflow.store.inspect import PartitionInfo, describe_series, render_text
from tests.core.conftest import ramp_bars, utc

START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC")
NOW = pd.Timestamp("2025-06-01", tz="UTC")
GAP_DAY = pd.Timestamp("2024-03-05", tz="UTC")


def year_minus_one_day() -> pd.DatetimeIndex:
    starts = expected_bars("XNYS", "1h", START, END).starts
    day = (starts >= GAP_DAY) & (starts < GAP_DAY + pd.Timedelta(days=1))
    assert day.sum() == 7
    return starts[~day]


@pytest.fixture
def filled(store: BarStore) -> BarStore:
    store.write("synthetic", "AAPL", "1h", ramp_bars(year_minus_one_day()))
    return store


def test_reports_rows_range_partitions_and_the_one_gap(filled: BarStore) -> None:
    report = describe_series(filled, "synthetic", "AAPL", "1h", now=NOW)

    assert report.rows == 1748
    assert report.first == utc("2024-01-02 14:30")
    assert report.last == utc("2024-12-31 20:00")
    assert report.partitions == (
        PartitionInfo(
            "bars/source=synthetic/symbol=AAPL/timeframe=1h/year=2024/year=2024.parquet", 1748
        ),
    )
    assert report.align == "clock"
    assert (report.expected, report.present, report.unexpected) == (1755, 1748, 0)
    assert [(g.start, g.end, g.bars, g.kind) for g in report.gaps] == [
        (utc("2024-03-05 14:30"), utc("2024-03-05 21:00"), 7, GapClass.MISSING)
    ]
    assert report.missing_bars == 7
    assert report.meta["rows"] == 1748  # the store's own _meta.json, passed through


def test_to_dict_is_json_with_the_keys_scripts_rely_on(filled: BarStore) -> None:
    data = json.loads(
        json.dumps(describe_series(filled, "synthetic", "AAPL", "1h", now=NOW).to_dict())
    )

    assert data["rows"] == 1748
    assert data["first"] == "2024-01-02T14:30:00+00:00"
    assert data["last"] == "2024-12-31T20:00:00+00:00"
    assert data["gaps"] == [
        {
            "start": "2024-03-05T14:30:00+00:00",
            "end": "2024-03-05T21:00:00+00:00",
            "bars": 7,
            "class": "missing",
        }
    ]
    assert (data["source"], data["symbol"], data["timeframe"]) == ("synthetic", "AAPL", "1h")
    assert data["partitions"] == [
        {
            "path": "bars/source=synthetic/symbol=AAPL/timeframe=1h/year=2024/year=2024.parquet",
            "rows": 1748,
        }
    ]
    assert (data["expected"], data["missing_bars"], data["unexpected"]) == (1755, 7, 0)


def test_head_timestamp_from_meta_classes_earlier_gaps_as_before_head(filled: BarStore) -> None:
    filled.update_meta("synthetic", "AAPL", "1h", head_timestamp="2024-06-03T13:30:00+00:00")
    report = describe_series(filled, "synthetic", "AAPL", "1h", now=NOW)
    assert [(g.bars, g.kind) for g in report.gaps] == [(7, GapClass.BEFORE_HEAD)]
    assert report.missing_bars == 0

    # An explicit head wins over the metadata.
    report = describe_series(filled, "synthetic", "AAPL", "1h", head=utc("2024-01-01"), now=NOW)
    assert [g.kind for g in report.gaps] == [GapClass.MISSING]


def test_empty_or_absent_series_is_described_as_empty(store: BarStore) -> None:
    report = describe_series(store, "synthetic", "MSFT", "1h")
    assert (report.rows, report.first, report.last, report.gaps) == (0, None, None, ())
    data = json.loads(json.dumps(report.to_dict()))
    assert (data["rows"], data["first"], data["last"], data["gaps"]) == (0, None, None, [])
    assert data["partitions"] == [] and data["missing_bars"] == 0
    assert "nothing stored" in render_text(report)


def test_symbol_is_normalised_like_everywhere_else(filled: BarStore) -> None:
    assert describe_series(filled, "synthetic", " aapl ", "1h", now=NOW).rows == 1748


def test_a_short_last_bar_does_not_invent_a_gap_after_it(store: BarStore) -> None:
    # The series ends with a 09:30 clock bar, which ends at 10:00; the 10:00 bar is not "missing".
    starts = expected_bars("XNYS", "1h", START, utc("2024-01-03 15:00")).starts
    assert starts[-1] == utc("2024-01-03 14:30")
    store.write("synthetic", "AAPL", "1h", ramp_bars(starts))
    report = describe_series(store, "synthetic", "AAPL", "1h", now=NOW)
    assert (report.rows, report.expected, report.gaps) == (8, 8, ())


def test_session_aligned_series_is_detected_and_misses_nothing(store: BarStore) -> None:
    index = expected_bars("XNYS", "1h", START, END, align="session").starts
    assert index[1] == utc("2024-01-02 15:30")  # 10:30 New York: a vendor's bar
    store.write("csv", "AAPL", "1h", ramp_bars(index))

    report = describe_series(store, "csv", "AAPL", "1h", now=NOW)
    assert report.align == "session"
    assert (report.rows, report.expected, report.unexpected, report.gaps) == (1755, 1755, 0, ())

    # Forced onto IB's grid the same complete series looks broken: the detection is what helps.
    forced = describe_series(store, "csv", "AAPL", "1h", align="clock", now=NOW)
    assert forced.missing_bars > 1000 and forced.unexpected > 1000

    # An alignment recorded in the metadata is taken as given.
    store.update_meta("csv", "AAPL", "1h", align="clock")
    assert describe_series(store, "csv", "AAPL", "1h", now=NOW).align == "clock"


def test_render_text_shows_range_and_gaps_in_exchange_time(filled: BarStore) -> None:
    text = render_text(describe_series(filled, "synthetic", "AAPL", "1h", now=NOW))
    assert "synthetic/AAPL/1h" in text
    assert "1,748" in text
    assert "2024-01-02 09:30 EST → 2024-12-31 15:00 EST" in text
    assert "missing  2024-03-05 09:30 EST → 2024-03-05 16:00 EST  7 bars" in text
    assert "year=2024.parquet (1,748)" in text


def test_corrupt_partition_raises_store_corrupted_naming_it(filled: BarStore) -> None:
    (path,) = filled.partitions("synthetic", "AAPL", "1h")
    path.write_bytes(b"not parquet at all")
    with pytest.raises(StoreCorrupted, match=re.escape("year=2024.parquet")):
        describe_series(filled, "synthetic", "AAPL", "1h", now=NOW)


def test_corrupt_metadata_raises_store_corrupted(filled: BarStore) -> None:
    meta = filled.series_dir("synthetic", "AAPL", "1h") / "_meta.json"
    meta.write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreCorrupted, match=re.escape("_meta.json")):
        describe_series(filled, "synthetic", "AAPL", "1h", now=NOW)
    meta.write_text(json.dumps({"head_timestamp": "yesterday-ish"}), encoding="utf-8")
    with pytest.raises(StoreCorrupted, match="head_timestamp"):
        describe_series(filled, "synthetic", "AAPL", "1h", now=NOW)


def test_bad_names_are_invalid_requests(filled: BarStore) -> None:
    with pytest.raises(InvalidRequest, match="unknown calendar"):
        describe_series(filled, "synthetic", "AAPL", "1h", calendar="NOPE")
    with pytest.raises(InvalidRequest, match="timeframe"):
        describe_series(filled, "synthetic", "AAPL", "7h")
    with pytest.raises(InvalidRequest, match="alignment"):
        describe_series(filled, "synthetic", "AAPL", "1h", align="hourly")
