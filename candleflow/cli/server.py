"""``candleflow server start|stop|status``: the managed local Prefect server (see ``managed``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from candleflow.cli import managed
from candleflow.cli.common import EXIT_FAILED, EXIT_OK, out

server_app = typer.Typer(
    name="server",
    help="The managed local Prefect server (started on first need by every other command).",
    no_args_is_help=True,
)


@server_app.command("start")
def start_command(
    port: Annotated[
        int | None, typer.Option(help="Port (default 4200, or a free one when 4200 is taken).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs --auth.")
    ] = managed.LOOPBACK,
    database: Annotated[
        str, typer.Option(help="sqlite (zero set-up) or postgres (for parallel work).")
    ] = "sqlite",
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL (postgresql+asyncpg://user:pw@host:port/db); default: a local "
            "cluster candleflow creates and runs with the server."
        ),
    ] = None,
    auth: Annotated[
        bool, typer.Option("--auth", help="Basic auth from a generated owner-only secret.")
    ] = False,
) -> int:
    """Start the managed Prefect server in the background (or report the running one)."""
    info, started = managed.start(
        host=host, port=port, database=database, database_url=database_url, auth=auth
    )
    verb = "started" if started else "already running"
    print(f"Prefect server {verb}: UI {info.ui_url} · API {info.api_url} · {info.database} · "
          f"pid {info.pid}")  # fmt: skip
    if info.auth:
        state = managed.ServerState()
        print(f"basic auth on: the secret is in {state.auth_file}; remote clients set "
              "PREFECT_API_AUTH_STRING to its content")  # fmt: skip
    return EXIT_OK


@server_app.command("stop")
def stop_command() -> int:
    """Stop the managed Prefect server (and the local PostgreSQL started with it)."""
    info = managed.stop()
    if info is None:
        print(f"no managed Prefect server running (PREFECT_HOME {managed.prefect_home()})")
    else:
        print(f"stopped the Prefect server at {info.ui_url} (pid {info.pid})")
    return EXIT_OK


@server_app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> int:
    """Show the managed server: URL, database, PID, Prefect version, uptime, pools, workers.

    Exit code 1 when no managed server runs.
    """
    state = managed.ServerState()
    info = managed.running(state)
    if info is None:
        if as_json:
            print(json.dumps({"running": False, "prefect_home": str(state.home)}))
        else:
            print(f"no managed Prefect server running (PREFECT_HOME {state.home})")
        return EXIT_FAILED
    started = datetime.fromisoformat(info.started_at)
    uptime = (datetime.now(UTC) - started).total_seconds()
    pools = _pools_and_workers(info, state.auth_string())
    report: dict[str, Any] = {
        "running": True, "ui_url": info.ui_url, "api_url": info.api_url,
        "database": info.database, "database_location": info.database_location,
        "pid": info.pid, "prefect_version": info.prefect_version, "uptime_s": round(uptime, 1),
        "started_at": info.started_at, "log": info.log, "auth": info.auth,
        "prefect_home": str(state.home), "work_pools": pools,
    }  # fmt: skip
    if as_json:
        print(json.dumps(report))
        return EXIT_OK
    table = Table(title="candleflow Prefect server", show_header=False)
    for name in ("ui_url", "api_url", "database", "database_location", "pid",
                 "prefect_version", "started_at", "log", "auth", "prefect_home"):  # fmt: skip
        table.add_row(name.replace("_", " "), str(report[name]))
    table.add_row("uptime", _duration(uptime))
    for pool in pools:
        workers = ", ".join(f"{w['name']} ({w['status']})" for w in pool["workers"]) or "none"
        table.add_row(f"pool {pool['name']}", f"{pool['type']} · workers: {workers}")
    if not pools:
        table.add_row("work pools", "none")
    out().print(table)
    return EXIT_OK


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _pools_and_workers(info: managed.ServerInfo, auth: str | None) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates: dict[Any, Any] = {PREFECT_API_URL: info.api_url}
    if auth:
        updates[PREFECT_API_AUTH_STRING] = auth
    found: list[dict[str, Any]] = []
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        for pool in client.read_work_pools():
            workers = client.read_workers_for_work_pool(pool.name)
            found.append({
                "name": pool.name, "type": pool.type,
                "workers": [{"name": w.name, "status": str(getattr(w.status, "value", w.status)),
                             "last_heartbeat": str(w.last_heartbeat_time)} for w in workers],
            })  # fmt: skip
    return found


def register(app: typer.Typer) -> None:
    app.add_typer(server_app)
