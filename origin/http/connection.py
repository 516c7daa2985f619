"""The header read timeout, for both ways of running the app (origin/server.py): a
request head must arrive whole within `HEADER_TIMEOUT` seconds of its first byte.
A client that sends it slower (slowloris) gets 408 Request Timeout (RFC 9110
§15.5.9) and the connection is closed (RFC 9112 §9.6). Bodies have their own idle
timeout where handlers read them (body.py).

aiohttp itself has no such timeout, so each connection of the plain runner is a
`BoundedConnection` around aiohttp's protocol object (the fast path's connection keeps
the same `HeadClock`). Whether aiohttp is still waiting for a head is read from its
protocol object (`RequestHandler._waiter`, checked by tests/unit/test_fastpath_hooks.py
against the aiohttp version pyproject pins); it learns that an answer was sent through
the access-logger hook, as the fast path does."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler

from origin import keys
from origin.http.stats import HttpStats

log = logging.getLogger("storyforge.origin")
LINGER_SECONDS = 1.0  # a late head's connection stays half-closed this long


def waiting_for_head(inner: RequestHandler) -> bool:
    """aiohttp waits for the next request's head (no request is being handled)."""
    waiter = inner._waiter
    return waiter is not None and not waiter.done()


def timeout_answer(seconds: float) -> bytes:
    """The 408 sent to a head that did not arrive in time; the connection closes."""
    body = json.dumps(
        {
            "error": {
                "code": "request_timeout",
                "message": f"the request head did not arrive within {seconds:g} s",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        f"Server: {SERVER_SOFTWARE}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HeadClock:
    """One connection's header timeout. It starts at the first byte after the
    connection opened or after an answer was sent, stops at the next answer, and when
    it runs out while aiohttp still waits for a head (the bytes so far are not one),
    `expire` is called. While a request is being handled it does nothing: its body
    has its own timeout. One timer per connection, moved only when it fires (answers
    on a busy keep-alive connection schedule nothing)."""

    __slots__ = ("_inner", "_seconds", "_expire", "_loop", "_handle", "_started")

    def __init__(self, inner: RequestHandler, seconds: float, expire: Callable[[], None]) -> None:
        self._inner = inner
        self._seconds = seconds
        self._expire = expire
        self._loop = asyncio.get_event_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._started: float | None = None

    def data(self) -> None:
        if self._started is None:
            self._started = self._loop.time()
            if self._handle is None:
                self._handle = self._loop.call_at(self._started + self._seconds, self._fire)

    def answered(self) -> None:
        self._started = None

    def stop(self) -> None:
        self._started = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._started is None:
            return
        due = self._started + self._seconds
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._fire)
            return
        self._started = None
        if waiting_for_head(self._inner):
            self._expire()


def expire_head(
    transport: asyncio.Transport | None, seconds: float, stats: HttpStats, access_log: str
) -> None:
    """Answer 408 to a head that took too long and close the connection; counted as
    a 408 of no route, logged unless ACCESS_LOG=off. The connection is half-closed
    first and closed LINGER_SECONDS later (RFC 9112 §9.6): a client still sending
    would otherwise get a reset that can destroy the 408 before it is read. The
    caller drops what arrives meanwhile."""
    if transport is None or transport.is_closing():
        return
    answer = timeout_answer(seconds)
    transport.write(answer)
    if transport.can_write_eof():
        transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
    else:
        transport.close()
    stats.answered("unmatched", 408, seconds, len(answer))
    if access_log != "off":
        log.info("request head not complete within %g s: 408, connection closed", seconds)


class BoundedConnection(asyncio.Protocol):
    """aiohttp's protocol object for one connection, with the header timeout."""

    def __init__(
        self, inner: RequestHandler, seconds: float, stats: HttpStats, access_log: str
    ) -> None:
        self._inner = inner
        self._seconds = seconds
        self._stats = stats
        self._access_log = access_log
        self._transport: asyncio.Transport | None = None
        self._clock = HeadClock(inner, seconds, self._expired)
        self._timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._clock.stop()
        self._transport = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timed_out:
            return  # the rest of a head that came too late
        self._clock.data()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def answered_by_aiohttp(self, keep_alive: bool) -> None:
        self._clock.answered()

    def _expired(self) -> None:
        self._timed_out = True
        expire_head(self._transport, self._seconds, self._stats, self._access_log)


def observing(access_log: type[AbstractAccessLogger]) -> type[AbstractAccessLogger]:
    """`access_log` that also tells the connection's wrapper that aiohttp has sent an
    answer (aiohttp calls the access logger after the answer's last byte)."""

    class Observing(access_log):  # type: ignore[valid-type,misc]
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            super().log(request, response, time)
            transport = request.transport
            conn = transport.get_protocol() if transport is not None else None
            told = getattr(conn, "answered_by_aiohttp", None)
            if told is not None:
                told(bool(response.keep_alive))

    return Observing


class WrappingServer:
    """aiohttp's low-level server (it tracks connections and shuts them down) whose
    protocol factory wraps each of its protocol objects with `wrap`."""

    def __init__(self, server: web.Server, wrap: Callable[[RequestHandler], asyncio.Protocol]):
        self._server = server
        self._wrap = wrap

    def __call__(self) -> asyncio.Protocol:
        return self._wrap(self._server())

    @property
    def connections(self) -> list[RequestHandler]:
        return self._server.connections

    @property
    def requests_count(self) -> int:
        return self._server.requests_count

    def pre_shutdown(self) -> None:
        self._server.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        await self._server.shutdown(timeout)


class BoundedRunner(web.AppRunner):
    """The plain AppRunner whose connections have the header timeout (the app's
    HEADER_TIMEOUT; a 408 is counted in its HTTP_STATS)."""

    def __init__(
        self,
        app: web.Application,
        *,
        access_log_class: type[AbstractAccessLogger],
        **kwargs: Any,
    ) -> None:
        super().__init__(app, access_log_class=observing(access_log_class), **kwargs)

    async def _make_server(self) -> web.Server:  # BaseRunner's hook for the server
        server = await super()._make_server()
        settings, stats = self.app[keys.SETTINGS], self.app[keys.HTTP_STATS]
        seconds, mode = settings.header_timeout, settings.access_log

        def wrap(inner: RequestHandler) -> asyncio.Protocol:
            return BoundedConnection(inner, seconds, stats, mode)

        return cast(web.Server, WrappingServer(server, wrap))
