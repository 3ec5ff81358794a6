"""What a Prefect UI user sees on a run's Artifacts tab, read back through the API: one live
backfill queue table per run (not one card per update), a progress description with percent,
stage, counters and ETA, and the optimize report picture embedded in the summary."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

from flows.backfill import backfill
from tasks.progress import RunHandle, progress_context

SYMBOLS = ["AAPL", "MSFT", "SPY", "QQQ", "IBM", "IWM"]


def _run_artifacts(flow_run_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifact_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        return list(client.read_artifacts(artifact_filter=artifact_filter))


def _latest_of_key(key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    flt = ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
    with get_client(sync_client=True) as client:
        (latest,) = client.read_latest_artifacts(artifact_filter=flt)
    return latest


class _DescriptionPoller:
    """Reads the run's progress artifact description through the API while the run goes on."""

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        if not self.handle.started.wait(120) or self.handle.flow_run_id is None:
            return
        while not self.handle.finished.is_set():
            for artifact in _run_artifacts(self.handle.flow_run_id):
                if artifact.type == "progress" and artifact.description:
                    self.seen.append(artifact.description)
            self.handle.finished.wait(0.3)

    def join(self) -> list[str]:
        self._thread.join(30)
        return self.seen


RUNNING = re.compile(r"^\d{1,3}\.\d\d% · ETA \d+:\d\d · Backfilling: .+$")


def test_a_backfill_of_twelve_series_leaves_one_live_queue_table_on_its_run(
    tmp_path: Path,
) -> None:
    # Slow enough per request that the queue is published several times while rows run.
    delays = dict.fromkeys(SYMBOLS, 0.15)
    with progress_context() as handle:
        poller = _DescriptionPoller(handle)
        summary = backfill(
            SYMBOLS, timeframes=["1d", "1h"], mode="full", start="2024-01-01", end="2024-03-31",
            max_parallel=4, features="none", store=str(tmp_path), delays=delays,
        )  # fmt: skip
    assert isinstance(summary, dict) and summary["done"] == 12
    assert handle.flow_run_id is not None

    # While it ran, the progress card said how far (two decimals), what, and when it ends.
    seen = poller.join()
    running = [d for d in seen if RUNNING.match(d)]
    assert running, seen
    assert any(not d.startswith(("0.00%", "100.00%")) for d in running), running

    on_run = _run_artifacts(handle.flow_run_id)
    queue = [a for a in on_run if a.key == "backfill-queue"]
    assert len(queue) == 1, [(a.key, a.type) for a in on_run]
    rows = json.loads(queue[0].data)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"done"}
    assert all(r["progress"] == "100.00%" and r["rows"] > 0 for r in rows)
    assert "12 done" in (queue[0].description or "")
    # It was live: created at the start (all queued) and updated in place since.
    assert queue[0].updated > queue[0].created
    # Every card on the run, one of each: progress, queue, summary.
    assert sorted(a.key for a in on_run) == ["backfill", "backfill-queue", "backfill-summary"]
    # The key's page shows the same (final) table.
    latest = _latest_of_key("backfill-queue")
    assert latest.latest_id == queue[0].id and json.loads(latest.data) == rows


def test_the_optimize_summary_embeds_the_equity_picture(tmp_path: Path) -> None:
    import base64

    from candleflow.sources.synthetic import SyntheticSource
    from candleflow.store.bar_store import BarStore
    from flows.optimize import optimize

    bars = SyntheticSource(seed=0).bars("AAPL", "1d", "2022-01-01", "2024-12-31")
    BarStore(tmp_path).write("synthetic", "AAPL", "1d", bars)
    with progress_context() as handle:
        summary = optimize("AAPL", "1d", method="grid", iterations=6, store=str(tmp_path))
    assert isinstance(summary, dict) and handle.flow_run_id is not None

    (markdown,) = [a for a in _run_artifacts(handle.flow_run_id) if a.type == "markdown"]
    found = re.search(r"!\[equity and drawdown\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)",
                      markdown.data)  # fmt: skip
    assert found, markdown.data[:500]
    png = base64.b64decode(found.group(1))
    assert png == Path(summary["report_png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
