"""The direct pipeline (``run_load``, the demo's ``--direct``) and the load-data flow are one
composition (``candleflow.loading.pipeline.load_series``): for the same request on the same source
they report the same summary and record the same series metadata and bars — for a full load, a
tail that extends it, a local check, a failed segment and a cancel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from candleflow.errors import Cancelled, CandleflowError
from candleflow.loading.pipeline import LoadRequest, run_load, stage_plan
from candleflow.models import Segment
from candleflow.progress import CancelToken, ProgressTracker
from candleflow.sources.synthetic import SyntheticSource
from candleflow.store.bar_store import BarStore
from flows import load_data as load_module
from flows.load_data import load_data
from tasks.progress import progress_context
from tests.flows.helpers import SourceSpy

SYMBOL, TF = "AAPL", "1h"
#: What differs between two runs of the same load: when and how fast it ran.
VOLATILE = frozenset({"duration_s", "last_fetch", "fetch_duration_s", "updated_at"})

Fail = Callable[[Segment], Exception | None]


def _steady(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in VOLATILE}


def _direct(store: Path, step: dict[str, str], fail: Fail | None) -> dict[str, Any]:
    """``step`` loaded by ``run_load``; the summary as a dict (a cancelled one from ``partial``)."""
    request = LoadRequest.parse(SYMBOL, TF, **step)
    token = CancelToken()
    source = SyntheticSource(seed=0, fail=_cancelling(fail, token))
    tracker = ProgressTracker("t", stages=stage_plan(request.mode), cancel_token=token)
    try:
        return run_load(request, source, BarStore(store), tracker=tracker).to_dict()
    except Cancelled as exc:
        return exc.partial.to_dict()  # type: ignore[union-attr, no-any-return]


def _flow(
    store: Path, step: dict[str, str], fail: Fail | None, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """``step`` loaded by the load-data flow; the summary it published."""
    token = CancelToken()
    monkeypatch.setattr(load_module, "make_source", SourceSpy(fail=_cancelling(fail, token)))
    with progress_context(token=token) as handle:
        load_data(SYMBOL, TF, store=str(store), return_state=True, **step)  # type: ignore[arg-type]
    assert handle.summary is not None
    return handle.summary


def _cancelling(fail: Fail | None, token: CancelToken) -> Fail | None:
    """``fail``, except that a ``"cancel"`` result cancels ``token`` (a user's cancel mid-fetch)."""
    if fail is None:
        return None

    def inject(segment: Segment) -> Exception | None:
        outcome = fail(segment)
        if isinstance(outcome, Cancelled):
            token.cancel(str(outcome))
            return None
        return outcome

    return inject


def _cancel_after(n: int) -> Fail:
    seen: list[Segment] = []

    def fail(segment: Segment) -> Exception | None:
        seen.append(segment)
        return Cancelled("test cancel") if len(seen) == n else None

    return fail


def _march_fails(segment: Segment) -> Exception | None:
    return CandleflowError("simulated outage") if segment.start.month == 3 else None


FULL = {"start": "2024-01-01", "end": "2024-03-31", "mode": "full"}
TAIL = {"start": "2024-01-01", "end": "2024-05-31", "mode": "tail"}
LOCAL = {"start": "2024-01-01", "end": "2024-06-30", "mode": "local"}


@pytest.mark.parametrize(
    ("steps", "make_fail", "first"),
    [
        ([FULL, TAIL, LOCAL], lambda: None, lambda s: s["rows_added"] > 0),
        ([FULL, TAIL], lambda: _march_fails, lambda s: len(s["failed_segments"]) == 1),
        ([FULL, FULL], lambda: _cancel_after(2), lambda s: s["cancelled"]),
    ],
    ids=["full-tail-local", "failed-segment", "cancelled-then-resumed"],
)
def test_the_direct_path_and_the_flow_report_and_record_the_same(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    steps: list[dict[str, str]],
    make_fail: Callable[[], Fail | None],
    first: Callable[[dict[str, Any]], bool],
) -> None:
    direct, flowed = tmp_path / "direct", tmp_path / "flow"
    direct_fail, flow_fail = make_fail(), make_fail()  # each path gets its own counter
    for i, step in enumerate(steps):
        expected = _direct(direct, step, direct_fail if i == 0 else None)
        got = _flow(flowed, step, flow_fail if i == 0 else None, monkeypatch)
        assert _steady(got) == _steady(expected), step
        assert i > 0 or first(got), got
        meta = [BarStore(root).read_meta("synthetic", SYMBOL, TF) for root in (direct, flowed)]
        assert _steady(meta[1]) == _steady(meta[0]), step
        bars = [BarStore(root).read("synthetic", SYMBOL, TF) for root in (direct, flowed)]
        pd.testing.assert_frame_equal(bars[1], bars[0])


def _minute_file(path: Path) -> Path:
    """Two days of 1m bars on the exchange's clock, as a vendor writes them (one bar missing)."""
    from candleflow.loading.calendars import expected_bars

    grid = expected_bars(
        "XNYS", "1m", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-04", tz="UTC")
    )
    starts = grid.starts.tz_convert("America/New_York").tz_localize(None).delete(100)
    rows = [f"{t:%Y-%m-%d %H:%M:%S},10,11,9,10.5,100" for t in starts]
    path.write_text("datetime,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def test_a_file_import_reads_once_and_the_flow_equals_the_direct_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from candleflow.sources import files

    reads: list[Path] = []
    real = files.load_bars

    def counting(path: Path, **kwargs: Any) -> Any:
        reads.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(files, "load_bars", counting)
    csv = _minute_file(tmp_path / "ibm_1m.csv")
    request = LoadRequest.parse("IBM", "1m")
    expected = run_load(request, files.FileSource(csv), BarStore(tmp_path / "direct")).to_dict()
    assert len(reads) == 1
    with progress_context() as handle:
        load_data("IBM", "1m", source="files", path=str(csv), store=str(tmp_path / "flow"))
    assert len(reads) == 2, "the flow read the file more than once"
    got = handle.summary
    assert got is not None
    assert _steady(got) == _steady(expected)
    assert (got["segments"], got["failed_segments"], got["missing_bars_left"]) == (1, [], 1)
    assert got["rows_after"] == 779
    metas = [BarStore(tmp_path / r).read_meta("files", "IBM", "1m") for r in ("direct", "flow")]
    assert _steady(metas[1]) == _steady(metas[0])
    assert metas[1]["time_zone"] == "America/New_York"


def test_a_range_outside_the_file_through_the_flow(tmp_path: Path) -> None:
    csv = _minute_file(tmp_path / "ibm_1m.csv")
    with progress_context() as handle:
        load_data("IBM", "1m", start="2999-01-01", source="files", path=str(csv),
                  store=str(tmp_path / "store"))  # fmt: skip
    assert handle.summary is not None
    assert "starts in the future" in str(handle.summary["notice"])
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.*"))
