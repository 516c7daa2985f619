"""The origin's client connections, however the app is run (origin/server.py): one
connection wrapper around aiohttp's protocol object, one hook through which it learns
that aiohttp has answered, one runner.

Every `Connection` keeps the connection's two clocks itself, on one timer:
- the header timeout: a request head must arrive whole within `HEADER_TIMEOUT` seconds
  of its first byte. A client that sends it slower (slowloris) gets 408 Request
  Timeout (RFC 9110 §15.5.9) and the connection is closed (RFC 9112 §9.6). Bodies have
  their own idle timeout where handlers read them (body.py);
- the keep-alive timeout: a connection on which nothing arrived or was answered for
  `keepalive_timeout` seconds while no request is being handled is closed (RFC 9112
  §9.8). aiohttp's own idle timer is never due (`NEVER`): it cannot see the requests
  the fast path answers.

With the fast path (`FAST_PATH=on`), a connection also reads each request head itself
(origin/http/fastpath.py) and asks a `WarmAnswer` for an answer from memory. A plain
GET/HEAD that gets one is answered at once. Anything else is passed to aiohttp byte
for byte, and so is every request pipelined behind it until aiohttp has written its
answer, so answers leave in request order (RFC 9112 §9.3.2). Bytes it cannot frame
for certain hand the connection to aiohttp for good; without the fast path a
connection is aiohttp's from the start. The fast path observes the app, never the
reverse: the app knows nothing of it, and this layer imports nothing of playback (the
answer function is handed to the runner).

aiohttp's internals used here are checked by tests/unit/test_fastpath_hooks.py against
the aiohttp version pyproject pins: `AppRunner._make_server` (the runner's hook for its
server), `RequestHandler._waiter` (pending: aiohttp waits for a request head) and the
access logger being called after an answer's last byte (`observing`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler

from core.logs import log_request, new_request_id
from origin import keys
from origin.http.fastpath import (
    MAX_HEAD,
    CommonFields,
    Head,
    HeadReader,
    HttpDate,
    WarmAnswer,
    answerable,
    could_become_head,
    encode_answer,
)
from origin.http.fields import answer_fields
from origin.http.stats import FastPathAnswers, HttpStats

log = logging.getLogger("storyforge.origin")
KEEPALIVE_SECONDS = 75.0  # aiohttp's default keep-alive timeout
# a late head's 408 half-closes the connection, which is closed this much later
LATE_HEAD_LINGER_SECONDS = 1.0
NEVER = 10.0**9  # the keep-alive timeout given to aiohttp: the connection keeps time


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


@dataclass(frozen=True, slots=True)
class FastPath:
    """What the fast path of one runner's connections shares."""

    answer: WarmAnswer
    fields: CommonFields
    counts: FastPathAnswers
    log_all: bool  # ACCESS_LOG=all: each answer is logged
    date: HttpDate


@dataclass(frozen=True, slots=True)
class Options:
    """What every connection of one runner shares."""

    header_timeout: float
    keepalive: float
    stats: HttpStats  # the app's: a 408 for a late head is counted there
    access_log: str  # ACCESS_LOG mode
    fast: FastPath | None  # None: aiohttp answers everything


class Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol object for it (`inner`) with the
    header and keep-alive timeouts, and with `options.fast`, the fast path."""

    __slots__ = (
        "_inner",
        "_options",
        "_fast",
        "_loop",
        "_transport",
        "_peer",
        "_heads",
        "_buf",
        "_body_left",
        "_owed",
        "_handed_over",
        "_write_paused",
        "_read_paused",
        "_timed_out",
        "_active",
        "_head_since",
        "_timer",
    )

    def __init__(self, inner: RequestHandler, options: Options) -> None:
        self._inner = inner
        self._options = options
        self._fast = options.fast
        self._loop = asyncio.get_event_loop()
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._heads = HeadReader()
        self._buf = b""
        self._body_left = 0  # bytes of a passed-on request body still to pass on
        self._owed = 0  # passed-on requests aiohttp has not finished answering
        self._handed_over = options.fast is None  # the connection is aiohttp's for good
        self._write_paused = False
        self._read_paused = False
        self._timed_out = False  # a late head was answered 408: drop what arrives
        self._active = 0.0  # when a byte last arrived or an answer was last sent
        self._head_since: float | None = None  # first byte of the head awaited
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        # what aiohttp's request.remote gives for a TCP peer
        self._peer = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
        self._inner.connection_made(transport)
        self._active = now = self._loop.time()
        self._timer = self._loop.call_at(now + self._period(), self._check)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._buf = b""
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        self._inner.eof_received()
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self._write_paused = True
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._inner.resume_writing()
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
            self._process()

    def data_received(self, data: bytes) -> None:
        if self._timed_out:
            return  # the rest of a head that came too late
        self._active = now = self._loop.time()
        if self._head_since is None:
            self._head_since = now
        if self._handed_over:
            self._inner.data_received(data)
            return
        self._buf = self._buf + data if self._buf else data
        self._process()

    # told by the runner's access-log hook (`observing`)

    def answered_by_aiohttp(self, keep_alive: bool) -> None:
        """aiohttp has written the whole answer to one request passed to it. After
        an answer that ends the connection (an error, `Connection: close`), aiohttp
        closes it soon: nothing more may be answered here before that."""
        self._head_since = None
        self._active = self._loop.time()
        if self._owed:
            self._owed -= 1
        if not keep_alive:
            self._handed_over = True

    # the fast path

    def _process(self) -> None:
        buf = self._buf
        inner = self._inner
        while buf:
            if self._body_left:
                chunk = buf[: self._body_left]
                buf = buf[len(chunk) :]
                self._body_left -= len(chunk)
                inner.data_received(chunk)
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD or not could_become_head(buf):
                    self._hand_over(buf)  # aiohttp answers 400 now, not at the timeout
                    return
                break
            size = end + 4
            head = self._heads.read(buf[:size]) if size <= MAX_HEAD else None
            if head is None or head.body_length is None:
                self._hand_over(buf)
                return
            if self._owed == 0 and answerable(head):
                if self._write_paused:  # the client is not reading: wait for it
                    if not self._read_paused and self._transport is not None:
                        self._read_paused = True
                        self._transport.pause_reading()
                    break
                if self._answer_here(head):
                    buf = buf[size:]
                    continue
            self._owed += 1
            self._body_left = head.body_length
            inner.data_received(buf[:size])
            buf = buf[size:]
        self._buf = buf

    def _answer_here(self, head: Head) -> bool:
        fast = cast(FastPath, self._fast)
        transport = self._transport
        started = time.perf_counter()
        path, _, query = head.target.partition("?")
        headers = head.headers
        method = head.method
        try:
            answer = fast.answer(method, path, query, headers, self._peer)
        except Exception:  # a bug must not cost the connection: aiohttp answers instead
            log.exception("warm answer failed for %s %s", method, path)
            return False
        if answer is None or transport is None:
            return False
        status, fields, body = answer
        rid = new_request_id(headers.get("x-request-id"))
        fields = fields + fast.fields(rid, path, headers.get("origin"))
        head_only = method == "HEAD"
        transport.write(
            encode_answer((status, fields, body), head_only=head_only, date=fast.date.now())
        )
        seconds = time.perf_counter() - started
        fast.counts.count(status, seconds, 0 if head_only else len(body))
        self._head_since = None
        if fast.log_all:
            log_request(log, rid, method, path, status, seconds)
        return True

    def _hand_over(self, buf: bytes) -> None:
        self._handed_over = True
        self._buf = b""
        self._inner.data_received(buf)

    # the clocks

    def _period(self) -> float:
        """The longest the timer may wait: a head that starts from now on is due no
        earlier than `header_timeout` from now, an idle connection no earlier than
        `keepalive`."""
        options = self._options
        return min(options.header_timeout, options.keepalive)

    def _check(self) -> None:
        """The connection's one timer. A head awaited for `header_timeout` seconds
        while aiohttp still waits for one (the bytes so far are not one) gets 408; one
        awaited while a request is being handled is not timed (its body has its own
        timeout). A connection on which nothing arrived or was answered for
        `keepalive` seconds is closed if no request is being handled. Bytes and
        answers move neither deadline's timer: it is moved only when it fires, so a
        busy keep-alive connection schedules nothing."""
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        options = self._options
        now = self._loop.time()
        idle = waiting_for_head(self._inner)
        since = self._head_since
        if since is not None and now >= since + options.header_timeout:
            self._head_since = since = None
            if idle:
                self._expire_head()
                return
        idle_due = self._active + options.keepalive
        if now >= idle_due and idle and self._owed == 0:
            transport.close()
            return
        due = now + self._period()
        if since is not None:
            due = min(due, since + options.header_timeout)
        if idle_due > now:
            due = min(due, idle_due)
        self._timer = self._loop.call_at(due, self._check)

    def _expire_head(self) -> None:
        """Answer 408 to a head that took too long and close the connection; counted
        as a 408 of no route, logged unless ACCESS_LOG=off. The connection is
        half-closed first and closed LATE_HEAD_LINGER_SECONDS later (RFC 9112 §9.6):
        a client still sending would otherwise get a reset that can destroy the 408
        before it is read. What arrives meanwhile is dropped."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        options = self._options
        seconds = options.header_timeout
        self._timed_out = True
        answer = timeout_answer(seconds)
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
            self._loop.call_later(LATE_HEAD_LINGER_SECONDS, transport.close)
        else:
            transport.close()
        options.stats.answered("unmatched", 408, seconds, len(answer))
        if options.access_log != "off":
            log.info("request head not complete within %g s: 408, connection closed", seconds)


def observing(access_log: type[AbstractAccessLogger]) -> type[AbstractAccessLogger]:
    """`access_log` that also tells the request's `Connection` that aiohttp has sent an
    answer (aiohttp calls the access logger after the answer's last byte)."""

    class Observing(access_log):  # type: ignore[valid-type,misc]
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            super().log(request, response, time)
            transport = request.transport
            conn = transport.get_protocol() if transport is not None else None
            if isinstance(conn, Connection):
                conn.answered_by_aiohttp(bool(response.keep_alive))

    return Observing


class ConnectionServer:
    """aiohttp's low-level server (it tracks connections and shuts them down) whose
    protocol objects are each wrapped in a `Connection`."""

    def __init__(self, server: web.Server, options: Options) -> None:
        self._server = server
        self._options = options

    def __call__(self) -> Connection:
        return Connection(self._server(), self._options)

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


class Runner(web.AppRunner):
    """The AppRunner whose sites accept `Connection`s. `warm_answer(app)`, called once
    the app has started (its caches and settings exist), gives the fast path's
    answers; None: no fast path. The header timeout is the app's HEADER_TIMEOUT (a 408
    is counted in its HTTP_STATS), the keep-alive timeout `keepalive_timeout`."""

    def __init__(
        self,
        app: web.Application,
        *,
        warm_answer: Callable[[web.Application], WarmAnswer] | None = None,
        access_log_class: type[AbstractAccessLogger],
        access_log: logging.Logger | None = None,
        keepalive_timeout: float = KEEPALIVE_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            access_log_class=observing(access_log_class),
            access_log=access_log or log,  # without one, aiohttp calls no access logger
            keepalive_timeout=NEVER,
            **kwargs,
        )
        self._warm_answer = warm_answer
        self._keepalive = keepalive_timeout

    async def _make_server(self) -> web.Server:  # BaseRunner's hook for the server
        server = await super()._make_server()
        app = self.app
        settings = app[keys.SETTINGS]
        fast = None
        if self._warm_answer is not None:
            allowed = settings.cors_origins
            tag_header, tag_separator = settings.cache_tag_header, settings.cache_tag_separator

            def fields(rid: str, path: str, origin: str | None) -> list[tuple[str, str]]:
                return answer_fields(rid, path, origin, allowed, tag_header, tag_separator)

            fast = FastPath(
                answer=self._warm_answer(app),
                fields=fields,
                counts=app[keys.FAST_PATH_ANSWERS],
                log_all=settings.access_log == "all",
                date=HttpDate(),
            )
        options = Options(
            header_timeout=settings.header_timeout,
            keepalive=self._keepalive,
            stats=app[keys.HTTP_STATS],
            access_log=settings.access_log,
            fast=fast,
        )
        return cast(web.Server, ConnectionServer(server, options))
