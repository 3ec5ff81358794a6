"""The ETA from the dominant work unit (candleflow.progress.eta): exact on constant rates, silent
until meaningful, and within the issue's 20 % on the benchmark's product-shaped runs (fake clock,
so deterministic: no wall time is measured)."""

from __future__ import annotations

import pytest

from bench.bench_eta import RUNS, measure
from candleflow.progress.eta import EtaEstimator


def test_steps_at_a_constant_rate_give_the_exact_remaining_time_between_steps() -> None:
    eta = EtaEstimator()
    eta.enter_stage(weight=1.0, now=0.0)
    for step in range(1, 5):  # one item every 2 s, 10 items
        eta.observe(2.0 * step, float(step))
    assert eta.estimate(8.0, 10, 0.0, 1.0) == pytest.approx(12.0)
    assert eta.estimate(9.5, 10, 0.0, 1.0) == pytest.approx(10.5)  # no saw-tooth between steps


def test_nothing_is_said_before_it_means_something() -> None:
    eta = EtaEstimator(min_fraction=0.1, min_seconds=1.0)
    eta.enter_stage(weight=1.0, now=0.0)
    assert eta.estimate(0.1, 100, 0.0, 1.0) is None  # no progress yet
    eta.observe(0.5, 20.0)
    assert eta.estimate(0.5, 100, 0.0, 1.0) is None  # too soon
    eta.observe(2.0, 30.0)
    assert eta.estimate(2.0, 100, 0.0, 1.0) is not None


def test_the_stages_to_come_go_at_the_pace_of_the_short_stages_done() -> None:
    eta = EtaEstimator()
    eta.enter_stage(weight=10.0, now=0.0)  # a short stage: 1 s for weight 10
    eta.enter_stage(weight=80.0, now=1.0)
    eta.observe(11.0, 5.0)  # 5 of 10 items in 10 s
    # 10 s left here, and weight 10 still to come at 0.1 s per weight.
    assert eta.estimate(11.0, 10, 10.0, 100.0) == pytest.approx(11.0)
    eta.enter_stage(weight=10.0, now=21.0)  # the last, short stage, without items
    assert eta.estimate_short(21.0, 0.5, 0.0, 100.0) == pytest.approx(0.5)


@pytest.mark.parametrize("name", list(RUNS))
def test_within_20_percent_from_10_percent_done_on_constant_rates(name: str) -> None:
    result = measure(name, *RUNS[name])
    assert result.ok, result


def test_the_artifact_description_leads_with_percent_and_eta_while_running() -> None:
    from candleflow.progress import ProgressEvent
    from candleflow.progress.wording import describe_progress

    running = ProgressEvent(
        "load AAPL 1h", percentage=62.5, stage="fetch_segments", detail="Segment 3/8: x",
        counters={"rows": 1250, "api_calls": 4}, eta=12.0,
    )  # fmt: skip
    assert describe_progress(running) == (
        "62.50% · ETA 0:12 · Fetching segment 3/8: x · 1,250 bars · 4 API calls"
    )
    early = ProgressEvent("load AAPL 1h", percentage=1.0, stage="validate_symbol")
    assert describe_progress(early) == "1.00% · Validating symbol"  # no ETA before it means much
    done = ProgressEvent("load AAPL 1h", percentage=100.0, done=True, elapsed=32.0)
    assert describe_progress(done) == "Done in 0:32"
