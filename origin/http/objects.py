"""Stored objects over HTTP (a segment's own files, assets): Content-Type, Cache-Control
(for assets, the ones stored with the object), validators, byte ranges and conditional
GET/HEAD (RFC 9110 §13, §14).

LocalStorage files go out with sendfile (``SendfileResponse``: aiohttp's FileResponse
with its own range and conditional handling, docs/NOTES.md). Other backends answer a
GET with one conditional, ranged read (``Storage.conditional_get``: one GetObject on
S3) and a HEAD with one ``head``, decided by ``core.conditional``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import hdrs, web

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


class SendfileResponse(web.FileResponse):
    """aiohttp's sendfile response, except that a multi-range request is answered
    with the whole body (RFC 9110 §14.2 lets a server ignore Range) instead of 416."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        if "," in request.headers.get(hdrs.RANGE, ""):
            headers = request.headers.copy()
            del headers[hdrs.RANGE]
            request = request.clone(headers=headers)
        return await super().prepare(request)
