"""The managed local Prefect server: one persistent ``prefect server start`` per ``PREFECT_HOME``.

Every CLI command that needs the Prefect API finds it with :func:`ensure_api`, in this order:
``PREFECT_API_URL`` when it is set (environment, Prefect profile, or a test harness); else the
managed local server, started on first need. The server runs detached (its own session, so it
outlives the command and a terminal's Ctrl+C never reaches it), logs to ``server.log`` in the state
folder ``$PREFECT_HOME/candleflow-server/``, and is described there by ``server.json`` (URL, PID,
database, start time). A file lock makes "find or start" atomic: two commands starting together
end with one server. ``candleflow server stop`` stops it (and a local PostgreSQL started with it).

The server binds 127.0.0.1 unless told otherwise; any other address needs ``--auth``, which makes
Prefect's basic auth (server ``PREFECT_SERVER_API_AUTH_STRING``, clients
``PREFECT_API_AUTH_STRING``) from a generated secret kept in an owner-only file. Prefect's
telemetry is off (these machines have no internet).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from candleflow.cli.postgres import LocalCluster
from candleflow.errors import CandleflowError, InvalidRequest

DEFAULT_PORT = 4200
LOOPBACK = "127.0.0.1"
AUTH_USER = "candleflow"
#: How long a command waits for a server to start (a fresh database migrates in ~15 s; a loaded
#: 2-core machine takes longer). ``CANDLEFLOW_SERVER_START_TIMEOUT`` overrides it.
START_TIMEOUT = 180.0


class ServerError(CandleflowError):
    """The managed Prefect server could not be started, reached or stopped."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What ``server.json`` records of a running managed server."""

    pid: int
    host: str
    port: int
    database: str  # "sqlite" or "postgres"
    database_location: str  # a file path, or a PostgreSQL URL without its password
    started_at: str  # ISO 8601, UTC
    prefect_version: str
    log: str
    auth: bool
    local_postgres: bool

    @property
    def api_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.port}"


def prefect_home() -> Path:
    """``PREFECT_HOME`` as Prefect reads it from the environment (default ``~/.prefect``)."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


class ServerState:
    """The state folder of one ``PREFECT_HOME``: ``server.json``, log, lock, auth secret."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or prefect_home()
        self.dir = self.home / "candleflow-server"
        self.info_file = self.dir / "server.json"
        self.log_file = self.dir / "server.log"
        self.lock_file = self.dir / "server.lock"
        self.auth_file = self.dir / "auth"
        self.cluster = LocalCluster(self.dir)

    def ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)

    def lock(self, timeout: float) -> FileLock:
        self.ensure_dir()
        return FileLock(str(self.lock_file), timeout=timeout)

    def read(self) -> ServerInfo | None:
        try:
            return ServerInfo(**json.loads(self.info_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, info: ServerInfo) -> None:
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info), indent=1), encoding="utf-8")
        tmp.replace(self.info_file)

    def clear(self) -> None:
        self.info_file.unlink(missing_ok=True)

    def auth_string(self) -> str | None:
        """``user:password`` from the secret file, if the server was started with auth."""
        try:
            return self.auth_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def make_auth_string(self) -> str:
        existing = self.auth_string()
        if existing:
            return existing
        self.ensure_dir()
        secret = f"{AUTH_USER}:{secrets.token_urlsafe(24)}"
        fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret + "\n")
        return secret


# ----------------------------------------------------------------------------- probing


def _client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        return LOOPBACK
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def healthy(api_url: str, auth: str | None = None, timeout: float = 5.0) -> bool:
    """Whether the API answers ``/health`` (with basic auth when given)."""
    request = urllib.request.Request(f"{api_url}/health")
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _start_timeout() -> float:
    try:
        return float(os.environ.get("CANDLEFLOW_SERVER_START_TIMEOUT", START_TIMEOUT))
    except ValueError:
        return START_TIMEOUT


def _prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


# ----------------------------------------------------------------------------- lifecycle


def running(state: ServerState) -> ServerInfo | None:
    """The managed server if its process lives and its API answers, else None."""
    info = state.read()
    if info is None or not pid_alive(info.pid):
        return None
    return info if healthy(info.api_url, state.auth_string()) else None


def start(
    state: ServerState | None = None,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    database: str = "sqlite",
    database_url: str | None = None,
    auth: bool = False,
    announce: Callable[[str], None] | None = None,
) -> tuple[ServerInfo, bool]:
    """Start the managed server unless one runs; returns ``(info, started_now)``.

    ``port=None`` takes 4200 when free, else any free port. Holding the state folder's lock for
    the whole start makes concurrent callers wait and then find the server this one started.
    """
    state = state or ServerState()
    database = database.strip().lower()
    if database not in ("sqlite", "postgres"):
        raise InvalidRequest(f"unknown database {database!r}: use sqlite or postgres")
    if database_url and database != "postgres":
        raise InvalidRequest("--database-url is for --database postgres")
    if not is_loopback(host) and not auth:
        raise InvalidRequest(
            f"refusing to serve the Prefect API on {host} without authentication: add --auth "
            "(basic auth from a generated secret), or bind 127.0.0.1"
        )
    timeout = _start_timeout()
    try:
        with state.lock(timeout):
            found = _running_or_stale(state)
            if found is not None:
                return found, False
            info = _launch(state, host, port, database, database_url, auth, timeout)
    except Timeout:
        raise ServerError(
            f"another command has been starting the Prefect server for over {timeout:.0f}s "
            f"(lock {state.lock_file}); see {state.log_file}"
        ) from None
    if announce is not None:
        announce(
            f"started the candleflow Prefect server: UI {info.ui_url} · {info.database} · "
            f"log {info.log} · stop it with `candleflow server stop`"
        )
    return info, True


def _running_or_stale(state: ServerState) -> ServerInfo | None:
    """The running server, or None after clearing what a dead one left."""
    info = state.read()
    if info is None:
        return None
    if pid_alive(info.pid):
        # Alive: it may be busy (a loaded machine); give it time before calling it hung.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if healthy(info.api_url, state.auth_string()):
                return info
            if not pid_alive(info.pid):
                break
            time.sleep(0.5)
        else:
            raise ServerError(
                f"the managed Prefect server (pid {info.pid}) does not answer at {info.api_url}: "
                f"see {info.log}, or stop it with `candleflow server stop`"
            )
    state.clear()
    if info.local_postgres:
        state.cluster.stop()
    return None


def _launch(
    state: ServerState,
    host: str,
    port: int | None,
    database: str,
    database_url: str | None,
    auth: bool,
    timeout: float,
) -> ServerInfo:
    if port is None:
        port = DEFAULT_PORT if _port_free(host, DEFAULT_PORT) else _free_port(host)
    elif port == 0:
        port = _free_port(host)
    elif not _port_free(host, port):
        raise InvalidRequest(f"port {port} on {host} is in use: give another --port")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(state.home),
        PREFECT_SERVER_API_HOST=host,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=f"http://{_client_host(host)}:{port}/api",
    )
    local_postgres = database == "postgres" and not database_url
    if database == "postgres":
        url = database_url or state.cluster.start().url
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = url
        location = _redact(url)
    else:
        location = str(state.home / "prefect.db")
    auth_string = state.make_auth_string() if auth else None
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    else:
        state.auth_file.unlink(missing_ok=True)
    # Prefect's `server start`, with the cyclic garbage collector off the event loop (see there).
    command = [sys.executable, "-m", "candleflow.cli.prefect_server", "server", "start",
               "--host", host, "--port", str(port)]  # fmt: skip
    with state.log_file.open("ab") as log:
        log.write(f"\n--- {datetime.now(UTC).isoformat()} {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=state.dir,
        )  # fmt: skip
    info = ServerInfo(
        pid=process.pid, host=host, port=port, database=database,
        database_location=location, started_at=datetime.now(UTC).isoformat(),
        prefect_version=_prefect_version(), log=str(state.log_file), auth=auth_string is not None,
        local_postgres=local_postgres,
    )  # fmt: skip
    state.write(info)
    deadline = time.monotonic() + timeout
    while not healthy(info.api_url, auth_string, timeout=2):
        if process.poll() is not None or time.monotonic() > deadline:
            _terminate(process.pid)
            state.clear()
            if local_postgres:
                state.cluster.stop()
            why = "exited" if process.poll() is not None else f"did not answer in {timeout:.0f}s"
            raise ServerError(f"the Prefect server {why}: {_log_tail(state.log_file)}")
        time.sleep(0.25)
    return info


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {path}"
    return " | ".join(text[-lines:]) + f" (log: {path})"


def _terminate(pid: int, grace: float = 30.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    # The process is our child only when this command started it (then it must be reaped).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(state: ServerState | None = None) -> ServerInfo | None:
    """Stop the managed server (and its local PostgreSQL); returns what ran, or None."""
    state = state or ServerState()
    try:
        with state.lock(_start_timeout()):
            info = state.read()
            if info is not None and pid_alive(info.pid):
                _terminate(info.pid)
            if info is not None and pid_alive(info.pid):
                raise ServerError(f"the Prefect server (pid {info.pid}) did not stop")
            if state.cluster.running():
                state.cluster.stop()
            state.clear()
            return info
    except Timeout:
        raise ServerError(f"the server's lock {state.lock_file} is held: retry") from None


# ----------------------------------------------------------------------------- the API


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment, a Prefect profile or a test harness."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def ensure_api(announce: Callable[[str], None] | None = None) -> str:
    """The API this process talks to: configured, else the managed server (started if needed).

    For the managed server this sets ``PREFECT_API_URL`` (and the auth string) for this process
    and refreshes Prefect's settings, so flows, tasks and every client thread use it.
    """
    url = configured_api_url()
    if url:
        return url
    state = ServerState()
    info, _ = start(state, announce=announce)
    os.environ["PREFECT_API_URL"] = info.api_url
    auth = state.auth_string()
    if auth:
        os.environ["PREFECT_API_AUTH_STRING"] = auth
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    return info.api_url
