"""Object-store roots (``s3://bucket/prefix``): where they point and the few S3 calls the store
makes — get, put (optionally conditional), delete, list — with S3's failures turned into the
store's errors.

The endpoint, credentials and region come from the usual AWS settings that boto3 reads itself
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``/``AWS_DEFAULT_REGION``); with a custom endpoint (MinIO,
SeaweedFS, Ceph) path-style addressing is used, which every S3-compatible server accepts.
Conditional puts (``If-Match``/``If-None-Match``) are what the object store's commit protocol is
built on (:mod:`candleflow.store.object_store`); a losing put raises :class:`PreconditionFailed`.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from candleflow.errors import CandleflowError, InvalidRequest, StoreUnavailable, StoreWriteFailed

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = [
    "ObjectClient",
    "ObjectInfo",
    "ObjectPath",
    "PreconditionFailed",
    "StoreUnavailable",
    "check_object_root",
    "is_object_root",
    "parse_object_root",
]

_SCHEMES = ("s3://", "s3a://")
# S3's bucket naming rules (lowercase, digits, dots and hyphens, 3-63 characters).
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class PreconditionFailed(Exception):
    """A conditional put lost: the object changed (or appeared) since it was read."""


def is_object_root(root: object) -> bool:
    """Whether ``root`` names an object-store root (``s3://…``) rather than a local path."""
    return isinstance(root, str | ObjectPath) and str(root).lower().startswith(_SCHEMES)


@dataclass(frozen=True, slots=True)
class ObjectPath:
    """A location in a bucket, printed as ``s3://bucket/key``; joins with ``/`` like a Path."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __truediv__(self, part: str | PurePosixPath) -> ObjectPath:
        tail = str(part).strip("/")
        return ObjectPath(self.bucket, f"{self.key}/{tail}" if self.key else tail)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.bucket, self.key.rsplit("/", 1)[0] if "/" in self.key else "")

    def relative_to(self, other: ObjectPath) -> PurePosixPath:
        prefix = f"{other.key}/" if other.key else ""
        if other.bucket != self.bucket or not self.key.startswith(prefix):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.key[len(prefix) :])

    def as_posix(self) -> str:
        return str(self)


def parse_object_root(root: str) -> ObjectPath:
    """``s3://bucket/prefix`` as an :class:`ObjectPath`; a malformed one is ``InvalidRequest``."""
    text = str(root)
    scheme = next((s for s in _SCHEMES if text.lower().startswith(s)), None)
    if scheme is None:
        raise InvalidRequest(f"store root {text!r} is not an s3:// URI", "store", text)
    rest = text[len(scheme) :]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if _BUCKET_RE.fullmatch(bucket) is None:
        raise InvalidRequest(
            f"store root {text!r}: {bucket!r} is not an S3 bucket name (3-63 lowercase letters, "
            "digits, '.' or '-'); use s3://bucket/prefix",
            "store",
            text,
        )
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise InvalidRequest(
            f"store root {text!r}: the prefix has an empty, '.' or '..' part", "store", text
        )
    return ObjectPath(bucket, prefix)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key and when it was last written."""

    key: str
    modified: datetime


@functools.cache
def _client_for(
    endpoint: str | None, region: str | None, pid: int, identity: tuple[str | None, ...]
) -> S3Client:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        s3={"addressing_style": "path"} if endpoint else {},
    )
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=endpoint, region_name=region or "us-east-1", config=config
    )


def _error_code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    response: Any = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class ObjectClient:
    """The store's S3 calls for one bucket; safe to share between threads.

    Reads that fail for reasons other than a missing object raise :class:`StoreUnavailable`,
    writes :class:`~candleflow.errors.StoreWriteFailed` naming the root and the key.
    """

    def __init__(self, root: ObjectPath) -> None:
        self.root = root
        self.bucket = root.bucket
        self._endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self._region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    @property
    def client(self) -> S3Client:
        # One client per process and endpoint (clients are thread-safe but do not survive a fork).
        # Keyed by the credentials' names too, so a process that switches identity gets a client
        # that signs with the new one.
        identity = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE"))
        return _client_for(self._endpoint, self._region, os.getpid(), identity)

    def _read_error(self, key: str, exc: Exception) -> CandleflowError:
        code = _error_code(exc) or type(exc).__name__
        return StoreUnavailable(str(self.root), f"{code} reading {self.bucket}/{key}")

    def _write_error(self, key: str, exc: Exception) -> StoreWriteFailed:
        code = _error_code(exc) or type(exc).__name__
        errno_ = errno.EACCES if code in ("AccessDenied", "Forbidden", "403") else None
        return StoreWriteFailed(str(self.root), f"s3://{self.bucket}/{key}", code, errno_)

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, ``None`` if there is no such object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read(), str(response["ETag"])
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._read_error(key, exc) from exc
        except BotoCoreError as exc:
            raise self._read_error(key, exc) from exc

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_absent: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store ``data`` at ``key``; return the new ETag.

        ``if_match``: only if the object's ETag still is that one; ``if_absent``: only if there
        is no object at ``key`` yet. Either condition failing raises :class:`PreconditionFailed`.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **kwargs
            )
        except ClientError as exc:
            # 412 is the answer; 409 ConditionalRequestConflict is AWS's for a concurrent one.
            if _status(exc) in (409, 412) or _error_code(exc) in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise PreconditionFailed(key) from exc
            if if_match is not None and _error_code(exc) in ("NoSuchKey", "404"):
                raise PreconditionFailed(key) from exc
            raise self._write_error(key, exc) from exc
        except BotoCoreError as exc:
            raise self._write_error(key, exc) from exc
        return str(response["ETag"])

    def delete(self, keys: list[str]) -> None:
        """Remove ``keys`` (missing ones are fine); failures are left for the next sweep."""
        from botocore.exceptions import BotoCoreError, ClientError

        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            try:
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError):
                for key in batch:  # some servers lack DeleteObjects; one by one then
                    try:
                        self.client.delete_object(Bucket=self.bucket, Key=key)
                    except (ClientError, BotoCoreError) as exc:
                        raise self._write_error(key, exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(str(item["Key"]), item["LastModified"])
        except (ClientError, BotoCoreError) as exc:
            raise self._read_error(prefix, exc) from exc


def check_object_root(root: str) -> ObjectPath:
    """``root`` parsed, after checking its bucket can be reached with the credentials given.

    A malformed root is ``InvalidRequest``; a bucket that is missing, forbidden or behind an
    endpoint that does not answer is :class:`StoreUnavailable`. For a CLI's ``--store`` check.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = parse_object_root(root)
    client = ObjectClient(parsed)
    try:
        client.client.head_bucket(Bucket=parsed.bucket)
    except ClientError as exc:
        code = _error_code(exc)
        reason = "no such bucket" if code in ("404", "NoSuchBucket", "NotFound") else code
        raise StoreUnavailable(str(parsed), reason) from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(str(parsed), type(exc).__name__) from exc
    return parsed
