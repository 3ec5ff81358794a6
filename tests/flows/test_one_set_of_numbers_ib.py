"""One set of numbers through the IB simulator: the requests the simulator received are the API
calls the load reports — in its summary, its last progress event, and the stored metadata."""

from __future__ import annotations

from pathlib import Path

from candleflow.ibsim import IBSimulator
from candleflow.progress import ListSink
from candleflow.store.bar_store import BarStore
from flows.load_data import load_data
from tasks.progress import progress_context


def test_the_simulator_counts_what_the_load_reports(tmp_path: Path) -> None:
    sink = ListSink()
    with IBSimulator(seed=3, time_scale=0.001) as sim:
        with progress_context(extra_sinks=[sink], min_interval=0) as handle:
            load_data("AAPL", "1h", start="2024-01-02", end="2024-03-28", mode="full",
                      source="ib", store=str(tmp_path), ib_port=sim.port,
                      ib_time_scale=0.001)  # fmt: skip
        stats = sim.stats
    summary = handle.summary
    assert summary is not None and summary["missing_bars_left"] == 0
    received = stats.contract_requests + stats.head_requests + stats.historical_requests
    assert stats.historical_requests == summary["segments"] >= 2
    assert summary["api_calls"] == received
    assert sink.events[-1].counters["api_calls"] == received
    assert BarStore(tmp_path).read_meta("ib", "AAPL", "1h")["api_calls"] == received
    assert summary["rows_fetched"] == stats.bars_sent
