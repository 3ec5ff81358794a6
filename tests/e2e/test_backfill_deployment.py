"""The `nightly-backfill` deployment from prefect.yaml on a real Prefect server with a worker.

Separable and slow (~60 s): `prefect server start` on 127.0.0.1 with a temporary PREFECT_HOME,
`prefect deploy --all` from the checkout (offline), a process worker, a run triggered with
`prefect deployment run`, then the run's state and artifacts (progress, queue table, summary)
read through the API, and the deployment's schedule checked. Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from candleflow.store.bar_store import BarStore
from tests.e2e.prefect_server import ROOT, missing_deployments, prefect_server
from tests.timing import wait_until

pytestmark = pytest.mark.slow


def test_nightly_backfill_deploys_runs_on_a_worker_and_publishes_its_artifacts(
    tmp_path: Path,
) -> None:
    from candleflow.cli.runs import read_run_artifacts

    universe = [e for e in yaml.safe_load((ROOT / "deployments/universe.yaml").read_text())[
        "symbols"]]  # fmt: skip
    with prefect_server(tmp_path) as server:
        deploy = server.deploy_all()
        for name in ("load-data/load-data", "backfill/nightly-backfill", "features/features"):
            assert f"Deployment '{name}' successfully created" in deploy.stdout, deploy.stdout

        with server.client() as client:
            missing = missing_deployments(client)
            assert not missing, f"not deployed: {missing}\n{deploy.stdout}"
            deployment = client.read_deployment_by_name("backfill/nightly-backfill")
            assert deployment.work_pool_name == "candleflow"
            assert deployment.parameters["universe"] == "deployments/universe.yaml"
            schedules = client.read_deployment_schedules(deployment.id)
            assert len(schedules) == 1
            schedule: Any = schedules[0].schedule
            assert schedule.cron == "30 18 * * 1-5"
            assert schedule.timezone == "America/New_York"
            assert schedules[0].active
            assert client.read_deployment_by_name("features/features").parameters["spec"]

            store = tmp_path / "store"
            params = {"store": str(store), "start": "2024-01-02", "end": "2024-02-29"}
            with server.worker("candleflow", tmp_path / "worker.log"):
                started = server.prefect(
                    "deployment", "run", "backfill/nightly-backfill", "--params", json.dumps(params)
                )
                assert started.returncode == 0, started.stdout + started.stderr
                match = re.search(r"UUID: *([0-9a-f-]{36})", started.stdout)
                assert match, started.stdout
                run_id = UUID(match.group(1))

                def final() -> Any:
                    state = client.read_flow_run(run_id).state
                    return state if state is not None and state.is_final() else None

                state = wait_until(final, 180, "the backfill run to finish", step=0.5)
                log = (tmp_path / "worker.log").read_text(errors="replace")
                assert state.is_completed() and not state.message, f"{state!r}\n{log}"

            found = read_run_artifacts(client, [run_id], ("progress", "table"))
            progress = [a for a in found if a.type == "progress"]
            assert len(progress) == 1 and progress[0].data == 100
            queue = next(a for a in found if a.key == "backfill-queue")
            rows = json.loads(queue.data) if isinstance(queue.data, str) else queue.data
            assert {(r["symbol"], r["timeframe"]) for r in rows} == {
                (s, tf) for s in universe for tf in ("1d", "1h")
            }
            assert {r["status"] for r in rows} == {"done"}
            assert any(a.key == "backfill-summary" for a in found)

    bars = BarStore(store)
    for symbol in universe:
        assert len(bars.read("synthetic", symbol, "1h")) > 0
        assert bars.read_meta("synthetic", symbol, "1h")["feature_count"] > 0
