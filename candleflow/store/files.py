"""Whole files beside the bars, for reports and other artifacts: ``put_file(root, "reports/…",
data)`` writes ``{root}/reports/…`` on a local root (atomically) or on an object store (one put,
which S3 makes atomic), and returns where it went, as a path or an ``s3://`` URL.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from candleflow.errors import InvalidRequest
from candleflow.store.atomic import atomic_write, make_dirs, write_refusals
from candleflow.store.bar_store import BarStore
from candleflow.store.object_store import ObjectBarStore

__all__ = ["get_file", "put_file"]

_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".json": "application/json"}


def _relpath(relpath: str) -> PurePosixPath:
    path = PurePosixPath(relpath)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise InvalidRequest(f"file path {relpath!r} must be relative, without '.' or '..' parts")
    return path


def put_file(root: str | os.PathLike[str] | BarStore, relpath: str, data: bytes) -> str:
    """Store ``data`` at ``{root}/{relpath}`` (replacing what was there); return its location."""
    store = root if isinstance(root, BarStore) else BarStore(root)
    path = _relpath(relpath)
    if isinstance(store, ObjectBarStore):
        target = store.root / str(path)
        content_type = _TYPES.get(path.suffix, "application/octet-stream")
        store.client.put(target.key, data, content_type=content_type)
        return str(target)
    assert isinstance(store.root, Path)
    local = store.root / path
    with write_refusals(store.root, local):
        make_dirs(local.parent)
        atomic_write(local, lambda fh: fh.write(data))
    return str(local)


def get_file(root: str | os.PathLike[str] | BarStore, relpath: str) -> bytes | None:
    """The bytes at ``{root}/{relpath}``, ``None`` when there is no such file."""
    store = root if isinstance(root, BarStore) else BarStore(root)
    path = _relpath(relpath)
    if isinstance(store, ObjectBarStore):
        found = store.client.get((store.root / str(path)).key)
        return None if found is None else found[0]
    assert isinstance(store.root, Path)
    try:
        return (store.root / path).read_bytes()
    except FileNotFoundError:
        return None
