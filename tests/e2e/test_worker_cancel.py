"""Cancel a deployment run on a real process worker as an operator does, then read what they see.

Separable and slow (~1-2 min): `prefect server start` on a free 127.0.0.1 port, `prefect deploy
--all` from the checkout, a process worker, one `load-data` run cancelled through the API while it
fetches (a Cancelling state, as the UI and `prefect flow-run cancel` set it). After the run is
Cancelled *and* the worker has finished its own cancellation sequence (which force-sets a generic
Cancelled state of its own), the test checks what the UI shows: the final state's message is
candleflow's (bars saved, bars still missing, how it was cancelled), none of the run's logs is at
ERROR level, and candleflow's own SIGTERM notice is among them. It also checks that every
parameter of every deployment has a description in its deployed schema (the UI's run form).
Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from tests.e2e.prefect_server import prefect_server, prefect_yaml_deployments
from tests.timing import wait_for, wait_until

pytestmark = pytest.mark.slow

#: What the worker logs (INFO, logger prefect.runner.cancellation_manager) once its cancellation
#: sequence (SIGTERM, wait for exit, hooks, forced Cancelled state, event) is over.
RUNNER_DONE = re.compile(r"Cancelled flow run '")


def _undescribed(client: Any) -> dict[str, list[str]]:
    """Deployment name → the parameters whose deployed schema property has no description."""
    missing: dict[str, list[str]] = {}
    names = set(prefect_yaml_deployments())
    for deployment in client.read_deployments():
        if deployment.name not in names:
            continue
        names.discard(deployment.name)
        flow = client.read_flow(deployment.flow_id)
        schema = client.read_deployment_by_name(
            f"{flow.name}/{deployment.name}"
        ).parameter_openapi_schema
        properties = (schema or {}).get("properties") or {}
        bad = [
            p for p, prop in properties.items() if not str(prop.get("description") or "").strip()
        ]
        if bad or not properties:
            missing[deployment.name] = bad or ["<no parameters in the schema>"]
    for name in names:
        missing[name] = ["<not deployed>"]
    return missing


def _run_logs(client: Any, flow_run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    logs: list[Any] = []
    while True:
        page = client.read_logs(log_filter=log_filter, limit=200, offset=len(logs))
        logs.extend(page)
        if len(page) < 200:
            return logs


def _history(client: Any, flow_run_id: UUID) -> str:
    states = client.read_flow_run_states(flow_run_id)
    return "\n".join(f"  {s.timestamp} {s.type.value} {s.name!r}: {s.message!r}" for s in states)


def _is_ours(state: Any) -> bool:
    message = state.message or ""
    return state.is_cancelled() and "new bars saved" in message and "still missing" in message


def test_worker_run_cancelled_through_the_api_ends_in_candleflows_state_without_errors(
    tmp_path: Path,
) -> None:
    from prefect.states import Cancelling

    from candleflow.cli.runs import read_run_artifacts

    with prefect_server(tmp_path) as server:
        server.deploy_all()

        with server.client() as client:
            # (6) the UI's run form describes every parameter of every deployment.
            undescribed = _undescribed(client)
            assert not undescribed, f"parameters without a description: {undescribed}"

            deployment = client.read_deployment_by_name("load-data/load-data")
            # INFO for the worker: its "Cancelled flow run" line marks the end of its sequence.
            worker = dataclasses.replace(
                server, env={**server.env, "PREFECT_LOGGING_LEVEL": "INFO"}
            )
            worker_log = tmp_path / "worker.log"

            def log_text() -> str:
                return worker_log.read_text(errors="replace")

            with worker.worker("candleflow", worker_log):
                # Nine years at 0.4 s a segment: still fetching whenever the cancel arrives.
                flow_run = client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={
                        "store": str(tmp_path / "store"), "mode": "full", "start": "2015-01-01",
                        "end": "2023-12-31", "delay": 0.4,
                    },
                )  # fmt: skip

                def fetching() -> bool:
                    found = read_run_artifacts(client, [flow_run.id])
                    return bool(found) and "Fetching segment" in (found[0].description or "")

                wait_until(fetching, 120, "the run to reach the fetch stage")
                # What the UI's "Cancel" button does: propose a Cancelling state, no message.
                client.set_flow_run_state(flow_run.id, Cancelling())

                def ended() -> bool:
                    return bool(client.read_flow_run(flow_run.id).state.is_final())

                wait_until(ended, 120, "the run to end")
                wait_until(lambda: RUNNER_DONE.search(log_text()), 120,
                           "the worker to finish its cancellation sequence")  # fmt: skip

                # The worker force-set its own generic Cancelled state last; candleflow's comes
                # back on top of it within a poll interval.
                def final_state_is_ours() -> Any:
                    state = client.read_flow_run(flow_run.id).state
                    return state if _is_ours(state) else None

                state = wait_for(final_state_is_ours, 60, step=0.2)
                if not state:
                    pytest.fail(
                        f"the final state is not candleflow's: "
                        f"{client.read_flow_run(flow_run.id).state!r}\nhistory:\n"
                        f"{_history(client, flow_run.id)}\n{log_text()}"
                    )

            message = state.message or ""
            assert "through the Prefect API" in message, message
            states = client.read_flow_run_states(flow_run.id)
            assert states[-1].id == state.id, _history(client, flow_run.id)
            # The premise of tasks.cancel.keep_final_state: the worker overrode our state.
            assert any(s.is_cancelled() and not _is_ours(s) for s in states), (
                "Prefect's worker no longer overrides the flow's own Cancelled state: "
                "tasks.cancel.keep_final_state can go\n" + _history(client, flow_run.id)
            )

            # Logs are shipped in batches; wait for candleflow's own notice to arrive.
            def sigterm_notice() -> list[Any]:
                return [
                    log
                    for log in _run_logs(client, flow_run.id)
                    if log.name.split(".")[0] in {"candleflow", "tasks", "flows"}
                    and "SIGTERM" in log.message
                ]

            wait_until(sigterm_notice, 30, "candleflow's SIGTERM notice in the run's logs")
            logs = _run_logs(client, flow_run.id)
            errors = [f"{log.level} {log.name}: {log.message}" for log in logs
                      if log.level >= logging.ERROR]  # fmt: skip
            assert not errors, "\n".join(errors)


class _History:
    """A sync client's state calls over a list of states; each read first appends the next of
    ``arrive`` (None: nothing new yet)."""

    def __init__(self, states: list[Any], arrive: list[Any] | None = None) -> None:
        self.states, self.arrive, self.forced = list(states), list(arrive or []), []

    def read_flow_run_states(self, flow_run_id: UUID) -> list[Any]:
        if self.arrive and (new := self.arrive.pop(0)) is not None:
            self.states.append(new)
        return list(self.states)

    def set_flow_run_state(self, flow_run_id: UUID, state: Any, force: bool = False) -> None:
        self.forced.append((state, force))
        self.states.append(state)


def _states(*specs: tuple[str, str | None]) -> list[Any]:
    """Prefect states from (type, message) pairs, one second apart."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.schemas.objects import State, StateType

    t0 = datetime(2026, 1, 5, 15, tzinfo=UTC)
    return [
        State(type=StateType(kind), message=message, timestamp=t0 + timedelta(seconds=i))
        for i, (kind, message) in enumerate(specs)
    ]


OURS = "load AAPL 1h cancelled through the Prefect API (UI, CLI or client): 5 new bars saved, …"


def test_restore_puts_our_cancelled_state_back_over_the_runners() -> None:
    from tasks.cancel import restore_final_state

    *before, runner = _states(
        ("RUNNING", None), ("CANCELLING", None), ("CANCELLED", OURS),
        ("CANCELLED", "Flow run was cancelled successfully."),
    )  # fmt: skip
    client = _History(before, arrive=[None, None, runner])  # the runner's lands while we wait
    assert restore_final_state(uuid4(), OURS, client=client, timeout=30, interval=0.01)
    [(state, force)] = client.forced
    assert state.is_cancelled() and state.message == OURS and force


def test_restore_leaves_a_run_that_moved_on_or_was_never_overridden() -> None:
    from tasks.cancel import restore_final_state

    retried = _History(_states(("CANCELLED", OURS), ("SCHEDULED", "retry")))
    assert not restore_final_state(uuid4(), OURS, client=retried, timeout=30, interval=0.01)
    untouched = _History(_states(("RUNNING", None), ("CANCELLED", OURS)))
    assert not restore_final_state(uuid4(), OURS, client=untouched, timeout=0.1, interval=0.01)
    assert not retried.forced and not untouched.forced


class _Gone:
    """A client whose API never answers (the server stopped)."""

    calls = 0

    def read_flow_run_states(self, flow_run_id: Any) -> list[Any]:
        self.calls += 1
        raise ConnectionError("connection refused")


class _FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_restore_gives_up_once_the_api_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import prefect.logging.handlers
    import prefect.logging.loggers

    import tasks.cancel
    from tasks.cancel import restore_final_state

    clock = _FakeTime()
    monkeypatch.setattr(tasks.cancel, "time", clock)
    monkeypatch.setattr(prefect.logging.loggers, "flow_run_logger",
                        lambda **_: logging.getLogger("test.keeper"))  # fmt: skip
    monkeypatch.setattr(prefect.logging.handlers.APILogHandler, "flush", lambda self: None)
    gone = _Gone()
    assert not restore_final_state(
        uuid4(), OURS, client=gone, timeout=3600, interval=1.0, unreachable_after=60
    )
    assert 60 <= clock.now <= 62, "it kept polling a dead API until the timeout"
    assert gone.calls == 61
