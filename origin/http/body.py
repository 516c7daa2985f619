"""Reading upload bodies within bounds: a per-process cap on uploads at once (503 +
Retry-After before any byte is read), `100 Continue` sent only when the handler
starts reading (so only after its token, type and size checks passed: RFC 9110
§10.1.1), an idle timeout between body bytes (408, RFC 9110 §15.5.9), and a client
that goes away mid-body told apart from a server error (`ClientClosed`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from origin.http.errors import ApiError, bad_request, error_response

RETRY_AFTER_SECONDS = 5  # what a refused upload is told to wait
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CONTINUED: web.RequestKey[bool] = web.RequestKey("continued", bool)
_CUT: web.RequestKey[bool] = web.RequestKey("cut", bool)
_DEADLINE: web.RequestKey[asyncio.Timeout] = web.RequestKey("read_deadline", asyncio.Timeout)


class ClientClosed(Exception):
    """The client went away before its request was answered (mid-body, say): nothing
    can be answered; the middleware logs it once and counts it apart from errors."""


class BodyTimeout(ApiError):
    """No body byte for the idle timeout (408, the connection is closed after it)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            "request_timeout",
            f"no body bytes arrived for {seconds:g} s; send the request again",
            {"Connection": "close"},
        )


class ShuttingDown(ApiError):
    """The process is stopping and cannot take (or finish taking) this body."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "shutting_down",
            "this server is shutting down; send the request again",
            {"Retry-After": "1", "Connection": "close"},
        )


# a body read ended because the connection did
_DISCONNECTS = (ConnectionError, aiohttp.ClientPayloadError, aiohttp.http.HttpProcessingError)


class UploadSlots:
    """At most `limit` uploads at once in this process; the next gets 503 with
    Retry-After before its body is read. `closed` (shutdown) refuses every new one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self.refused = 0
        self.closed = False

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        if self.closed:
            raise ShuttingDown()
        if self.taken >= self.limit:
            self.refused += 1
            raise ApiError(
                503,
                "too_many_uploads",
                f"this server takes at most {self.limit} uploads at once; retry shortly",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.taken += 1
        try:
            yield
        finally:
            self.taken -= 1


async def defer_continue(request: web.Request) -> web.Response | None:
    """A route's `expect_handler`: unlike aiohttp's default it sends nothing when the
    request arrives (`send_continue` does, once the handler's checks passed); an
    expectation other than 100-continue is refused (417, RFC 9110 §10.1.1). aiohttp
    calls it before the middlewares, so a refusal is an answer, not an exception."""
    expect = request.headers.get("Expect", "")
    if request.version >= (1, 1) and expect.lower() != "100-continue":
        response = error_response(
            417, "expectation_failed", f"unknown expectation: {expect[:64]!r}"
        )
        response.force_close()  # the body, if any, was not read
        return response
    return None


async def send_continue(request: web.Request) -> None:
    """`100 Continue` for a client waiting for it, once per request (an HTTP/1.0 client
    never gets one: RFC 9110 §10.1.1)."""
    if (
        request.version >= (1, 1)
        and request.headers.get("Expect", "").lower() == "100-continue"
        and not request.get(_CONTINUED)
    ):
        request[_CONTINUED] = True
        await request.writer.write(_CONTINUE)


def cut(request: web.BaseRequest) -> bool:
    """End the reading of a body still arriving (the server is stopping): its next or
    current read raises ShuttingDown. Whether the body was still arriving."""
    if request.content.is_eof():
        return False
    request[_CUT] = True
    deadline = request.get(_DEADLINE)
    if deadline is not None and not deadline.expired():
        deadline.reschedule(asyncio.get_running_loop().time())
    return True


async def chunks(request: web.Request, size: int, idle: float) -> AsyncIterator[bytes]:
    """The request body, up to `size` bytes at a time, `100 Continue` first if asked
    for. BodyTimeout when no byte arrives for `idle` seconds; ClientClosed when the
    connection ends mid-body; ShuttingDown when the server cuts the read (`cut`)."""
    await send_continue(request)
    content = request.content
    while True:
        if request.get(_CUT):
            raise ShuttingDown()
        try:
            async with asyncio.timeout(idle) as deadline:
                request[_DEADLINE] = deadline
                chunk = await content.read(size)
        except TimeoutError:
            if request.get(_CUT):
                raise ShuttingDown() from None
            raise BodyTimeout(idle) from None
        except _DISCONNECTS:
            raise ClientClosed() from None
        if not chunk:
            return
        yield chunk


async def read_all(request: web.Request, limit: int, idle: float) -> bytes:
    """A small body whole (`chunks`' bounds), 413 as soon as it passes `limit` bytes
    (or its Content-Length says it will), 400 when it is empty."""
    too_large = ApiError(413, "too_large", f"the body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = bytearray()
    async for chunk in chunks(request, 64 * 1024, idle):
        data += chunk
        if len(data) > limit:
            raise too_large
    if not data:
        raise bad_request("the body is empty", "empty_upload")
    return bytes(data)


async def json_body(request: web.Request) -> dict[str, Any]:
    """A JSON API request's body: one JSON object (415 for another type, 400 when it
    is not JSON or not an object)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("the body is not valid JSON") from None
    except RecursionError:  # json's decoder gives up on deep nesting this way
        raise bad_request("the body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body
