"""Sending a stored object over HTTP: validators, byte ranges and conditional GET
(RFC 9110 §13, §14), HEAD, streamed bodies; LocalStorage files go out with sendfile."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

from aiohttp import hdrs, web

from origin import keys
from origin.conditional import decide
from origin.errors import ApiError, not_found
from origin.storage import ObjectNotFound, RangeNotSatisfiable


async def serve_object(
    request: web.Request, bucket: str, key: str, content_type: str, cache_control: str
) -> web.StreamResponse:
    """Send a stored object with validators, ranges and conditional GET. LocalStorage
    files go out with sendfile (aiohttp's FileResponse applies RFC 9110 §13/§14
    itself); other backends use the same rules from origin.conditional."""
    storage = request.app[keys.STORAGE]
    base = {hdrs.CONTENT_TYPE: content_type, hdrs.CACHE_CONTROL: cache_control}
    path = await storage.local_path(bucket, key)
    if path is not None:
        if not path.is_file():
            raise not_found("no such file")
        return SendfileResponse(path, headers=base)
    try:
        info = await storage.head(bucket, key)
    except ObjectNotFound:
        raise not_found("no such file") from None
    decision = decide(
        request.method,
        request.headers,
        etag=info.etag,
        last_modified=info.last_modified,
        size=info.size,
    )
    headers = {
        **base,
        hdrs.ETAG: info.etag,
        hdrs.LAST_MODIFIED: format_datetime(info.last_modified, usegmt=True),
        hdrs.ACCEPT_RANGES: "bytes",
    }
    if decision.status == 304:
        return web.Response(status=304, headers=headers)
    if decision.status == 412:
        raise ApiError(412, "precondition_failed", "a precondition did not hold")
    if decision.status == 416:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the object has {info.size} bytes",
            {hdrs.CONTENT_RANGE: f"bytes */{info.size}"},
        )
    response = web.StreamResponse(status=decision.status, headers=headers)
    if decision.status == 206:
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {decision.start}-{decision.end}/{info.size}"
    response.content_length = max(decision.length, 0)
    if request.method == "HEAD" or info.size == 0:
        await response.prepare(request)
        return response
    try:
        obj = await storage.get(bucket, key, start=decision.start, end=decision.end)
    except ObjectNotFound:
        raise not_found("no such file") from None
    except RangeNotSatisfiable:
        raise ApiError(416, "range_not_satisfiable", "the object changed") from None
    async with obj:
        await response.prepare(request)
        async for chunk in obj:
            await response.write(chunk)
    await response.write_eof()
    return response


class SendfileResponse(web.FileResponse):
    """aiohttp's sendfile response, except that a multi-range request is answered
    with the whole body (RFC 9110 §14.2 lets a server ignore Range) instead of 416,
    and nothing else."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        if "," in request.headers.get(hdrs.RANGE, ""):
            headers = request.headers.copy()
            del headers[hdrs.RANGE]
            request = request.clone(headers=headers)
        return await super().prepare(request)
