"""The managed Prefect server: CLI latency against the old throw-away API, and a parallel backfill
on SQLite against PostgreSQL.

1. CLI latency: wall time of ``candleflow runs``, ``show`` and ``load --mode local`` as a user
   types them, on a warm managed server, against the same commands on Prefect's throw-away
   ephemeral API (what every command used to start; reproduced here by disabling the managed
   server lookup in a wrapper). Both paths use an already-migrated database. Goal: ``runs`` and
   ``load --mode local`` at least 5x faster.
2. Parallel backfill: ``candleflow backfill`` of 24 series (12 symbols x 1d,1h) at
   ``--parallel 8`` on the managed server over SQLite, then over a local PostgreSQL: wall time
   and how many "database is locked" / 503 answers the server logged. Goal: 0 on PostgreSQL and
   a shorter wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPEATS_FAST, REPEATS_SLOW = 5, 2
#: Runs the CLI with the managed-server lookup switched off, so that Prefect falls back to a
#: throw-away ephemeral API per process: the CLI's behaviour before the managed server.
EPHEMERAL = (
    "import sys, candleflow.cli.managed as m; m.ensure_api = lambda announce=None: ''; "
    "from candleflow.cli import main; sys.exit(main(sys.argv[1:]))"
)
SYMBOLS = "AAPL,MSFT,SPY,QQQ,IBM,NVDA,AMZN,TSLA,GOOG,META,NFLX,ORCL"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    return env


def _run(env: dict[str, str], args: list[str], *, ephemeral: bool = False, cwd: Path) -> float:
    command = [sys.executable, "-c", EPHEMERAL] if ephemeral else [sys.executable, "-m",
                                                                   "candleflow"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(
        [*command, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()[-400:]}")
    return elapsed


def _server(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "candleflow", "server", *args], env=env, cwd=ROOT,
                   capture_output=True, text=True, check=True)  # fmt: skip


def cli_latency(work: Path) -> None:
    store = work / "store"
    load = ["load", "AAPL", "--timeframe", "1h", "--store", str(store), "--quiet"]
    commands = {
        "runs": ["runs"],
        "show": ["show", "AAPL", "--timeframe", "1h", "--store", str(store)],
        "load --mode local": [*load, "--mode", "local"],
    }
    managed_env, old_env = _env(work / "managed-home"), _env(work / "ephemeral-home")
    try:
        _server(managed_env, "start", "--port", "0")
        _run(managed_env, [*load, "--mode", "full", "--start", "2024-01-02", "--end",
                           "2024-03-28"], cwd=work)  # fmt: skip
        _run(old_env, ["runs"], ephemeral=True, cwd=work)  # migrates the old path's database
        print(f"{'command':<20} {'managed server':>15} {'throw-away API':>15} {'ratio':>8}")
        for name, args in commands.items():
            new = statistics.median(_run(managed_env, args, cwd=work) for _ in range(REPEATS_FAST))
            old = statistics.median(
                _run(old_env, args, ephemeral=True, cwd=work) for _ in range(REPEATS_SLOW)
            )
            print(f"{name:<20} {new:>14.2f}s {old:>14.2f}s {old / new:>7.1f}x", flush=True)
    finally:
        _server(managed_env, "stop")


def _log_retries(home: Path) -> int:
    log = home / "candleflow-server" / "server.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count("database is locked") + text.count(" 503 ")


def parallel_backfill(work: Path) -> None:
    rows = []
    for database in ("sqlite", "postgres"):
        home = work / f"home-{database}"
        env = _env(home)
        try:
            _server(env, "start", "--port", "0", "--database", database)
            before = _log_retries(home)
            elapsed = _run(env, ["backfill", SYMBOLS, "--timeframes", "1d,1h", "--parallel", "8",
                                 "--mode", "full", "--start", "2024-01-02", "--end", "2024-06-28",
                                 "--features", "none", "--store", str(work / f"store-{database}"),
                                 "--quiet"], cwd=work)  # fmt: skip
            rows.append((database, elapsed, _log_retries(home) - before))
        finally:
            _server(env, "stop")
            config = home / "candleflow-server" / "postgres.json"
            if config.exists():
                shutil.rmtree(Path(json.loads(config.read_text())["data_dir"]).parent,
                              ignore_errors=True)  # fmt: skip
    print(f"{'database':<10} {'wall time':>10} {'locked/503':>11}")
    for database, elapsed, retries in rows:
        print(f"{database:<10} {elapsed:>9.2f}s {retries:>11}")
    (_, sqlite_s, _), (_, pg_s, _) = rows
    print(f"PostgreSQL / SQLite wall time: {pg_s / sqlite_s:.2f}", flush=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="candleflow-bench-server-"))
    os.chmod(work, 0o755)  # PostgreSQL's unprivileged user must reach its cluster
    try:
        print("-- CLI latency (median wall time per command) --", flush=True)
        cli_latency(work)
        print("-- parallel backfill: 24 series at --parallel 8 --", flush=True)
        parallel_backfill(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
