"""Stored objects over HTTP (a segment's own files, assets): Content-Type, Cache-Control
(for assets, the ones stored with the object), validators, byte ranges and conditional
GET/HEAD (RFC 9110 §13, §14).

LocalStorage files go out with sendfile (``SendfileResponse``: aiohttp's FileResponse
with its own range and conditional handling, docs/NOTES.md), on uvloop too, which has
no ``loop.sendfile``. Other backends answer a GET with one conditional, ranged read
(``Storage.conditional_get``: one GetObject on S3) and a HEAD with one ``head``, decided
by ``core.conditional``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime
from typing import IO, Any

from aiohttp import hdrs, web, web_fileresponse
from aiohttp.abc import AbstractStreamWriter

from core.conditional import decide
from core.storage import ObjectInfo, ObjectNotFound, Storage, StreamedObject, Unsent
from origin import keys
from origin.http.errors import ApiError, not_found


async def serve_object(
    request: web.Request,
    bucket: str,
    key: str,
    content_type: str,
    cache_control: str,
    *,
    stored: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send a stored object with validators, ranges and conditional GET. With `stored`,
    the answer carries the Content-Type and Cache-Control stored with the object
    (`content_type` and `cache_control` stand in where the backend gives none: a 304
    from S3 carries no Content-Type); `headers` are added to every answer."""
    storage = request.app[keys.STORAGE]
    base: dict[str, str] = {
        hdrs.CONTENT_TYPE: content_type,
        hdrs.CACHE_CONTROL: cache_control,
        **(headers or {}),
    }
    path = await storage.local_path(bucket, key)
    if path is not None:
        if stored:  # the sidecar's fields (one read in a thread, like the file's)
            try:
                base = _stored(base, await storage.head(bucket, key))
            except ObjectNotFound:
                raise not_found("no such file") from None
        elif not path.is_file():
            raise not_found("no such file")
        return SendfileResponse(path, headers=base)
    try:
        if request.method == "HEAD":
            outcome: StreamedObject | ObjectInfo | Unsent = await _head(
                storage, bucket, key, request
            )
        else:
            outcome = await storage.conditional_get(bucket, key, request.headers)
    except ObjectNotFound:
        raise not_found("no such file") from None
    if isinstance(outcome, Unsent):
        return _unsent(outcome, _fields(base, outcome.etag, outcome.last_modified))
    info = outcome if isinstance(outcome, ObjectInfo) else outcome.info
    if stored:
        base = _stored(base, info)
    if isinstance(outcome, ObjectInfo):
        response = web.StreamResponse(headers=_fields(base, outcome.etag, outcome.last_modified))
        response.content_length = outcome.size
        await response.prepare(request)
        return response
    return await _send(request, outcome, _fields(base, info.etag, info.last_modified))


def _stored(base: dict[str, str], info: ObjectInfo) -> dict[str, str]:
    """`base` with the object's own Content-Type and Cache-Control, where it has them."""
    out = dict(base)
    if info.content_type:
        out[hdrs.CONTENT_TYPE] = info.content_type
    if info.cache_control:
        out[hdrs.CACHE_CONTROL] = info.cache_control
    return out


async def _head(
    storage: Storage, bucket: str, key: str, request: web.Request
) -> ObjectInfo | Unsent:
    """A HEAD costs one ``head``; its preconditions are decided here (it has no Range,
    RFC 9110 §14.2, so the answer is 200, 304 or 412)."""
    info = await storage.head(bucket, key)
    decision = decide(
        "HEAD", request.headers, etag=info.etag, last_modified=info.last_modified, size=info.size
    )
    if decision.status == 200:
        return info
    return Unsent(decision.status, info.etag, info.last_modified, info.size)


def _fields(
    base: dict[str, str], etag: str | None, last_modified: datetime | None
) -> dict[str, str]:
    """The fields of every answer about the object: a 304 repeats the validators a 200
    would carry (RFC 9110 §15.4.5)."""
    fields = {**base, hdrs.ACCEPT_RANGES: "bytes"}
    if etag is not None:
        fields[hdrs.ETAG] = etag
    if last_modified is not None:
        fields[hdrs.LAST_MODIFIED] = format_datetime(last_modified, usegmt=True)
    return fields


def _unsent(outcome: Unsent, fields: dict[str, str]) -> web.Response:
    if outcome.status == 304:
        return web.Response(status=304, headers=fields)
    if outcome.status == 412:
        raise ApiError(412, "precondition_failed", "a precondition did not hold")
    assert outcome.size is not None  # every backend knows the size it refused a Range for
    raise ApiError(  # 416 names the object's size (RFC 9110 §14.4)
        416,
        "range_not_satisfiable",
        f"the object has {outcome.size} bytes",
        {hdrs.CONTENT_RANGE: f"bytes */{outcome.size}"},
    )


async def _send(
    request: web.Request, obj: StreamedObject, fields: dict[str, str]
) -> web.StreamResponse:
    async with obj:
        response = web.StreamResponse(status=206 if obj.partial else 200, headers=fields)
        if obj.partial:
            response.headers[hdrs.CONTENT_RANGE] = f"bytes {obj.start}-{obj.end}/{obj.info.size}"
        response.content_length = obj.length
        await response.prepare(request)
        async for chunk in obj:
            await response.write(chunk)
    await response.write_eof()
    return response


# while sendfile waits for a slow client, how often it looks whether the connection
# was closed meanwhile (by the server's shutdown, say)
SENDFILE_CHECK_SECONDS = 1.0


class SendfileResponse(web.FileResponse):
    """aiohttp's sendfile response, except that a multi-range request is answered
    with the whole body (RFC 9110 §14.2 lets a server ignore Range) instead of 416,
    and that on an event loop without `loop.sendfile` (uvloop), where aiohttp would
    read the file into memory and write it piece by piece, the file still goes out
    with sendfile(2) (`send_file`)."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        if "," in request.headers.get(hdrs.RANGE, ""):
            headers = request.headers.copy()
            del headers[hdrs.RANGE]
            request = request.clone(headers=headers)
        return await super().prepare(request)

    async def _sendfile(  # aiohttp's hook: the head is not sent yet
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        loop = asyncio.get_running_loop()
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if (
            type(loop).sendfile is not asyncio.AbstractEventLoop.sendfile  # the loop's own
            or web_fileresponse.NOSENDFILE
            or self.compression
            or transport is None
            or sock is None
            or transport.get_extra_info("sslcontext") is not None
        ):
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)  # the head
        assert writer is not None
        await _flushed(transport, writer)
        await send_file(loop, transport, sock.fileno(), fobj.fileno(), offset, count)
        await web.StreamResponse.write_eof(self)
        return writer


async def _flushed(transport: asyncio.Transport, writer: AbstractStreamWriter) -> None:
    """Wait until everything written to `transport` has gone to its socket: with its
    high-water mark at 0 the transport pauses its protocol until its buffer is empty,
    and the writer's drain waits for that."""
    if not transport.get_write_buffer_size():
        return  # the usual case: the head went out at once
    limits = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        await writer.drain()
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=limits[1], low=limits[0])


async def send_file(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    sock_fd: int,
    file_fd: int,
    offset: int,
    count: int,
) -> None:
    """`count` bytes of `file_fd` from `offset` to the socket of `transport` (whose
    write buffer is empty and who writes nothing meanwhile) with sendfile(2), waiting
    for the socket to take more when it is full. A duplicate of the socket's
    descriptor is used: the loop refuses to watch a transport's own descriptor, and
    a descriptor number reused after the transport closed must not be written to."""
    fd = os.dup(sock_fd)
    try:
        while count > 0:
            if transport.is_closing():
                raise ConnectionResetError("connection lost while sending a file")
            try:
                sent = os.sendfile(fd, file_fd, offset, count)
            except BlockingIOError:
                await _writable(loop, fd)
                continue
            if sent == 0:  # the file is shorter than it was when the head was sent
                raise ConnectionResetError("the file shrank while it was being sent")
            offset += sent
            count -= sent
    finally:
        os.close(fd)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until `fd` can take more bytes, or SENDFILE_CHECK_SECONDS at most."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    timer = loop.call_later(SENDFILE_CHECK_SECONDS, wake)
    try:
        await ready
    finally:
        timer.cancel()
        loop.remove_writer(fd)
