"""The features flow under the Prefect harness: files beside the bars, "Feature i/N" progress,
and tail updates that recompute only the affected rows. (Values: tests/core/test_features.py.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from candleflow.features.catalogue import compute_features, parse_feature_spec
from candleflow.features.store import FeatureStore
from candleflow.progress import ListSink
from candleflow.progress.wording import describe_event
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from flows.features import features
from tasks.progress import progress_context
from tests.flows.helpers import artifacts

SYMBOL, TF = "AAPL", "1h"
SPEC = {"sma": [5, 20], "ema": [10], "rsi": [14], "macd": [[12, 26, 9]], "bb": [20]}


def _bars(start: str, end: str) -> pd.DataFrame:
    return SyntheticSource(seed=4).bars(SYMBOL, TF, start, end)


def test_features_are_written_beside_the_bars_with_feature_progress(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    store.write("synthetic", SYMBOL, TF, _bars("2023-11-01", "2024-02-15"))
    sink = ListSink()
    with progress_context(extra_sinks=[sink], min_interval=0) as handle:
        result = features(SYMBOL, TF, store=str(tmp_path), spec=SPEC)
    assert isinstance(result, dict) and result["mode"] == "full"
    n = parse_feature_spec(SPEC).feature_count
    assert result["feature_count"] == n

    # Same partitioning as the bars (two years → two yearly files each side).
    bar_parts = [p.relative_to(store.series_dir("synthetic", SYMBOL, TF)) for p in
                 store.partitions("synthetic", SYMBOL, TF)]  # fmt: skip
    fstore = FeatureStore(store)
    feat_parts = [p.relative_to(fstore.series_dir("synthetic", SYMBOL, TF)) for p in
                  fstore.partitions("synthetic", SYMBOL, TF)]  # fmt: skip
    assert feat_parts == bar_parts and len(bar_parts) == 2
    assert str(fstore.series_dir("synthetic", SYMBOL, TF)).startswith(str(tmp_path / "features"))
    stored = fstore.read("synthetic", SYMBOL, TF)
    assert stored.index.equals(store.read("synthetic", SYMBOL, TF).index)

    # "Feature i/N" progress, i rising to N, and the artifact ends at 100.
    counted = [e for e in sink.events if e.stage == "compute_features" and e.items_total]
    assert counted and all(e.items_total == n for e in counted)
    done = [e.items_done for e in counted]
    assert done == sorted(done) and done[-1] == n and len(set(done)) > 2
    assert describe_event(counted[1]).startswith(f"Feature {counted[1].items_done}/{n}: ")
    assert handle.flow_run_id is not None
    progress = artifacts(handle.flow_run_id)[0]
    assert progress.data == 100 and progress.key == "features-aapl-1h"


def test_a_tail_update_recomputes_only_the_new_rows_and_equals_a_full_recomputation(
    tmp_path: Path,
) -> None:
    store = BarStore(tmp_path)
    store.write("synthetic", SYMBOL, TF, _bars("2024-01-02", "2024-03-01"))
    first = features(SYMBOL, TF, store=str(tmp_path), spec=SPEC)
    assert isinstance(first, dict) and first["mode"] == "full"

    tail = _bars("2024-03-01", "2024-03-08")
    store.write("synthetic", SYMBOL, TF, tail)
    second = features(SYMBOL, TF, store=str(tmp_path), spec=SPEC)
    assert isinstance(second, dict) and second["mode"] == "incremental"
    assert second["rows_recomputed"] == len(tail)
    assert second["rows"] == first["rows"] + len(tail)

    stored = FeatureStore(store).read("synthetic", SYMBOL, TF)
    full = compute_features(store.read("synthetic", SYMBOL, TF), SPEC)
    pd.testing.assert_frame_equal(stored, full, check_freq=False)

    unchanged = features(SYMBOL, TF, store=str(tmp_path), spec=SPEC)
    assert isinstance(unchanged, dict) and unchanged["mode"] == "unchanged"
    assert unchanged["rows_recomputed"] == 0
