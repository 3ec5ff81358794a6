"""A mixed universe — a stock, a forex pair and a dated future — backfills in one run through the
IB simulator with pacing on (issue 13): every series complete on its own calendar, no pacing
violation, features computed for each, and each series' metadata naming its qualified contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candleflow.features.store import FeatureStore
from candleflow.ibsim import IBSimulator, SimStats
from candleflow.loading.calendars import to_utc
from candleflow.loading.gaps import analyze_gaps
from candleflow.models import GapClass
from candleflow.store.bar_store import BarStore
from flows.backfill import backfill

UNIVERSE = ["AAPL", "EUR.USD", "ES:fut:202612"]
START, END = "2026-10-01", "2026-10-31"  # an inclusive end date: up to Nov 1 00:00 local
CALENDARS = {"AAPL": "XNYS", "EUR.USD": "FX", "ES:FUT:202612": "GLOBEX"}
# Hand-counted hourly bars in October 2026:
# - AAPL (NYSE, 7 bars a day; 22 sessions, no holiday): 154.
# - EUR.USD (Sun 17:00 - Fri 17:00 New York): 720 h from Oct 1 00:00 to Oct 31 00:00, less four
#   48 h weekends and Fri Oct 30 17:00-24:00: 720 - 192 - 7 = 521.
# - ESZ6 (17:00-16:00 Chicago, 23 bars a session; from Oct 1 00:00 CT, Oct 1's session has 16
#   bars left, then 21 sessions Oct 2 - Oct 30; no CME holiday): 16 + 21 * 23 = 499.
EXPECTED_ROWS = {"AAPL": 154, "EUR.USD": 521, "ES:FUT:202612": 499}
SMALL_SPEC = {"sma": [5], "ret": [1]}


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, SimStats, Path]]:
    store = tmp_path_factory.mktemp("mixed")
    with IBSimulator(seed=5, time_scale=0.01) as sim:
        state = backfill(
            UNIVERSE, timeframes=["1h"], mode="full", start=START, end=END, max_parallel=3,
            features=SMALL_SPEC, source="ib", store=str(store),
            source_options={"ib_host": "127.0.0.1", "ib_port": sim.port, "time_scale": 0.01},
            return_state=True,
        )  # fmt: skip
        stats = sim.stats
    yield state, stats, store


def test_a_mixed_universe_backfills_completely_in_one_run_without_pacing_violations(
    mixed_run: tuple[Any, SimStats, Path],
) -> None:
    state, stats, store = mixed_run
    assert state.is_completed(), state
    assert "failed" not in (state.message or ""), state.message
    assert stats.violations == 0
    assert {q.contract.sec_type for q in stats.queries} == {"STK", "CASH", "FUT"}
    assert {q.what_to_show for q in stats.queries if q.contract.sec_type == "CASH"} == {"MIDPOINT"}
    bars = BarStore(store)
    for symbol, calendar in CALENDARS.items():
        frame = bars.read("ib", symbol, "1h")
        assert len(frame) == EXPECTED_ROWS[symbol], symbol
        lo, hi = to_utc(START, calendar), to_utc("2026-11-01", calendar)
        report = analyze_gaps(frame.index, calendar, "1h", lo, hi)
        assert (report.bars(GapClass.MISSING), report.unexpected) == (0, 0), symbol
        assert len(FeatureStore(store).read("ib", symbol, "1h")) == len(frame), symbol
    assert bars.read("ib", "EUR.USD", "1h")["volume"].isna().all()  # MIDPOINT: no volume


def test_each_series_metadata_shows_its_qualified_contract(
    mixed_run: tuple[Any, SimStats, Path],
) -> None:
    _, _, store = mixed_run
    metas = {s: BarStore(store).read_meta("ib", s, "1h") for s in CALENDARS}
    contracts = {s: meta.get("instrument") for s, meta in metas.items()}
    assert all(isinstance(c, dict) for c in contracts.values()), contracts
    aapl, fx, es = (contracts[s] for s in CALENDARS)
    assert isinstance(aapl, dict) and isinstance(fx, dict) and isinstance(es, dict)
    assert (aapl["sec_type"], aapl["con_id"], aapl["primary_exchange"]) == ("STK", 265598, "NASDAQ")
    assert (fx["sec_type"], fx["con_id"], fx["exchange"], fx["local_symbol"]) == (
        "CASH", 12087792, "IDEALPRO", "EUR.USD"
    )  # fmt: skip
    assert (es["sec_type"], es["exchange"], es["multiplier"], es["expiry"], es["local_symbol"]) == (
        "FUT", "CME", "50", "20261218", "ESZ6"
    )  # fmt: skip
    assert int(str(es["con_id"])) > 0
