"""The core pipeline against an s3:// root gives what it gives against a local root: loads and
tails through :func:`run_load`, features and a backtest over the stored bars."""

from __future__ import annotations

import pandas as pd

from candleflow.backtest.engine import run_backtest
from candleflow.features.store import FeatureStore, update_features
from candleflow.loading.pipeline import LoadRequest, run_load
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore

NOW = pd.Timestamp("2025-06-01", tz="UTC")


def _load(store: BarStore, mode: str, end: str, tf: str = "1h") -> tuple[int, int]:
    request = LoadRequest.parse("AAPL", tf, start="2023-11-01", end=end, mode=mode)
    summary = run_load(request, SyntheticSource(seed=5), store, now=NOW)
    return summary.rows_added, summary.segments


def _same_meta(a: BarStore, b: BarStore, tf: str) -> None:
    keep = {"rows", "first", "last", "head_timestamp", "align", "gaps_left"}
    ma, mb = a.read_meta("synthetic", "AAPL", tf), b.read_meta("synthetic", "AAPL", tf)
    assert {k: v for k, v in ma.items() if k in keep} == {k: v for k, v in mb.items() if k in keep}


def test_load_and_tail_on_s3_store_the_bars_a_local_root_stores(
    s3_store: BarStore, local_store: BarStore
) -> None:
    for tf in ("1h", "5m"):
        full = [_load(s, "full", "2024-02-15", tf) for s in (s3_store, local_store)]
        assert full[0] == full[1] and full[0][0] > 0
        tail = [_load(s, "tail", "2024-03-20", tf) for s in (s3_store, local_store)]
        assert tail[0] == tail[1] and tail[0][0] > 0
        again = _load(s3_store, "tail", "2024-03-20", tf)
        assert again == (0, 0)
        pd.testing.assert_frame_equal(
            s3_store.read("synthetic", "AAPL", tf), local_store.read("synthetic", "AAPL", tf)
        )
        _same_meta(s3_store, local_store, tf)
    assert s3_store.series() == local_store.series()


def test_features_and_a_backtest_on_s3_equal_those_on_a_local_root(
    s3_store: BarStore, local_store: BarStore
) -> None:
    spec = {"sma": [3, 10], "rsi": [5], "macd": [[12, 26, 9]]}
    results = []
    for store in (s3_store, local_store):
        _load(store, "full", "2024-02-15")
        features = FeatureStore(store)
        first = update_features(store, features, "synthetic", "AAPL", "1h", spec)
        assert first.mode == "full"
        _load(store, "tail", "2024-03-20")
        tail = update_features(store, features, "synthetic", "AAPL", "1h", spec)
        assert tail.mode == "incremental"
        same = update_features(store, features, "synthetic", "AAPL", "1h", spec)
        assert same.mode == "unchanged"
        results.append((first, tail, features.read("synthetic", "AAPL", "1h", internal=True)))
        assert store.read_meta("synthetic", "AAPL", "1h")["feature_count"] == first.feature_count
    (s3_first, s3_tail, s3_values), (lo_first, lo_tail, lo_values) = results
    assert (s3_first.rows, s3_tail.rows_recomputed) == (lo_first.rows, lo_tail.rows_recomputed)
    pd.testing.assert_frame_equal(s3_values, lo_values)
    assert len(FeatureStore(s3_store).partitions("synthetic", "AAPL", "1h")) == len(
        FeatureStore(local_store).partitions("synthetic", "AAPL", "1h")
    )

    params = {"fast": 5, "slow": 20}
    s3_result = run_backtest(s3_store.read("synthetic", "AAPL", "1h"), "sma_cross", params)
    local_result = run_backtest(local_store.read("synthetic", "AAPL", "1h"), "sma_cross", params)
    assert s3_result.metrics == local_result.metrics


def test_a_series_is_described_alike_on_s3_and_locally(
    s3_store: BarStore, local_store: BarStore
) -> None:
    from candleflow.store.inspect import describe_series, render_text

    reports = []
    for store in (s3_store, local_store):
        _load(store, "full", "2024-02-15")
        reports.append(describe_series(store, "synthetic", "AAPL", "1h", now=NOW).to_dict())
    s3_report, local_report = reports
    s3_parts, local_parts = s3_report.pop("partitions"), local_report.pop("partitions")
    for report in reports:
        for timing in ("updated_at", "fetch_duration_s"):
            report["meta"].pop(timing)  # type: ignore[attr-defined]
    assert s3_report == local_report
    assert [p["rows"] for p in s3_parts] == [p["rows"] for p in local_parts]  # type: ignore[index]
    assert all(str(p["path"]).startswith("bars/source=synthetic/") for p in s3_parts)  # type: ignore[index]
    text = render_text(describe_series(s3_store, "synthetic", "AAPL", "1h", now=NOW))
    assert "year=2023." in text and "year=2024." in text
