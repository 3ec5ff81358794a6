"""The backfill flow under the Prefect harness: concurrency, isolation, the queue table, cancels,
and pacing through the IB simulator."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from candleflow.features.store import FeatureStore
from candleflow.progress.queue import QueueRow
from candleflow.store.bar_store import BarStore
from flows.backfill import backfill
from tasks.progress import progress_context
from tests.flows.helpers import artifacts, flow_run, wait_for

SYMBOLS = ["AAPL", "MSFT", "SPY", "QQQ", "IBM", "ZZZZ"]
TIMEFRAMES = ["1d", "1h"]
START, END = "2024-01-01", "2024-03-31"
SMALL_SPEC = {"sma": [5], "rsi": [14], "ret": [1]}


def _queue_table(flow_run_id: UUID) -> list[dict[str, Any]]:
    """The latest version of the run's queue table artifact, read back through the API."""
    tables = [a for a in artifacts(flow_run_id, ("table",)) if a.key == "backfill-queue"]
    assert tables, "no queue table artifact"
    data = tables[0].data  # most recently updated first
    return list(json.loads(data) if isinstance(data, str) else data)


def _seconds(text: str) -> float:
    return float(text.removesuffix(" s"))


def test_partial_failure_concurrency_queue_table_and_metadata(tmp_path: Path) -> None:
    delays = dict.fromkeys(SYMBOLS, 0.1) | {"MSFT": 0.6}  # MSFT is the slow one
    changes: list[QueueRow] = []
    with progress_context(row_sinks=[changes.append]) as handle:
        state = backfill(
            SYMBOLS, timeframes=TIMEFRAMES, mode="full", start=START, end=END, max_parallel=4,
            features=SMALL_SPEC, store=str(tmp_path), delays=delays,
            source_options={"unknown": ["ZZZZ"]}, return_state=True,
        )  # fmt: skip
    assert handle.flow_run_id is not None

    # Completed, with a warning naming the failed series.
    assert state.is_completed(), state
    assert "2 of 12 series failed" in (state.message or "")
    assert "ZZZZ" in (state.message or "")
    assert flow_run(handle.flow_run_id).state.is_completed()

    table = _queue_table(handle.flow_run_id)
    assert {(r["symbol"], r["timeframe"]) for r in table} == {
        (s, tf) for s in SYMBOLS for tf in TIMEFRAMES
    }
    for row in table:
        if row["symbol"] == "ZZZZ":
            assert row["status"] == "failed"
            assert "UnknownSymbol" in row["reason"] and "ZZZZ" in row["reason"]
        else:
            assert row["status"] == "done", row
            assert row["progress"] == "100.00%" and row["rows"] > 0 and row["API calls"] > 0
    # Rows went through the statuses in order, live.
    aapl = [c.status for c in changes if c.key == ("AAPL", "1h")]
    seen = [s for i, s in enumerate(aapl) if i == 0 or aapl[i - 1] != s]
    assert seen[0] == "validating" and seen[-2:] == ["storing", "done"], seen
    assert seen.index("fetching") < seen.index("engineering"), seen
    assert any(c.detail.startswith("Feature ") for c in changes)
    assert any(c.detail.startswith("Segment ") for c in changes)

    # Concurrency, from the order of the row changes (not from wall time): rows ran at once,
    # never more than max_parallel of them.
    running: set[tuple[str, str]] = set()
    finished: set[tuple[str, str]] = set()
    most = 0
    for change in changes:
        if change.key in finished or change.status == "queued":
            continue
        if change.status in ("done", "failed", "cancelled"):
            finished.add(change.key)
            running.discard(change.key)
        else:
            running.add(change.key)
        most = max(most, len(running))
    assert 2 <= most <= 4, most
    slow = next(r for r in table if r["symbol"] == "MSFT" and r["timeframe"] == "1h")
    assert _seconds(slow["duration"]) >= 3 * 0.6  # three 1h segments at 0.6 s each

    # The aggregate progress artifact and the final summary table.
    progress = artifacts(handle.flow_run_id)
    assert progress[0].data == 100 and progress[0].key == "backfill"
    summary = [a for a in artifacts(handle.flow_run_id, ("table",)) if a.key == "backfill-summary"]
    assert len(summary) == 1 and "10 done, 2 failed" in (summary[0].description or "")

    # Bars, features and metadata of every successful series.
    store = BarStore(tmp_path)
    for symbol in SYMBOLS[:-1]:
        for tf in TIMEFRAMES:
            meta = store.read_meta("synthetic", symbol, tf)
            assert meta["history_rows"] == len(store.read("synthetic", symbol, tf)) > 0
            assert meta["api_calls_total"] == meta["api_calls_last_run"] > 0
            assert meta["feature_count"] == 3 and meta["batch_size"] in ("1 Y", "1 M")
            assert "fetch_duration_s" in meta and "last_success" in meta
            assert len(FeatureStore(store).read("synthetic", symbol, tf)) == meta["history_rows"]
    assert not (
        tmp_path / "bars" / "source=synthetic" / "symbol=ZZZZ"
    ).exists() or not store.partitions("synthetic", "ZZZZ", "1d")

    # A second run adds its API calls to the cumulative count (a 1-day end beyond the store).
    before = store.read_meta("synthetic", "AAPL", "1d")
    again = backfill(["AAPL"], timeframes=["1d"], mode="tail", start=START, end="2024-04-30",
                     features=SMALL_SPEC, store=str(tmp_path))  # fmt: skip
    assert isinstance(again, dict) and again["done"] == 1
    meta = store.read_meta("synthetic", "AAPL", "1d")
    assert meta["api_calls_last_run"] >= 1 and meta["history_rows"] > before["history_rows"]
    assert meta["api_calls_total"] == before["api_calls_total"] + meta["api_calls_last_run"]


def test_a_backfill_where_every_series_fails_ends_failed(tmp_path: Path) -> None:
    state = backfill(["ZZZZ", "YYYY"], timeframes=["1d"], store=str(tmp_path), features="none",
                     source_options={"unknown": ["ZZZZ", "YYYY"]}, return_state=True)  # fmt: skip
    assert state.is_failed(), state
    assert "every series failed" in (state.message or "")


def test_cancelling_through_the_api_cancels_running_children_and_queued_rows(
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    symbols = ["AAPL", "MSFT", "SPY", "QQQ", "IBM", "NVDA"]
    fetching: set[tuple[str, str]] = set()
    two_fetching = threading.Event()

    def on_row(row: QueueRow) -> None:
        if row.status == "fetching" and row.rows > 0:
            fetching.add(row.key)
            if len(fetching) >= 2:
                two_fetching.set()

    box: dict[str, Any] = {}
    ready = threading.Event()

    def target() -> None:
        with progress_context(row_sinks=[on_row]) as handle:
            box["handle"] = handle
            ready.set()
            # Nine years, ~108 segments of 0.25 s a row: no row can finish (nor a third start)
            # while the cancel is being noticed, even on a busy machine (with one year, ~3 s a
            # row, one sometimes did). The delays are cancellable waits: no one waits them out.
            box["state"] = backfill(
                symbols, timeframes=["1h"], mode="full", start="2015-01-01", end="2023-12-31",
                max_parallel=2, store=str(tmp_path), features="none",
                delays=dict.fromkeys(symbols, 0.25), return_state=True,
            )  # fmt: skip

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10)
    assert two_fetching.wait(60), "two rows never got to fetching"
    handle = box["handle"]
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(handle.flow_run_id, Cancelling(message="test"))
    assert wait_for(lambda: bool(flow_run(handle.flow_run_id).state.is_cancelled()), 120)
    thread.join(60)
    assert not thread.is_alive() and box["state"].is_cancelled()

    table = {(r["symbol"], r["timeframe"]): r for r in _queue_table(handle.flow_run_id)}
    summary = handle.summary
    assert summary is not None
    runs = {(r["symbol"], r["timeframe"]): r["flow_runs"] for r in summary["rows"]}
    store = BarStore(tmp_path)
    started = [key for key, ids in runs.items() if ids]
    assert set(fetching) <= set(started) and len(started) >= 2
    for key, row in table.items():
        assert row["status"] == "cancelled", row
        if key in started:
            # The child load run ended Cancelled and kept what it fetched.
            assert flow_run(UUID(runs[key][0])).state.is_cancelled()
            assert len(store.read("synthetic", key[0], "1h")) > 0
        else:
            assert row["reason"].startswith("not started")
    assert len(started) < len(symbols), "every row had started: nothing was queued"


@pytest.mark.slow
def test_the_same_backfill_through_the_ib_simulator_keeps_pacing(tmp_path: Path) -> None:
    from candleflow.ibsim import IBSimulator

    with IBSimulator(seed=3, time_scale=0.01) as sim:
        state = backfill(
            SYMBOLS, timeframes=TIMEFRAMES, mode="full", start=START, end=END, max_parallel=4,
            features="none", source="ib", store=str(tmp_path),
            source_options={"ib_host": "127.0.0.1", "ib_port": sim.port, "time_scale": 0.01},
            return_state=True,
        )  # fmt: skip
        stats = sim.stats
    assert state.is_completed(), state
    assert "2 of 12 series failed" in (state.message or "")
    assert stats.violations == 0
    assert stats.historical_answered > 0
    assert len(BarStore(tmp_path).read("ib", "AAPL", "1h")) > 0


def test_the_cli_backfills_a_csv_universe_and_computes_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from candleflow.cli import main

    universe = tmp_path / "universe.csv"
    universe.write_text("symbol,exchange\nAAPL,XNYS\nSAP,XETR\n")
    store = tmp_path / "store"
    assert main(["backfill", "AAPL", "--timeframes", "7h", "--store", str(store)]) == 2
    assert "7h" in capsys.readouterr().err
    code = main(["backfill", str(universe), "--timeframes", "1d", "--start", START, "--end", END,
                 "--parallel", "2", "--store", str(store), "-q"])  # fmt: skip
    output = capsys.readouterr().out
    assert code == 0, output
    assert "2 done, 0 failed" in output and "SAP" in output
    assert len(BarStore(store).read("synthetic", "SAP", "1d")) > 0  # on the XETR calendar
    assert main(["features", "SAP", "--timeframe", "1d", "--store", str(store), "-q"]) == 0
    assert "unchanged" in capsys.readouterr().out


def test_the_queue_table_publishes_versions_throttled_and_keeps_final_statuses() -> None:
    from candleflow.progress.queue import QueueTable

    now = [0.0]
    published: list[tuple[str, list[dict[str, object]]]] = []
    queue = QueueTable(
        "backfill-queue", [("AAPL", "1d"), ("MSFT", "1d")], min_interval=1.0,
        publish=lambda key, title, rows: published.append((key, list(rows))),
        clock=lambda: now[0],
    )  # fmt: skip
    assert queue.flush() and len(published) == 1  # created at start, all queued
    assert {r["status"] for r in published[0][1]} == {"queued"}
    queue.update("AAPL", "1d", status="fetching", progress=40.0)
    assert not queue.publish(), "published within min_interval"
    now[0] = 1.5
    assert queue.publish() and len(published) == 2
    assert not queue.publish(), "nothing changed: no new version"
    queue.update("AAPL", "1d", progress=30.0)
    assert queue.row("AAPL", "1d").progress == 40.0, "progress went backwards"
    queue.update("AAPL", "1d", status="failed", reason="UnknownSymbol: AAPL")
    queue.update("AAPL", "1d", status="done")
    assert queue.row("AAPL", "1d").status == "failed", "a final status was overwritten"
    assert queue.flush() and published[-1][1][0]["reason"] == "UnknownSymbol: AAPL"
    assert queue.counts()["failed"] == 1 and queue.counts()["queued"] == 1
