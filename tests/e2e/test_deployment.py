"""The `load-data` deployment from prefect.yaml on a real Prefect server with a process worker.

Separable and slow (~40 s each): it starts the managed server (`candleflow server start`, on
SQLite and on a local PostgreSQL) on a free 127.0.0.1 port with a temporary PREFECT_HOME,
creates the work pool, runs `prefect deploy --all` from the checkout, starts a process worker
there, runs the deployment, reads the progress artifact through the API while the run fetches,
cancels it through the API (as the UI does) and checks that the run ends Cancelled with the
fetched bars saved. Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from candleflow.store.bar_store import BarStore
from tests.e2e.prefect_server import missing_deployments, prefect_server
from tests.timing import wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_deployment_runs_on_a_worker_reports_progress_and_cancels_cleanly(
    tmp_path: Path, database: str
) -> None:
    from prefect.states import Cancelling

    from candleflow.cli.runs import read_run_artifacts

    with prefect_server(tmp_path, database) as server:
        deploy = server.deploy_all()
        assert "successfully created" in deploy.stdout, deploy.stdout + deploy.stderr

        with server.client() as client:
            missing = missing_deployments(client)
            assert not missing, f"not deployed: {missing}\n{deploy.stdout}"
            deployment = client.read_deployment_by_name("load-data/load-data")
            assert deployment.parameters["source"] == "synthetic"
            assert deployment.work_pool_name == "candleflow"

            store = tmp_path / "store"
            with server.worker("candleflow", tmp_path / "worker.log"):
                # Nine years at 0.4 s a segment: still fetching whenever the cancel arrives.
                flow_run = client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={
                        "store": str(store), "mode": "full", "start": "2015-01-01",
                        "end": "2023-12-31", "delay": 0.4,
                    },
                )  # fmt: skip

                def fetching() -> Any:
                    # Cancel once a segment is journaled: cancelling while the first one is in
                    # flight would rightly save nothing, and the test is about keeping bars.
                    if not list(store.rglob("*.journal")):
                        return None
                    found = read_run_artifacts(client, [flow_run.id])
                    if found and "Fetching segment" in (found[0].description or ""):
                        return found[0]
                    return None

                progress = wait_until(fetching, 90, "a progress artifact in the fetch stage")
                assert 0 < progress.data < 100
                assert client.read_flow_run(flow_run.id).state.is_running()

                client.set_flow_run_state(flow_run.id, Cancelling(message="test"))
                state = wait_until(
                    lambda: (s := client.read_flow_run(flow_run.id).state).is_final() and s,
                    120,
                    "the run to end",
                )
                log = (tmp_path / "worker.log").read_text(errors="replace")
                assert state.is_cancelled(), f"{state!r}\n{log}"

            # Stopped cleanly by the runner's SIGTERM, not SIGKILLed 30 s later: the flow itself
            # wrote its final progress, which a killed process cannot.
            final = read_run_artifacts(client, [flow_run.id])[0]
            assert (final.description or "").startswith("Cancelled at")

    bars = BarStore(store).read("synthetic", "AAPL", "1h")
    assert len(bars) > 0, "the segments fetched before the cancel were not saved"
    assert bars.index.is_monotonic_increasing and not bars.index.has_duplicates
    assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")]
    meta = BarStore(store).read_meta("synthetic", "AAPL", "1h")
    assert meta["rows"] == len(bars)
