"""A local PostgreSQL cluster for the managed Prefect server (``server start --database postgres``).

candleflow initialises the cluster on first use, starts it before the Prefect server and stops it
after. It listens on 127.0.0.1 only (no Unix socket), on a port chosen once and kept, with
password authentication: the password is generated and kept in an owner-only file. PostgreSQL
refuses to run as root, so when candleflow runs as root the cluster's processes run as an
unprivileged user (``postgres``, which Debian's PostgreSQL packages create; ``CANDLEFLOW_PG_USER``
names another) and its files belong to that user. The server binaries are Debian's (the newest
``/usr/lib/postgresql/*/bin``), those on ``PATH``, or ``CANDLEFLOW_PG_BIN``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from candleflow.errors import CandleflowError

DATABASE = "prefect"
ROLE = "candleflow"
#: Where the cluster lives when the unprivileged user cannot reach the state folder (a root
#: user's home is private): one folder per state folder, named by its hash.
SYSTEM_ROOT = Path("/var/lib/candleflow")
INSTALL_HINT = (
    "install PostgreSQL's server (Debian: `apt-get install postgresql`; `make postgres` does it), "
    "set CANDLEFLOW_PG_BIN to its bin folder, or give --database-url of an existing server"
)


class PostgresError(CandleflowError):
    """The local PostgreSQL cluster could not be set up, started or stopped."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What is kept of a cluster between starts (``postgres.json`` in the state folder)."""

    data_dir: str
    port: int
    password: str
    bin_dir: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect connects with (asyncpg driver)."""
        return f"postgresql+asyncpg://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (see the module docstring)."""
    configured = os.environ.get("CANDLEFLOW_PG_BIN")
    candidates = [Path(configured)] if configured else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0],
        reverse=True,
    )
    candidates += versions
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")


def _account() -> pwd.struct_passwd | None:
    """The user the cluster runs as: None for "this user" (not root)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("CANDLEFLOW_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PostgresError(
            f"PostgreSQL refuses to run as root and there is no user {name!r} to run it as: "
            f"create one, name it in CANDLEFLOW_PG_USER, or {INSTALL_HINT}"
        ) from None


def _run(args: list[str], account: pwd.struct_passwd | None, what: str) -> str:
    kwargs: dict[str, Any] = {}
    if account is not None:
        kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    result = subprocess.run(
        args, capture_output=True, text=True, check=False, cwd="/", timeout=180, **kwargs
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise PostgresError(f"{what} failed ({args[0]}): {' | '.join(tail)}")
    return str(result.stdout)


def _reachable(path: Path, account: pwd.struct_passwd | None) -> bool:
    """Whether ``account`` can create entries in ``path`` (after we hand it over)."""
    if account is None:
        return True
    probe = ["/bin/sh", "-c", 'test -x "$1" && test -r "$1"', "sh", str(path.parent)]
    try:
        _run(probe, account, "probe")
    except PostgresError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalCluster:
    """The cluster of one state folder: :meth:`start` initialises it when needed."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.config_file = state_dir / "postgres.json"

    def config(self) -> ClusterConfig | None:
        if not self.config_file.exists():
            return None
        return ClusterConfig(**json.loads(self.config_file.read_text(encoding="utf-8")))

    def _save(self, config: ClusterConfig) -> None:
        self.config_file.write_text(json.dumps(asdict(config)), encoding="utf-8")
        self.config_file.chmod(0o600)

    def _home(self, account: pwd.struct_passwd | None) -> Path:
        local = self.state_dir / "postgres"
        if _reachable(local, account):
            return local
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        return SYSTEM_ROOT / digest

    def _initialise(self, account: pwd.struct_passwd | None) -> ClusterConfig:
        bin_dir = find_bin_dir()
        home = self._home(account)
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        if account is not None:
            os.chown(home, account.pw_uid, account.pw_gid)
        password = secrets.token_urlsafe(24)
        pwfile = home / "initial-password"
        pwfile.write_text(password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        if data.exists():
            shutil.rmtree(data)  # a half-made cluster from an interrupted first start
        try:
            _run(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", ROLE, f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"],
                account, "initialising the PostgreSQL cluster",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        config = ClusterConfig(str(data), _free_port(), password, str(bin_dir))
        self._save(config)
        return config

    def start(self) -> ClusterConfig:
        """Initialise (first time), start and create the database; returns the config."""
        account = _account()
        config = self.config()
        if config is None or not (Path(config.data_dir) / "PG_VERSION").exists():
            config = self._initialise(account)
        if not Path(config.bin_dir, "pg_ctl").exists():
            config = ClusterConfig(config.data_dir, config.port, config.password,
                                   str(find_bin_dir()))  # fmt: skip
        if not self.running(config) and not _port_free(config.port):
            config = ClusterConfig(config.data_dir, _free_port(), config.password, config.bin_dir)
        self._save(config)
        if not self.running(config):
            options = f"-c listen_addresses=127.0.0.1 -c port={config.port} "
            options += "-c unix_socket_directories=''"
            log = Path(config.data_dir).parent / "postgres.log"
            _run(
                [str(Path(config.bin_dir) / "pg_ctl"), "-D", config.data_dir, "-l", str(log),
                 "-o", options, "-w", "-t", "120", "start"],
                account, f"starting PostgreSQL (log: {log})",
            )  # fmt: skip
        asyncio.run(_create_database(config))
        return config

    def running(self, config: ClusterConfig | None = None) -> bool:
        config = config or self.config()
        if config is None:
            return False
        pid_file = Path(config.data_dir) / "postmaster.pid"
        try:
            pid = int(pid_file.read_text(encoding="utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self) -> bool:
        """Stop the cluster if it runs (fast shutdown); True if it was running."""
        config = self.config()
        if config is None or not self.running(config):
            return False
        _run(
            [str(Path(config.bin_dir) / "pg_ctl"), "-D", config.data_dir, "-m", "fast", "-w",
             "-t", "120", "stop"],
            _account(), "stopping PostgreSQL",
        )  # fmt: skip
        return True


async def _create_database(config: ClusterConfig) -> None:
    import asyncpg  # the driver Prefect uses for PostgreSQL

    conn = await asyncpg.connect(
        host="127.0.0.1", port=config.port, user=ROLE, password=config.password,
        database="postgres", timeout=60,
    )  # fmt: skip
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'create database "{DATABASE}"')
    finally:
        await conn.close()
