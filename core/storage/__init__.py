"""Object storage: every byte StoryForge keeps outside Postgres (DESIGN.md, Storage) — the
four buckets' objects, their Content-Type, Cache-Control and ``type=...`` tags — behind
one protocol with two backends, and the factory that opens the configured one.

- ``base``: the ``Storage`` protocol, its errors and values, and the validation both
  backends run before any I/O (bucket names, keys, prefixes, put arguments, ranges).
- ``s3``: ``S3Storage`` (aiobotocore; S3 or any S3-compatible endpoint), ``open_s3``.
- ``local``: ``LocalStorage`` (a directory, served with sendfile).

Both backends stream in both directions (nothing holds a whole video in memory),
validate names identically (``ValueError`` before any I/O), answer conditional reads
as ``core.conditional`` decides, and pass the same contract tests
(tests/integration/test_storage.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.storage.base import (
    CHUNK_SIZE,
    BadGateway,
    DeleteResult,
    NoSuchUpload,
    ObjectInfo,
    ObjectNotFound,
    RangeNotSatisfiable,
    Storage,
    StorageError,
    StreamedObject,
    Unsent,
    UploadedPart,
    validate_bucket,
    validate_key,
    validate_prefix,
)
from core.storage.local import LocalStorage
from core.storage.s3 import S3Storage, open_s3

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "CHUNK_SIZE",
    "BadGateway",
    "DeleteResult",
    "LocalStorage",
    "NoSuchUpload",
    "ObjectInfo",
    "ObjectNotFound",
    "RangeNotSatisfiable",
    "S3Storage",
    "Storage",
    "StorageError",
    "StreamedObject",
    "Unsent",
    "UploadedPart",
    "open_configured_storage",
    "open_s3",
    "open_storage",
    "validate_bucket",
    "validate_key",
    "validate_prefix",
]


async def open_storage(
    kind: str,
    *,
    root: Path | None = None,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    access_key: str | None = None,
    secret_key: str | None = None,
) -> Storage:
    """The configured backend: ``"local"`` (needs ``root``) or ``"s3"``."""
    if kind == "local":
        if root is None:
            raise ValueError("local storage needs a root directory")
        return LocalStorage(root)
    if kind == "s3":
        return await open_s3(endpoint_url, region, access_key, secret_key)
    raise ValueError(f"unknown storage kind {kind!r} (expected 'local' or 's3')")


async def open_configured_storage(settings: Settings) -> Storage:
    """The backend `settings` describe (STORAGE, STORAGE_ROOT, S3_*)."""
    return await open_storage(
        settings.storage,
        root=settings.storage_root,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
    )
