"""The backfill flow (under the flow tests' Prefect harness) on an s3:// root stores the bars,
metadata and features it stores on a local root."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from candleflow.features.store import FeatureStore
from candleflow.store.bar_store import BarStore
from tests.flows.conftest import prefect_harness  # noqa: F401 - the flows' harness, autouse
from tests.flows.helpers import artifacts

pytestmark = pytest.mark.slow

SYMBOLS = ["AAPL", "MSFT", "EURUSD=X"]
TIMEFRAMES = ["1d", "1h"]
SPEC = {"sma": [5], "rsi": [14]}


def _backfill(store: str, mode: str, end: str) -> None:
    from flows.backfill import backfill

    state = backfill(
        SYMBOLS, timeframes=TIMEFRAMES, mode=mode, start="2024-01-01", end=end, max_parallel=3,
        features=SPEC, store=store, return_state=True,
    )  # fmt: skip
    assert state.is_completed(), state


def test_backfill_and_tail_on_s3_equal_a_local_root(s3_root: str, tmp_path: Path) -> None:
    local = str(tmp_path / "local")
    for store in (s3_root, local):
        _backfill(store, "full", "2024-02-29")
        _backfill(store, "tail", "2024-03-29")
    s3, here = BarStore(s3_root), BarStore(local)
    assert s3.series() == here.series() and len(s3.series()) == len(SYMBOLS) * len(TIMEFRAMES)
    for key in here.series():
        pd.testing.assert_frame_equal(s3.read(*key), here.read(*key))
        pd.testing.assert_frame_equal(
            FeatureStore(s3).read(*key, internal=True), FeatureStore(here).read(*key, internal=True)
        )
        ms, ml = s3.read_meta(*key), here.read_meta(*key)
        for field in ("rows", "first", "last", "history_rows", "api_calls_total", "feature_count"):
            assert ms[field] == ml[field], (key, field)


def test_an_optimization_on_s3_puts_its_report_in_the_bucket_and_embeds_the_picture(
    s3_root: str,
) -> None:
    from candleflow.store.files import get_file
    from flows.optimize import optimize
    from tasks.progress import progress_context

    _backfill(s3_root, "full", "2024-06-28")
    with progress_context() as handle:
        state = optimize("AAPL", "1h", method="random", iterations=6, store=s3_root,
                         return_state=True)  # fmt: skip
    assert state.is_completed(), state
    summary = handle.summary
    assert summary is not None
    png, page = summary["report_png"], summary["report_html"]
    folder = f"{s3_root}/reports/optimize/AAPL/1h/"
    assert png.startswith(folder) and page.startswith(folder) and png.endswith(".png")
    image = get_file(s3_root, png[len(s3_root) + 1 :])
    assert image is not None and image[:8] == b"\x89PNG\r\n\x1a\n"
    (markdown,) = artifacts(handle.flow_run_id, ("markdown",))
    assert png in markdown.data and "data:image/png;base64," in markdown.data
