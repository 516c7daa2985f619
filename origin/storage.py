"""Object storage: the ``Storage`` protocol and its two backends.

This module owns every byte StoryForge keeps outside Postgres (DESIGN.md, Storage):
the four buckets' objects, their Content-Type, Cache-Control and ``type=...`` tags.

- ``S3Storage`` talks to S3 or any S3-compatible endpoint through one long-lived
  aiobotocore client (path-style addressing). Large uploads go multipart, reads
  stream with the HTTP Range header, and botocore errors are translated here, at the
  boundary, into ``ObjectNotFound`` / ``RangeNotSatisfiable`` / ``StorageError``.
- ``LocalStorage`` keeps objects in a directory (``root/bucket/key``) so the origin
  can serve them with sendfile; writes are atomic, metadata lives in a mirror tree
  of JSON sidecars under ``root/.meta/bucket/key``, file I/O runs off the event loop.

Both backends stream in both directions (nothing holds a whole video in memory),
validate bucket names and keys identically (``ValueError`` before any I/O) and pass
the same contract tests (tests/integration/test_storage.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, ParamSpec, Protocol, Self, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from origin.settings import Settings

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from origin.backoff import backoff_seconds

__all__ = [
    "CHUNK_SIZE",
    "DeleteResult",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "RangeNotSatisfiable",
    "S3Storage",
    "Storage",
    "StorageError",
    "StreamedObject",
    "open_s3",
    "check_range_args",
    "open_storage",
    "resolve_range",
    "validate_bucket",
    "validate_key",
    "validate_prefix",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CHUNK_SIZE = 256 * KiB
"""Size of the pieces streamed out of ``get`` and of LocalStorage's file reads."""

PART_SIZE = 16 * MiB
"""S3 uploads bigger than one part (files and streams) go multipart, in parts of this size."""

MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MiB
MAX_COPY_OBJECT_SIZE = 5 * GiB
"""CopyObject's limit; bigger objects are copied with UploadPartCopy."""

COPY_PART_SIZE = 512 * MiB
DELETE_BATCH = 1_000
"""Keys per S3 DeleteObjects request (the API's maximum)."""

DELETE_ATTEMPTS = 4
DELETE_BACKOFF = 0.2
MAX_KEY_BYTES = 1024
MAX_TAGS = 10

META_DIR = ".meta"
"""LocalStorage's sidecar tree, ``root/.meta/bucket/key``; no bucket name starts with a dot."""

_TMP_SUFFIX = ".tmp"
_TMP_MARK = "\\"
"""Temp file names contain a backslash, which no valid key segment can, so they never
collide with an object and listings skip them."""


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """A storage operation failed (unreachable backend, denied, disk full, ...)."""


class ObjectNotFound(StorageError):
    """The object (or its bucket) does not exist."""


class RangeNotSatisfiable(StorageError):
    """The requested byte range lies outside the object; ``size`` is the object's size."""

    def __init__(self, size: int, message: str | None = None) -> None:
        super().__init__(message or f"range not satisfiable for an object of {size} bytes")
        self.size = size


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What storage knows about one whole object.

    ``etag`` is quoted as HTTP wants it (``'"abc..."'``); ``last_modified`` is UTC with
    whole seconds (what HTTP dates can carry). ``list()`` leaves ``content_type`` and
    ``cache_control`` as None in both backends (S3 listings do not carry them).
    """

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None
    cache_control: str | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """Outcome of ``delete_prefix``: how many keys went, and (key, message) for those
    that still failed after retries."""

    deleted: int
    errors: tuple[tuple[str, str], ...] = ()


class _ChunkSource(Protocol):
    async def read(self, n: int) -> bytes: ...

    async def close(self) -> None: ...


class StreamedObject:
    """An open read of one object, or of one byte range of it.

    ``info`` describes the whole object; ``start``/``end`` are the resolved inclusive
    byte positions served and ``length`` their count. Iterate once (``async for chunk
    in obj`` or ``obj.chunks()``), then ``close()`` — or use ``async with``. Closing
    early (a client went away) releases the file or HTTP connection.
    """

    __slots__ = ("_info", "_start", "_end", "_source", "_closed", "_consumed")

    def __init__(self, info: ObjectInfo, start: int, end: int, source: _ChunkSource) -> None:
        self._info = info
        self._start = start
        self._end = end
        self._source = source
        self._closed = False
        self._consumed = False

    @property
    def info(self) -> ObjectInfo:
        return self._info

    @property
    def start(self) -> int:
        return self._start

    @property
    def end(self) -> int:
        return self._end

    @property
    def length(self) -> int:
        return self._end - self._start + 1

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return (
            f"StreamedObject(key={self._info.key!r}, start={self._start}, end={self._end}, "
            f"size={self._info.size})"
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the range's bytes in pieces of at most ``CHUNK_SIZE``; closes at the end."""
        if self._consumed or self._closed:
            raise StorageError(f"{self!r} was already read or closed")
        self._consumed = True
        remaining = self.length
        try:
            while remaining > 0:
                data = await self._source.read(min(CHUNK_SIZE, remaining))
                if not data:
                    raise StorageError(f"{self._info.key}: stream ended {remaining} bytes early")
                remaining -= len(data)
                yield data
        finally:
            await self.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    async def read(self) -> bytes:
        """The whole range in one ``bytes`` — for small objects (playlists, JSON) only."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._source.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


Body = bytes | bytearray | memoryview | os.PathLike[str] | AsyncIterable[bytes]


@runtime_checkable
class Storage(Protocol):
    """Object storage used by the origin and the workers; buckets are passed by name.

    Keys are ``/``-separated, without empty, ``.`` or ``..`` segments, backslashes,
    control characters or a leading slash (``ValueError`` otherwise). Writes of one key
    replace the whole object. ``delete`` of a missing key is not an error.
    """

    async def put(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        content_type: str,
        cache_control: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``body`` (bytes, a file path, or an async iterable of bytes)."""
        ...

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
    ) -> StreamedObject:
        """Open ``[start, end]`` (inclusive, ``end`` clamped to the object) or the last
        ``suffix`` bytes; raises ObjectNotFound or RangeNotSatisfiable."""
        ...

    async def head(self, bucket: str, key: str) -> ObjectInfo: ...

    async def tags(self, bucket: str, key: str) -> dict[str, str]: ...

    def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    async def delete(self, bucket: str, key: str) -> None: ...

    async def delete_prefix(self, bucket: str, prefix: str) -> DeleteResult:
        """Delete every key under a non-empty ``prefix`` in batches of at most 1,000."""
        ...

    async def copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo:
        """Server-side copy keeping content type, cache control and tags."""
        ...

    async def local_path(self, bucket: str, key: str) -> Path | None:
        """The file that holds the object (for sendfile; existence not checked), or None
        if the backend keeps no local files."""
        ...

    async def ping(self) -> None:
        """Raise StorageError unless the backend is reachable and usable."""
        ...

    async def ensure_buckets(self, names: Iterable[str]) -> None: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- validation

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a valid S3 bucket name (which is also a safe directory
    name), else raise ValueError."""
    if (
        not isinstance(bucket, str)
        or not _BUCKET_RE.fullmatch(bucket)
        or ".." in bucket
        or ".-" in bucket
        or "-." in bucket
    ):
        raise ValueError(f"invalid bucket name {bucket!r}")
    return bucket


def _check_text(what: str, value: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, not {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid Unicode") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise ValueError(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    if "\\" in value:
        raise ValueError(f"{what} {value!r} contains a backslash")
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise ValueError(f"{what} {value!r} contains NUL or a control character")
    if value.startswith("/"):
        raise ValueError(f"{what} {value!r} is absolute")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ValueError.

    Rejected: empty, absolute, ``..``/``.``/empty segments (``a//b``, ``a/``),
    backslashes, NUL and other control characters, more than 1,024 UTF-8 bytes.
    """
    _check_text("key", key)
    if not key:
        raise ValueError("empty key")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"key {key!r} has an empty, '.' or '..' segment")
    return key


def validate_prefix(prefix: str, *, allow_empty: bool = True) -> str:
    """Return ``prefix`` if it is a valid key prefix (its last segment may be partial
    or empty, as in ``"scene/"`` or ``"scene/72"``), else raise ValueError."""
    _check_text("prefix", prefix)
    if not prefix:
        if allow_empty:
            return prefix
        raise ValueError("empty prefix refused: it would select the whole bucket")
    for segment in prefix.split("/")[:-1]:
        if segment in ("", ".", ".."):
            raise ValueError(f"prefix {prefix!r} has an empty, '.' or '..' segment")
    return prefix


def _validate_put_args(
    content_type: str, cache_control: str | None, tags: Mapping[str, str] | None
) -> dict[str, str]:
    if not isinstance(content_type, str) or not content_type:
        raise ValueError("content_type is required")
    if cache_control is not None and not isinstance(cache_control, str):
        raise ValueError("cache_control must be a str or None")
    clean: dict[str, str] = {}
    for name, value in (tags or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"tag {name!r}={value!r}: names and values must be str")
        if not 1 <= len(name) <= 128 or len(value) > 256:
            raise ValueError(f"tag {name!r}: name must be 1-128 chars, value <= 256")
        clean[name] = value
    if len(clean) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per object")
    return clean


def check_range_args(start: int | None, end: int | None, suffix: int | None) -> None:
    """ValueError for malformed range requests (before any I/O)."""
    for name, value in (("start", start), ("end", end), ("suffix", suffix)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"range {name} must be an int >= 0, not {value!r}")
    if suffix is not None and (start is not None or end is not None):
        raise ValueError("suffix cannot be combined with start/end")
    if start is not None and end is not None and end < start:
        raise ValueError(f"range start {start} is after its end {end}")


def resolve_range(
    size: int, start: int | None, end: int | None, suffix: int | None
) -> tuple[int, int]:
    """Resolve a request for ``[start, end]`` or the last ``suffix`` bytes of an object of
    ``size`` bytes to inclusive positions, following HTTP (RFC 9110 §14.1.2).

    No bounds at all means the whole object (``(0, -1)`` when it is empty). ``end`` past
    the object is clamped. Raises RangeNotSatisfiable when no byte can be served and
    ValueError for malformed requests (negative numbers, ``start > end``, suffix mixed
    with start/end).
    """
    check_range_args(start, end, suffix)
    if suffix is not None:
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    if start is None and end is None:
        return 0, size - 1
    first = 0 if start is None else start
    if first >= size:
        raise RangeNotSatisfiable(size)
    last = size - 1 if end is None else min(end, size - 1)
    return first, last


def _range_header(start: int | None, end: int | None, suffix: int | None) -> str | None:
    if suffix is not None:
        return f"bytes=-{suffix}"
    if start is None and end is None:
        return None
    return f"bytes={start or 0}-{'' if end is None else end}"


def _quote_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith(("W/", '"')):
        return etag
    return f'"{etag}"'


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _body_kind(body: object) -> str:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(body, os.PathLike):
        return "path"
    if isinstance(body, str):
        raise TypeError("put() body is a str: pass bytes, a pathlib.Path or an async iterable")
    if isinstance(body, AsyncIterable):
        return "stream"
    raise TypeError(f"put() cannot store a {type(body).__name__}")


async def _blocks(source: AsyncIterable[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Re-cut an async byte stream into blocks of exactly ``size`` bytes (the last may be
    shorter, and is empty only if the stream was). Holds at most ~2 blocks."""
    buf = bytearray()
    async for chunk in source:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"stream yielded {type(chunk).__name__}, expected bytes")
        buf += chunk
        while len(buf) >= size:
            with memoryview(buf) as view:
                block = bytes(view[:size])
            del buf[:size]
            yield block
            del block
    yield bytes(buf)


async def _delete_with_retries(
    keys: Sequence[str],
    attempt: Callable[[Sequence[str]], Awaitable[tuple[int, dict[str, str]]]],
    *,
    attempts: int = DELETE_ATTEMPTS,
    backoff: float = DELETE_BACKOFF,
) -> tuple[int, dict[str, str]]:
    """Run ``attempt`` (which deletes keys and returns (deleted, {key: error})) and retry
    the keys that failed with exponential backoff and jitter. Returns the total deleted
    and the errors of the keys that failed every time."""
    pending: Sequence[str] = keys
    deleted = 0
    failed: dict[str, str] = {}
    for n in range(attempts):
        if n:
            await asyncio.sleep(backoff_seconds(n, base=backoff, cap=30.0))
        done, failed = await attempt(pending)
        deleted += done
        if not failed:
            break
        pending = sorted(failed)
    return deleted, failed


# --------------------------------------------------------------------------- S3


def _client_error_parts(exc: ClientError) -> tuple[str, str, int | None]:
    error = exc.response.get("Error", {}) or {}
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code", "") or ""), str(error.get("Message", "") or ""), status


@contextlib.contextmanager
def _s3_errors(
    op: str, bucket: str, key: str | None = None, *, object_op: bool = True
) -> Iterator[None]:
    """Translate botocore/aiohttp failures inside the block into our exceptions.

    ``object_op``: a missing bucket or key means ObjectNotFound (get/head/tags/copy);
    otherwise (put/list/delete_prefix) a missing bucket is a plain StorageError.
    """
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    try:
        yield
    except ClientError as exc:
        code, message, status = _client_error_parts(exc)
        detail = f"{code or status}{': ' + message if message else ''}"
        if object_op and (
            code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404") or status == 404
        ):
            raise ObjectNotFound(f"{where} not found ({detail})") from exc
        if code in ("InvalidRange", "416") or status == 416:
            size = exc.response.get("Error", {}).get("ActualObjectSize")
            raise RangeNotSatisfiable(
                int(size) if size is not None and str(size).isdigit() else -1,
                f"{where}: range not satisfiable",
            ) from exc
        raise StorageError(f"S3 {op} {where} failed: {detail}") from exc
    except (BotoCoreError, aiohttp.ClientError) as exc:
        raise StorageError(f"S3 {op} {where} failed: {exc}") from exc


class _S3Body:
    """Chunk source over a GetObject body; ``skip`` drops leading bytes when a server
    ignored our Range header and sent the whole object."""

    def __init__(self, body: Any, bucket: str, key: str, skip: int = 0) -> None:
        self._body = body
        self._bucket = bucket
        self._key = key
        self._skip = skip

    async def read(self, n: int) -> bytes:
        with _s3_errors("read", self._bucket, self._key):
            while self._skip:
                dropped = await self._body.read(min(self._skip, CHUNK_SIZE))
                if not dropped:
                    return b""
                self._skip -= len(dropped)
            data: bytes = await self._body.read(n)
            return data

    async def close(self) -> None:
        self._body.close()


_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class S3Storage:
    """Storage on S3 or an S3-compatible endpoint, through one aiobotocore client.

    Build it with ``open_s3``; ``aclose()`` closes the client (and its connection pool).
    """

    def __init__(
        self,
        client: Any,
        stack: contextlib.AsyncExitStack,
        *,
        region: str,
        part_size: int = PART_SIZE,
        copy_threshold: int = MAX_COPY_OBJECT_SIZE,
        copy_part_size: int = COPY_PART_SIZE,
        ping_timeout: float = 5.0,
    ) -> None:
        if part_size < MIN_PART_SIZE or copy_part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 parts must be at least {MIN_PART_SIZE} bytes")
        self._client = client
        self._stack = stack
        self._region = region
        self.part_size = part_size
        self.copy_threshold = copy_threshold
        self.copy_part_size = copy_part_size
        self.ping_timeout = ping_timeout
        self._ping_bucket: str | None = None
        self._closed = False

    @property
    def client(self) -> Any:
        """The underlying aiobotocore S3 client (presigning, tests); owned by this object."""
        return self._client

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._stack.aclose()

    # -- writes

    async def put(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        content_type: str,
        cache_control: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        extra = self._write_args(
            content_type, cache_control, _validate_put_args(content_type, cache_control, tags)
        )
        kind = _body_kind(body)
        if kind == "bytes":
            data = body if isinstance(body, bytes) else bytes(body)  # type: ignore[arg-type]
            await self._put_object(bucket, key, data, extra)
        elif kind == "path":
            await self._put_file(bucket, key, Path(body), extra)  # type: ignore[arg-type]
        else:
            await self._put_stream(bucket, key, body, extra)  # type: ignore[arg-type]
        return await self.head(bucket, key)

    @staticmethod
    def _write_args(
        content_type: str, cache_control: str | None, tags: Mapping[str, str]
    ) -> dict[str, str]:
        extra = {"ContentType": content_type}
        if cache_control is not None:
            extra["CacheControl"] = cache_control
        if tags:
            extra["Tagging"] = urllib.parse.urlencode(tags)
        return extra

    async def _put_object(
        self, bucket: str, key: str, data: bytes, extra: Mapping[str, str]
    ) -> None:
        with _s3_errors("PutObject", bucket, key, object_op=False):
            await self._client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    async def _put_file(self, bucket: str, key: str, path: Path, extra: Mapping[str, str]) -> None:
        f: IO[bytes] = await asyncio.to_thread(open, path, "rb")
        try:
            size = os.fstat(f.fileno()).st_size
            if size <= self.part_size:
                data = await asyncio.to_thread(f.read)
                await self._put_object(bucket, key, data, extra)
                return
            part_size = max(self.part_size, -(-size // MAX_PARTS))

            async def parts() -> AsyncIterator[bytes]:
                while block := await asyncio.to_thread(f.read, part_size):
                    yield block
                    del block

            await self._multipart(bucket, key, extra, parts())
        finally:
            await asyncio.to_thread(f.close)

    async def _put_stream(
        self, bucket: str, key: str, body: AsyncIterable[bytes], extra: Mapping[str, str]
    ) -> None:
        blocks = _blocks(body, self.part_size)
        try:
            first = await anext(blocks)
            if len(first) < self.part_size:
                # Short blocks come only at the end: the whole stream fit in one.
                await self._put_object(bucket, key, first, extra)
                return

            async def all_blocks() -> AsyncIterator[bytes]:
                nonlocal first
                block, first = first, b""
                yield block
                del block
                async for block in blocks:
                    if block:
                        yield block
                    del block

            await self._multipart(bucket, key, extra, all_blocks())
        finally:
            await blocks.aclose()

    async def _multipart(
        self, bucket: str, key: str, extra: Mapping[str, str], blocks: AsyncIterator[bytes]
    ) -> None:
        with _s3_errors("CreateMultipartUpload", bucket, key, object_op=False):
            created = await self._client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        upload_id = created["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            async for block in blocks:
                number = len(parts) + 1
                if number > MAX_PARTS:
                    raise StorageError(f"s3://{bucket}/{key}: more than {MAX_PARTS} parts")
                with _s3_errors("UploadPart", bucket, key, object_op=False):
                    uploaded = await self._client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=block
                    )
                del block
                parts.append({"ETag": uploaded["ETag"], "PartNumber": number})
            with _s3_errors("CompleteMultipartUpload", bucket, key, object_op=False):
                await self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            await self._abort(bucket, key, upload_id)
            raise

    async def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        # Shielded so a cancelled upload still gives its parts back; failures to abort
        # are left to the bucket's AbortIncompleteMultipartUpload lifecycle rule.
        with contextlib.suppress(Exception):
            await asyncio.shield(
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            )

    # -- reads

    @staticmethod
    def _info(key: str, response: Mapping[str, Any], size: int) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=size,
            etag=_quote_etag(response["ETag"]),
            last_modified=_utc(response["LastModified"]),
            content_type=response.get("ContentType"),
            cache_control=response.get("CacheControl"),
        )

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        with _s3_errors("HeadObject", bucket, key):
            response = await self._client.head_object(Bucket=bucket, Key=key)
        return self._info(key, response, int(response["ContentLength"]))

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
    ) -> StreamedObject:
        validate_bucket(bucket)
        validate_key(key)
        check_range_args(start, end, suffix)
        if suffix == 0:
            raise RangeNotSatisfiable((await self.head(bucket, key)).size)
        header = _range_header(start, end, suffix)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if header:
            kwargs["Range"] = header
        try:
            with _s3_errors("GetObject", bucket, key):
                response = await self._client.get_object(**kwargs)
        except RangeNotSatisfiable as exc:
            if exc.size >= 0:
                raise
            raise RangeNotSatisfiable((await self.head(bucket, key)).size) from exc
        body = response["Body"]
        try:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            content_range = response.get("ContentRange")
            match = _CONTENT_RANGE_RE.fullmatch(content_range or "")
            if status == 206 and match and match.group(3) != "*":
                first, last, size = int(match.group(1)), int(match.group(2)), int(match.group(3))
                skip = 0
            else:
                # Whole object (asked for, or the server ignored the Range header).
                size = int(response["ContentLength"])
                first, last = resolve_range(size, start, end, suffix)
                skip = first
            info = self._info(key, response, size)
        except BaseException:
            body.close()
            raise
        return StreamedObject(info, first, last, _S3Body(body, bucket, key, skip))

    async def tags(self, bucket: str, key: str) -> dict[str, str]:
        validate_bucket(bucket)
        validate_key(key)
        with _s3_errors("GetObjectTagging", bucket, key):
            response = await self._client.get_object_tagging(Bucket=bucket, Key=key)
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        validate_bucket(bucket)
        validate_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        with _s3_errors("ListObjectsV2", bucket, prefix, object_op=False):
            async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=_quote_etag(item["ETag"]),
                        last_modified=_utc(item["LastModified"]),
                        content_type=None,
                        cache_control=None,
                    )

    async def local_path(self, bucket: str, key: str) -> Path | None:
        validate_bucket(bucket)
        validate_key(key)
        return None

    # -- deletes and copies

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        with _s3_errors("DeleteObject", bucket, key, object_op=False):
            await self._client.delete_object(Bucket=bucket, Key=key)

    async def _delete_objects(self, bucket: str, keys: Sequence[str]) -> tuple[int, dict[str, str]]:
        with _s3_errors("DeleteObjects", bucket, keys[0], object_op=False):
            response = await self._client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
        failed = {
            e["Key"]: f"{e.get('Code', 'Error')}: {e.get('Message', '')}".rstrip(": ")
            for e in response.get("Errors", ())
        }
        return len(keys) - len(failed), failed

    async def delete_prefix(self, bucket: str, prefix: str) -> DeleteResult:
        validate_bucket(bucket)
        validate_prefix(prefix, allow_empty=False)
        deleted = 0
        errors: dict[str, str] = {}
        start_after: str | None = None
        while True:
            # StartAfter (not a continuation token) stays correct while we delete what
            # we have listed, whatever the server's token scheme.
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": DELETE_BATCH}
            if start_after is not None:
                kwargs["StartAfter"] = start_after
            with _s3_errors("ListObjectsV2", bucket, prefix, object_op=False):
                page = await self._client.list_objects_v2(**kwargs)
            keys = [item["Key"] for item in page.get("Contents", ())]
            if not keys:
                break
            done, failed = await _delete_with_retries(
                keys, lambda batch: self._delete_objects(bucket, batch)
            )
            deleted += done
            errors.update(failed)
            if not page.get("IsTruncated"):
                break
            start_after = keys[-1]
        return DeleteResult(deleted=deleted, errors=tuple(sorted(errors.items())))

    async def copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo:
        for b, k in ((src_bucket, src_key), (dst_bucket, dst_key)):
            validate_bucket(b)
            validate_key(k)
        source = await self.head(src_bucket, src_key)
        if (src_bucket, src_key) == (dst_bucket, dst_key):
            return source  # S3 refuses a self-copy that changes nothing
        if source.size > self.copy_threshold:
            await self._multipart_copy(src_bucket, source, dst_bucket, dst_key)
        else:
            with _s3_errors("CopyObject", src_bucket, src_key):
                await self._client.copy_object(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    CopySource={"Bucket": src_bucket, "Key": src_key},
                    CopySourceIfMatch=source.etag,
                    MetadataDirective="COPY",
                    TaggingDirective="COPY",
                )
        return await self.head(dst_bucket, dst_key)

    async def _multipart_copy(
        self, src_bucket: str, source: ObjectInfo, dst_bucket: str, dst_key: str
    ) -> None:
        tags = await self.tags(src_bucket, source.key)
        extra = self._write_args(
            source.content_type or "application/octet-stream", source.cache_control, tags
        )
        with _s3_errors("CreateMultipartUpload", dst_bucket, dst_key, object_op=False):
            created = await self._client.create_multipart_upload(
                Bucket=dst_bucket, Key=dst_key, **extra
            )
        upload_id = created["UploadId"]
        part_size = max(self.copy_part_size, -(-source.size // MAX_PARTS))
        parts: list[dict[str, Any]] = []
        try:
            for number, first in enumerate(range(0, source.size, part_size), start=1):
                last = min(first + part_size, source.size) - 1
                with _s3_errors("UploadPartCopy", src_bucket, source.key):
                    response = await self._client.upload_part_copy(
                        Bucket=dst_bucket,
                        Key=dst_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": src_bucket, "Key": source.key},
                        CopySourceIfMatch=source.etag,
                        CopySourceRange=f"bytes={first}-{last}",
                    )
                parts.append({"ETag": response["CopyPartResult"]["ETag"], "PartNumber": number})
            with _s3_errors("CompleteMultipartUpload", dst_bucket, dst_key, object_op=False):
                await self._client.complete_multipart_upload(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            await self._abort(dst_bucket, dst_key, upload_id)
            raise

    # -- buckets and health

    async def ensure_buckets(self, names: Iterable[str]) -> None:
        names = [validate_bucket(name) for name in names]
        for name in names:
            try:
                await self._client.head_bucket(Bucket=name)
                continue
            except ClientError as exc:
                code, _, status = _client_error_parts(exc)
                if status != 404 and code not in ("NoSuchBucket", "NotFound", "404"):
                    with _s3_errors("HeadBucket", name, object_op=False):
                        raise
            except (BotoCoreError, aiohttp.ClientError):
                with _s3_errors("HeadBucket", name, object_op=False):
                    raise
            kwargs: dict[str, Any] = {"Bucket": name}
            if self._region and self._region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
            try:
                with _s3_errors("CreateBucket", name, object_op=False):
                    await self._client.create_bucket(**kwargs)
            except StorageError as exc:
                cause = exc.__cause__
                if not (
                    isinstance(cause, ClientError)
                    and _client_error_parts(cause)[0] == "BucketAlreadyOwnedByYou"
                ):
                    raise
        if names and self._ping_bucket is None:
            self._ping_bucket = names[0]

    async def ping(self) -> None:
        """HeadBucket on the first ensured bucket (else ListBuckets, where AccessDenied
        still proves the endpoint and credentials work), within ``ping_timeout``."""
        bucket = self._ping_bucket
        try:
            async with asyncio.timeout(self.ping_timeout):
                if bucket is not None:
                    with _s3_errors("HeadBucket", bucket, object_op=False):
                        await self._client.head_bucket(Bucket=bucket)
                    return
                try:
                    await self._client.list_buckets()
                except ClientError as exc:
                    if _client_error_parts(exc)[0] != "AccessDenied":
                        with _s3_errors("ListBuckets", "*", object_op=False):
                            raise
                except (BotoCoreError, aiohttp.ClientError):
                    with _s3_errors("ListBuckets", "*", object_op=False):
                        raise
        except TimeoutError:
            raise StorageError(f"S3 did not answer within {self.ping_timeout}s") from None


async def open_s3(
    endpoint_url: str | None,
    region: str,
    access_key: str | None,
    secret_key: str | None,
    *,
    part_size: int = PART_SIZE,
    max_pool_connections: int = 64,
) -> S3Storage:
    """Create the process's S3 client: path-style addressing (any S3-compatible
    endpoint), standard retries, no optional checksums (which some S3-compatible
    servers reject). Without keys, botocore's default credential chain applies."""
    if (access_key is None) != (secret_key is None):
        raise ValueError("give both access_key and secret_key, or neither")
    config = AioConfig(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=max_pool_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    stack = contextlib.AsyncExitStack()
    try:
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url or None,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )
        )
        return S3Storage(
            client,
            stack,
            region=region,
            part_size=part_size,
        )
    except BaseException:
        await stack.aclose()
        raise


# --------------------------------------------------------------------------- local files


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, UTC)


_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class _AtomicFile:
    """A temp file beside ``final`` (same directory, so the rename is atomic): ``flush``
    fsyncs and closes it, ``replace`` renames it over ``final``, ``discard`` drops it."""

    def __init__(self, final: Path, *, hashed: bool) -> None:
        self.final = final
        self.temp = final.parent / f".sf{_TMP_MARK}{secrets.token_hex(8)}{_TMP_SUFFIX}"
        self.md5 = hashlib.md5(usedforsecurity=False) if hashed else None
        self.size = 0
        for attempt in range(3):
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.file: IO[bytes] = open(self.temp, "xb")
                break
            except FileNotFoundError:
                # A concurrent delete pruned the fresh directory; make it again.
                if attempt == 2:
                    raise

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.size += len(data)

    def copy_from(self, src: IO[bytes]) -> None:
        while block := src.read(CHUNK_SIZE * 4):
            self.write(block)

    def flush(self) -> os.stat_result:
        self.file.flush()
        os.fsync(self.file.fileno())
        st = os.fstat(self.file.fileno())
        self.file.close()
        return st

    def replace(self) -> None:
        os.replace(self.temp, self.final)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileChunks:
    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    async def read(self, n: int) -> bytes:
        try:
            return await asyncio.to_thread(self._f.read, n)
        except OSError as exc:
            raise StorageError(f"reading {self._f.name}: {exc}") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self._f.close)


class LocalStorage:
    """Storage in a directory: objects at ``root/bucket/key``, JSON sidecars with ETag,
    content type, cache control and tags at ``root/.meta/bucket/key``.

    An object exists when both files do; the sidecar is written last, so it marks the
    object committed (a crash mid-put leaves an invisible orphan that the next put or
    ``delete_prefix`` cleans up). Each file is replaced atomically, but the pair is not:
    a reader racing an overwrite of the same key may briefly see new bytes with the old
    metadata (segments are written once, so the origin never does this).

    Keys that are both an object and a "directory" (``a`` and ``a/b``) cannot coexist on
    a filesystem; the second put fails with StorageError. Files must not be edited in
    place behind its back (ETags are computed on write).
    """

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    async def aclose(self) -> None:
        return None

    # -- paths (sync; run in threads)

    def _real_root(self) -> str:
        return os.path.realpath(self._root)

    def _contained(self, path: Path) -> Path:
        root = self._real_root()
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(f"{path} resolves outside the storage root {root}")
        return path

    def _bucket_dirs(self, bucket: str) -> tuple[Path, Path]:
        return (
            self._contained(self._root / bucket),
            self._contained(self._root / META_DIR / bucket),
        )

    def _paths(self, bucket: str, key: str) -> tuple[Path, Path]:
        parts = key.split("/")
        return (
            self._contained(self._root.joinpath(bucket, *parts)),
            self._contained(self._root.joinpath(META_DIR, bucket, *parts)),
        )

    def _require_bucket(self, bucket: str) -> tuple[Path, Path]:
        data_dir, meta_dir = self._bucket_dirs(bucket)
        if not data_dir.is_dir():
            raise StorageError(f"bucket {bucket!r} does not exist under {self._root}")
        return data_dir, meta_dir

    @staticmethod
    def _read_meta(meta_path: Path, where: str) -> dict[str, Any]:
        try:
            raw = meta_path.read_bytes()
        except _MISSING:
            raise ObjectNotFound(f"{where} not found") from None
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict) or not isinstance(meta.get("etag"), str):
                raise ValueError("not an object with an etag")
        except ValueError as exc:
            raise StorageError(f"{where}: corrupt metadata {meta_path}: {exc}") from exc
        return meta

    @staticmethod
    def _object_info(key: str, st: os.stat_result, meta: Mapping[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=meta["etag"],
            last_modified=_mtime(st),
            content_type=meta.get("content_type"),
            cache_control=meta.get("cache_control"),
        )

    def _stat_object(self, bucket: str, key: str) -> tuple[os.stat_result, dict[str, Any], Path]:
        obj, meta_path = self._paths(bucket, key)
        where = f"{bucket}/{key}"
        meta = self._read_meta(meta_path, where)
        try:
            st = os.stat(obj)
        except _MISSING:
            raise ObjectNotFound(f"{where} not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"{where} not found")
        return st, meta, obj

    # -- writes

    def _write_sync(
        self,
        bucket: str,
        key: str,
        fill: Callable[[_AtomicFile], None] | None,
        writer: _AtomicFile | None,
        meta: Mapping[str, Any],
    ) -> ObjectInfo:
        """Create (or finish) the object's temp file, write the sidecar, rename both."""
        obj, meta_path = self._paths(bucket, key)
        if writer is None:
            self._require_bucket(bucket)
            writer = _AtomicFile(obj, hashed=True)
        sidecar: _AtomicFile | None = None
        try:
            if fill is not None:
                fill(writer)
            st = writer.flush()
            assert writer.md5 is not None
            record = {**meta, "etag": f'"{writer.md5.hexdigest()}"', "size": writer.size}
            sidecar = _AtomicFile(meta_path, hashed=False)
            sidecar.write(json.dumps(record, sort_keys=True).encode())
            sidecar.flush()
            writer.replace()
            sidecar.replace()
            _fsync_dir(obj.parent)
            _fsync_dir(meta_path.parent)
        except BaseException:
            writer.discard()
            if sidecar is not None:
                sidecar.discard()
            raise
        return self._object_info(key, st, record)

    def _open_writer(self, bucket: str, key: str) -> _AtomicFile:
        self._require_bucket(bucket)
        obj, _ = self._paths(bucket, key)
        return _AtomicFile(obj, hashed=True)

    async def put(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        content_type: str,
        cache_control: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        clean_tags = _validate_put_args(content_type, cache_control, tags)
        meta = {"content_type": content_type, "cache_control": cache_control, "tags": clean_tags}
        kind = _body_kind(body)
        where = f"{bucket}/{key}"
        src: IO[bytes] | None = None
        if kind == "path":
            # Problems with the caller's own file surface as the OSError they are.
            src = await asyncio.to_thread(open, Path(body), "rb")  # type: ignore[arg-type]
        try:
            if kind == "bytes":
                data = body

                def fill_bytes(w: _AtomicFile) -> None:
                    w.write(data)  # type: ignore[arg-type]

                return await asyncio.to_thread(
                    self._write_sync, bucket, key, fill_bytes, None, meta
                )
            if src is not None:
                source = src
                return await asyncio.to_thread(
                    self._write_sync, bucket, key, lambda w: w.copy_from(source), None, meta
                )
            return await self._put_stream(bucket, key, body, meta)  # type: ignore[arg-type]
        except (StorageError, ValueError, TypeError):
            raise
        except OSError as exc:
            raise StorageError(f"writing {where}: {exc}") from exc
        finally:
            if src is not None:
                await asyncio.to_thread(src.close)

    async def _put_stream(
        self, bucket: str, key: str, body: AsyncIterable[bytes], meta: Mapping[str, Any]
    ) -> ObjectInfo:
        writer = await asyncio.to_thread(self._open_writer, bucket, key)
        try:
            buf = bytearray()
            async for chunk in body:
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise TypeError(f"stream yielded {type(chunk).__name__}, expected bytes")
                if not buf and len(chunk) >= CHUNK_SIZE:
                    await asyncio.to_thread(writer.write, chunk)
                    continue
                buf += chunk
                if len(buf) >= CHUNK_SIZE:
                    await asyncio.to_thread(writer.write, buf)
                    buf.clear()
            if buf:
                await asyncio.to_thread(writer.write, buf)
            del buf
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise
        return await asyncio.to_thread(self._write_sync, bucket, key, None, writer, meta)

    # -- reads

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        st, meta, _ = await self._run(self._stat_object, bucket, key)
        return self._object_info(key, st, meta)

    async def tags(self, bucket: str, key: str) -> dict[str, str]:
        validate_bucket(bucket)
        validate_key(key)
        _, meta, _ = await self._run(self._stat_object, bucket, key)
        return dict(meta.get("tags") or {})

    async def local_path(self, bucket: str, key: str) -> Path | None:
        """The object's file, for sendfile. Not checked for existence (the caller's
        open/stat is the check that counts); paths that resolve out of root are refused."""
        validate_bucket(bucket)
        validate_key(key)
        obj, _ = await self._run(self._paths, bucket, key)
        return obj

    def _open_sync(self, bucket: str, key: str) -> tuple[IO[bytes], os.stat_result, dict[str, Any]]:
        obj, meta_path = self._paths(bucket, key)
        where = f"{bucket}/{key}"
        meta = self._read_meta(meta_path, where)
        try:
            f: IO[bytes] = open(obj, "rb")
        except _MISSING:
            raise ObjectNotFound(f"{where} not found") from None
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            f.close()
            raise ObjectNotFound(f"{where} not found")
        return f, st, meta

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
    ) -> StreamedObject:
        validate_bucket(bucket)
        validate_key(key)
        check_range_args(start, end, suffix)
        f, st, meta = await self._run(self._open_sync, bucket, key)
        try:
            info = self._object_info(key, st, meta)
            first, last = resolve_range(info.size, start, end, suffix)
            if first:
                f.seek(first)
        except BaseException:
            await asyncio.to_thread(f.close)
            raise
        return StreamedObject(info, first, last, _FileChunks(f))

    def _keys_sync(self, bucket: str, prefix: str, *, include_orphans: bool) -> Sequence[str]:
        """Keys under ``prefix``, sorted: sidecars, plus object files without one."""
        trees: tuple[Path, ...] = self._require_bucket(bucket)
        if not include_orphans:
            trees = trees[1:]
        keys: set[str] = set()
        directory = prefix.rpartition("/")[0]
        for tree in trees:
            top = tree.joinpath(*directory.split("/")) if directory else tree
            self._contained(top)
            for dirpath, dirnames, filenames in os.walk(top):
                rel = os.path.relpath(dirpath, tree)
                rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                dirnames[:] = [
                    d
                    for d in dirnames
                    if _TMP_MARK not in d
                    and (f"{rel}{d}/".startswith(prefix) or prefix.startswith(f"{rel}{d}/"))
                ]
                for name in filenames:
                    candidate = rel + name
                    if _TMP_MARK not in name and candidate.startswith(prefix):
                        with contextlib.suppress(ValueError):
                            keys.add(validate_key(candidate))
        return sorted(keys)

    def _infos_sync(self, bucket: str, keys: Sequence[str]) -> Sequence[ObjectInfo]:
        infos = []
        for key in keys:
            try:
                st, meta, _ = self._stat_object(bucket, key)
            except (ObjectNotFound, ValueError):
                continue  # deleted meanwhile, an uncommitted write, or a link out of root
            infos.append(
                ObjectInfo(
                    key=key,
                    size=st.st_size,
                    etag=meta["etag"],
                    last_modified=_mtime(st),
                    content_type=None,
                    cache_control=None,
                )
            )
        return infos

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        validate_bucket(bucket)
        validate_prefix(prefix)
        keys = await self._run(self._keys_sync, bucket, prefix, include_orphans=False)
        for offset in range(0, len(keys), DELETE_BATCH):
            batch = keys[offset : offset + DELETE_BATCH]
            for info in await self._run(self._infos_sync, bucket, batch):
                yield info

    # -- deletes and copies

    def _prune(self, directory: Path, stop: Path) -> None:
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _delete_sync(
        self, bucket: str, keys: Sequence[str], *, strict: bool = False
    ) -> tuple[int, dict[str, str]]:
        data_dir, meta_dir = self._bucket_dirs(bucket)
        deleted = 0
        failed: dict[str, str] = {}
        for key in keys:
            try:
                obj, meta_path = self._paths(bucket, key)
            except ValueError as exc:
                if strict:
                    raise
                failed[key] = str(exc)
                continue
            try:
                for path in (meta_path, obj):  # sidecar first: the object stops existing
                    with contextlib.suppress(*_MISSING):
                        os.unlink(path)
                self._prune(meta_path.parent, meta_dir)
                self._prune(obj.parent, data_dir)
                deleted += 1
            except OSError as exc:
                failed[key] = str(exc)
        return deleted, failed

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        _, failed = await self._run(self._delete_sync, bucket, [key], strict=True)
        if failed:
            raise StorageError(f"deleting {bucket}/{key}: {failed[key]}")

    async def delete_prefix(self, bucket: str, prefix: str) -> DeleteResult:
        validate_bucket(bucket)
        validate_prefix(prefix, allow_empty=False)
        keys = await self._run(self._keys_sync, bucket, prefix, include_orphans=True)
        deleted = 0
        errors: dict[str, str] = {}
        for offset in range(0, len(keys), DELETE_BATCH):
            done, failed = await _delete_with_retries(
                keys[offset : offset + DELETE_BATCH],
                lambda batch: self._run(self._delete_sync, bucket, batch),
            )
            deleted += done
            errors.update(failed)
        return DeleteResult(deleted=deleted, errors=tuple(sorted(errors.items())))

    def _copy_sync(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo:
        f, _, meta = self._open_sync(src_bucket, src_key)
        try:
            record = {k: meta.get(k) for k in ("content_type", "cache_control", "tags")}
            return self._write_sync(dst_bucket, dst_key, lambda w: w.copy_from(f), None, record)
        finally:
            f.close()

    async def copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo:
        for b, k in ((src_bucket, src_key), (dst_bucket, dst_key)):
            validate_bucket(b)
            validate_key(k)
        if (src_bucket, src_key) == (dst_bucket, dst_key):
            return await self.head(src_bucket, src_key)  # nothing to do, as on S3
        return await self._run(self._copy_sync, src_bucket, src_key, dst_bucket, dst_key)

    # -- buckets and health

    def _ensure_sync(self, names: Sequence[str]) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        for name in names:
            for directory in self._bucket_dirs(name):
                directory.mkdir(parents=True, exist_ok=True)

    async def ensure_buckets(self, names: Iterable[str]) -> None:
        checked = [validate_bucket(name) for name in names]
        await self._run(self._ensure_sync, checked)

    def _ping_sync(self) -> None:
        if not self._root.is_dir():
            raise StorageError(f"storage root {self._root} is not a directory")
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise StorageError(f"storage root {self._root} is not writable")

    async def ping(self) -> None:
        await self._run(self._ping_sync)

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run blocking file work in a thread; OSErrors become StorageError."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as exc:
            raise StorageError(f"{self._root}: {exc}") from exc


# --------------------------------------------------------------------------- factory


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
