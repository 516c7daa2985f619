"""The storage core both backends share: the ``Storage`` protocol, its errors and values
(``ObjectInfo``, ``StreamedObject``, ``Unsent``, ``DeleteResult``, ``PutMeta``), and the
validation every call makes before any I/O (bucket names, keys, prefixes, put arguments,
upload ids and part numbers, byte ranges).

Byte ranges and conditional requests are decided by ``core.conditional``; this module
only turns ``get``'s ``start``/``end``/``suffix`` into the Range field it decides on.
Underscored helpers here are for the backend modules (``s3``, ``local``) only.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from core.backoff import backoff_seconds

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CHUNK_SIZE = 256 * KiB
"""Size of the pieces streamed out of ``get`` and of LocalStorage's file reads."""

DELETE_BATCH = 1_000
"""Keys per S3 DeleteObjects request (the API's maximum), and per LocalStorage batch."""

DELETE_ATTEMPTS = 4
DELETE_BACKOFF = 0.2
MAX_KEY_BYTES = 1024
MAX_TAGS = 10

# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """A storage operation failed (unreachable backend, denied, disk full, ...)."""


class BadGateway(StorageError):
    """The storage answered, but with a server error or something unreadable (a proxy
    answers 502 for it, RFC 9110 §15.6.3), not with the object or a refusal."""


class ObjectNotFound(StorageError):
    """The object (or its bucket) does not exist."""


class NoSuchUpload(ObjectNotFound):
    """The multipart upload does not exist (never created, completed or aborted)."""


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


@dataclass(frozen=True, slots=True)
class Unsent:
    """A conditional read answered without a body: 304 Not Modified (RFC 9110 §15.4.5),
    412 Precondition Failed (§15.5.13) or 416 Range Not Satisfiable (§15.5.17).

    ``etag`` and ``last_modified`` are the object's validators when the backend gave
    them (a 304 repeats them); ``size`` is the object's length when known, and always
    on a 416, which reports it (``Content-Range: bytes */size``, §14.4)."""

    status: int
    etag: str | None = None
    last_modified: datetime | None = None
    size: int | None = None


class _ChunkSource(Protocol):
    async def read(self, n: int) -> bytes: ...

    async def close(self) -> None: ...


class StreamedObject:
    """An open read of one object, or of one byte range of it.

    ``info`` describes the whole object; ``start``/``end`` are the resolved inclusive
    byte positions served and ``length`` their count; ``partial`` says they are the range
    a Range field asked for (an HTTP 206), not the whole object. Iterate once (``async
    for chunk in obj`` or ``obj.chunks()``), then ``close()`` — or use ``async with``.
    Closing early (a client went away) releases the file or HTTP connection.
    """

    __slots__ = ("_info", "_start", "_end", "_partial", "_source", "_closed", "_consumed")

    def __init__(
        self, info: ObjectInfo, start: int, end: int, source: _ChunkSource, *, partial: bool
    ) -> None:
        self._info = info
        self._start = start
        self._end = end
        self._partial = partial
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
    def partial(self) -> bool:
        return self._partial

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return (
            f"StreamedObject(key={self._info.key!r}, start={self._start}, end={self._end}, "
            f"size={self._info.size}, partial={self._partial})"
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


@dataclass(frozen=True, slots=True)
class PutMeta:
    """The HTTP metadata a write gives its object (``put``, ``create_multipart``),
    checked by ``_put_meta``: ``tags`` holds at most ``MAX_TAGS`` str pairs."""

    content_type: str
    cache_control: str | None
    tags: Mapping[str, str]


MAX_PARTS = 10_000
"""Parts of one multipart upload, numbered 1 to 10,000 (S3's limits)."""


@dataclass(frozen=True, slots=True)
class UploadedPart:
    """One stored part of a multipart upload: its number, quoted ETag (the MD5 of its
    bytes) and size. ``complete_multipart`` takes the ones that make the object."""

    number: int
    etag: str
    size: int


def multipart_etag(parts: Sequence[UploadedPart]) -> str:
    """The ETag S3 gives an object assembled from ``parts``: the MD5 of the parts' MD5
    digests, then ``-`` and their count (LocalStorage computes the same)."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        digest.update(bytes.fromhex(part.etag.strip('"')))
    return f'"{digest.hexdigest()}-{len(parts)}"'


@runtime_checkable
class Storage(Protocol):
    """Object storage used by the origin and the workers; buckets are passed by name.

    Keys are ``/``-separated, without empty, ``.`` or ``..`` segments, backslashes,
    control characters or a leading slash (``ValueError`` otherwise). Writes of one key
    replace the whole object. ``delete`` of a missing key is not an error.

    The backends subclass it, so they share ``get`` and mypy checks that they implement
    every other method. The writes (``put``, ``copy`` and the multipart calls) are defined
    here too: they check their arguments, the same for every backend, then hand them to
    the backend's underscored method of the same name.
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
        _check_object(bucket, key)
        return await self._put(bucket, key, body, _put_meta(content_type, cache_control, tags))

    async def _put(self, bucket: str, key: str, body: Body, meta: PutMeta) -> ObjectInfo: ...

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
        ``suffix`` bytes; raises ObjectNotFound or RangeNotSatisfiable. One definition
        for every backend: the conditional read of that Range."""
        request = _range_request(start, end, suffix)
        return _expect_body(await self.conditional_get(bucket, key, request))

    async def conditional_get(
        self, bucket: str, key: str, conditions: Mapping[str, str]
    ) -> StreamedObject | Unsent:
        """Open the object for an HTTP GET carrying ``conditions``: the request's
        If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, Range and
        If-Range fields (canonical names, or a case-insensitive mapping such as aiohttp's
        headers; other fields are ignored). The answer is the one
        ``core.conditional.decide`` gives for the object: the whole object or the one
        range to send (``partial``), or Unsent (304, 412, 416). Raises ObjectNotFound."""
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
        """Server-side copy keeping content type, cache control and tags. A copy onto
        itself changes nothing (S3 refuses one): the object's ``head``."""
        _check_object(src_bucket, src_key)
        _check_object(dst_bucket, dst_key)
        if (src_bucket, src_key) == (dst_bucket, dst_key):
            return await self.head(src_bucket, src_key)
        return await self._copy(src_bucket, src_key, dst_bucket, dst_key)

    async def _copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo: ...

    # Multipart uploads (resumable uploads land through these): parts are stored as
    # they arrive, from any process, and become one object at ``complete_multipart``.
    # Every part but the last must hold at least ``min_part_size`` bytes.

    min_part_size: int

    async def create_multipart(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        cache_control: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Start a multipart upload of ``key``; returns its upload id."""
        _check_object(bucket, key)
        meta = _put_meta(content_type, cache_control, tags)
        return await self._create_multipart(bucket, key, meta)

    async def _create_multipart(self, bucket: str, key: str, meta: PutMeta) -> str: ...

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Body
    ) -> UploadedPart:
        """Store part ``number`` (1-10,000; storing a number again replaces it).
        NoSuchUpload when the upload is gone."""
        _check_object(bucket, key)
        _check_part(upload_id, number)
        return await self._upload_part(bucket, key, upload_id, number, body)

    async def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Body
    ) -> UploadedPart: ...

    async def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> ObjectInfo:
        """Join ``parts`` (ascending numbers, as ``upload_part`` returned them) into the
        object; parts not listed are dropped. NoSuchUpload when the upload is gone,
        StorageError when a part is missing, differs from its ETag or is too small."""
        _check_object(bucket, key)
        _check_parts(upload_id, parts)
        return await self._complete_multipart(bucket, key, upload_id, parts)

    async def _complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> ObjectInfo: ...

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        """Drop the upload and its parts; an unknown upload is not an error."""
        _check_object(bucket, key)
        _check_part(upload_id, 1)
        await self._abort_multipart(bucket, key, upload_id)

    async def _abort_multipart(self, bucket: str, key: str, upload_id: str) -> None: ...

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


def _check_object(bucket: str, key: str) -> None:
    validate_bucket(bucket)
    validate_key(key)


def _put_meta(
    content_type: str, cache_control: str | None, tags: Mapping[str, str] | None
) -> PutMeta:
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
    return PutMeta(content_type, cache_control, clean)


def _range_request(start: int | None, end: int | None, suffix: int | None) -> dict[str, str]:
    """The request fields of ``get``: a Range (RFC 9110 §14.1.1) asking for ``[start, end]``
    or the last ``suffix`` bytes, none for the whole object. ValueError for malformed
    requests (negative numbers, ``start > end``, suffix mixed with start/end), before
    any I/O."""
    for name, value in (("start", start), ("end", end), ("suffix", suffix)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"range {name} must be an int >= 0, not {value!r}")
    if suffix is not None:
        if start is not None or end is not None:
            raise ValueError("suffix cannot be combined with start/end")
        return {"Range": f"bytes=-{suffix}"}
    if start is None and end is None:
        return {}
    if start is not None and end is not None and end < start:
        raise ValueError(f"range start {start} is after its end {end}")
    return {"Range": f"bytes={start or 0}-{'' if end is None else end}"}


def _expect_body(outcome: StreamedObject | Unsent) -> StreamedObject:
    """``get``'s answer from the conditional read of its Range: the object, or
    RangeNotSatisfiable (416) when no byte of it was selected."""
    if isinstance(outcome, StreamedObject):
        return outcome
    if outcome.status == 416:
        raise RangeNotSatisfiable(-1 if outcome.size is None else outcome.size)
    raise StorageError(f"a read without preconditions was answered {outcome.status}")


_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,1024}")


def _check_part(upload_id: str, number: int) -> None:
    """ValueError for an upload id or part number no backend accepts, before any I/O."""
    if (
        not isinstance(upload_id, str)
        or not _UPLOAD_ID_RE.fullmatch(upload_id)
        or ".." in upload_id
        or upload_id.startswith("/")
    ):
        raise ValueError(f"invalid upload id {upload_id!r}")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_PARTS:
        raise ValueError(f"part number must be 1-{MAX_PARTS}, not {number!r}")


def _check_parts(upload_id: str, parts: Sequence[UploadedPart]) -> None:
    if not parts:
        raise ValueError("a multipart upload needs at least one part")
    for part in parts:
        _check_part(upload_id, part.number)
    numbers = [p.number for p in parts]
    if numbers != sorted(set(numbers)):
        raise ValueError("parts must be listed in ascending order, each number once")


async def gathered(
    body: AsyncIterable[bytes], size: int = CHUNK_SIZE
) -> AsyncIterator[bytes | bytearray]:
    """The bytes of a streamed body in blocks of at least `size` (the last one may be
    shorter): a request body arrives in pieces of a few KiB to 1 MiB, and a writer
    that hops to a thread per block pays that hop once per block, not per piece."""
    buf = bytearray()
    async for chunk in body:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"stream yielded {type(chunk).__name__}, expected bytes")
        if not buf and len(chunk) >= size:
            yield chunk  # type: ignore[misc]
            continue
        buf += chunk
        if len(buf) >= size:
            yield buf
            buf = bytearray()
    if buf:
        yield buf


async def write_all_but_last(
    body: AsyncIterable[bytes],
    write: Callable[[bytes | bytearray], object],
    ready: Awaitable[object] | None = None,
) -> bytes | bytearray | None:
    """Write the `gathered` blocks of a streamed body with `write` in a thread, each
    once the next one is there, and return the last one (None: an empty body): the
    caller writes it in the same thread hop that ends the file, one hop fewer per body
    (under load each hop waits for a time slice). `ready` (the file being opened
    meanwhile, say) is awaited before the first write."""
    held: bytes | bytearray | None = None
    async for block in gathered(body):
        if held is not None:
            if ready is not None:
                await ready
                ready = None
            await asyncio.to_thread(write, held)
        held = block
    if ready is not None:
        await ready
    return held


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
