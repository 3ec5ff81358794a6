"""Schedules fire: on the managed server with a real process worker, an interval schedule makes the
scheduler create runs and the worker takes one to Completed; the nightly cron has upcoming runs.

This is what broke silently with SQLAlchemy 2.1 (the scheduler service failed every loop, so
schedules were registered but never created a run). The scheduler's loop is shortened through
Prefect's own setting.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from candleflow.store.bar_store import BarStore
from tests.e2e.prefect_server import prefect_server
from tests.timing import wait_until

pytestmark = pytest.mark.slow

FAST_SCHEDULER = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}


def test_an_interval_schedule_creates_runs_that_a_worker_completes(tmp_path: Path) -> None:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.schedules import IntervalSchedule

    store = tmp_path / "store"
    with prefect_server(tmp_path, extra_env=FAST_SCHEDULER) as server:
        server.deploy_all()
        with server.client() as client:
            nightly = client.read_deployment_by_name("backfill/nightly-backfill")
            load = client.read_deployment_by_name("load-data/load-data")
            client.create_deployment_schedules(
                load.id,
                [
                    DeploymentScheduleCreate(
                        schedule=IntervalSchedule(interval=timedelta(seconds=15)),
                        active=True,
                        parameters={
                            "store": str(store),
                            "mode": "full",
                            "start": "2024-01-02",
                            "end": "2024-01-31",
                        },
                    )
                ],
            )

            def runs_of(deployment_id: Any, *states: StateType) -> list[Any]:
                return list(
                    client.read_flow_runs(
                        deployment_filter=DeploymentFilter(
                            id=DeploymentFilterId(any_=[deployment_id])
                        ),
                        flow_run_filter=FlowRunFilter(
                            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states)))
                        )
                        if states
                        else None,
                    )
                )

            # The cron's upcoming runs: created by the scheduler, weekdays at 18:30 New York.
            upcoming = wait_until(lambda: runs_of(nightly.id, StateType.SCHEDULED), 120,
                                  "the nightly cron's upcoming runs")  # fmt: skip
            for run in upcoming:
                local = run.expected_start_time.astimezone(ZoneInfo("America/New_York"))
                assert (local.hour, local.minute) == (18, 30) and local.weekday() < 5
                assert run.auto_scheduled

            with server.worker("candleflow", tmp_path / "worker.log"):
                done = wait_until(lambda: runs_of(load.id, StateType.COMPLETED), 240,
                                  "a scheduled load-data run to complete")  # fmt: skip
            log = (tmp_path / "worker.log").read_text(errors="replace")
            assert done[0].auto_scheduled, log  # the scheduler made it, not the test
            assert done[0].parameters["store"] == str(store)
    bars = BarStore(store).read("synthetic", "AAPL", "1h")
    assert len(bars) > 0 and bars.index[0].year == 2024
