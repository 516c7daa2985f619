"""The fast path's connections: a warm scene document is answered on the connection
itself; every other request goes to the aiohttp app on the same connection, in order.

aiohttp's per-request machinery (request and response objects, a task per request,
routing, middlewares) costs several times what answering a warm playlist costs. So
each connection is a `FastPathConnection` around aiohttp's own protocol object. It
reads each request head (llhttp, as aiohttp does, but stricter) and asks a
`WarmAnswer` for an answer from the in-process caches. A plain GET/HEAD that gets one
is answered at once. Anything else is passed to aiohttp byte for byte, and so is every
request pipelined behind it until aiohttp has written its answer, so answers leave in
request order (RFC 9112 §9.3.2). Bytes it cannot frame for certain hand the
connection to aiohttp for good.

The app knows nothing of this. The connection learns that aiohttp has sent an answer
through aiohttp's documented access-logger hook (`FastPathRunner` wraps the app's
access-log class); it keeps aiohttp's idle timer from closing a connection that only
the fast path has been answering (`RequestHandler.keep_alive`) and keeps its own idle
timer for that case. A head that does not arrive whole within `HEADER_TIMEOUT` gets
408, as on the plain path (origin/http/connection.py's `HeadClock`). Both hooks into
aiohttp are checked by
tests/unit/test_fastpath_hooks.py against the aiohttp version pyproject pins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple, cast

import httptools
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler

from core.logs import log_request, new_request_id
from origin import keys
from origin.http.connection import HeadClock, WrappingServer, expire_head
from origin.http.fields import answer_fields
from origin.http.stats import FastPathAnswers, HttpStats

log = logging.getLogger("storyforge.origin")

# aiohttp's default limits: a head outside them is left to aiohttp (400/431 or not)
MAX_HEAD = 8190
MAX_FIELDS = 128
KEEPALIVE_SECONDS = 75.0  # aiohttp's default keep-alive timeout

# --- request heads -----------------------------------------------------------------

# HTAB, CR, LF and SP..~: a head with any other byte (control bytes, obs-text) is
# left to aiohttp
_HEAD_BYTES = bytes([9, 10, 13, *range(0x20, 0x7F)])


class Head(NamedTuple):
    """A request head read strictly (RFC 9112 §2.2, §3, §5, §6.3)."""

    method: str
    target: str  # origin-form: path and query as sent
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: Mapping[str, str]  # lower-case names
    repeated: bool  # some field name appears more than once
    body_length: int | None  # Content-Length (0 when absent); None: chunked


class HeadReader:
    """Reads one request head at a time with llhttp (httptools), the parser aiohttp
    uses too, so both see the same messages. `read` takes exactly the bytes up to and
    including the first CRLF CRLF and gives None when they are not one complete,
    well-formed head of an origin-form request that can be framed: then aiohttp gets
    the connection and applies its own rules (400, 431, ...)."""

    __slots__ = ("_parser", "_url", "_headers", "_repeated", "_begun", "_complete")

    def __init__(self) -> None:
        self._parser: httptools.HttpRequestParser | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._repeated = False
        self._begun = 0
        self._complete = False

    def read(self, head: bytes) -> Head | None:
        if head.translate(None, _HEAD_BYTES):
            return None
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        headers: dict[str, str] = {}
        self._headers = headers
        self._repeated = False
        self._begun = 0
        self._complete = False
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._parser = None
            return None
        if self._begun != 1 or not self._url.startswith(b"/") or len(headers) > MAX_FIELDS:
            self._parser = None  # two messages in one head (bare LFs), or not origin-form
            return None
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._parser = None
            return None
        body_length: int | None = 0
        if self._complete:
            if not parser.should_keep_alive():
                self._parser = None  # llhttp refuses more data after a last message
        else:
            self._parser = None  # it waits for a body now: the next head gets a new one
            if "transfer-encoding" in headers:
                body_length = None
            else:
                length = headers.get("content-length", "")
                if not (length.isdigit() and length.isascii()):
                    return None
                body_length = int(length)
        return Head(
            parser.get_method().decode("ascii"),
            self._url.decode("ascii"),
            "HTTP/" + version,
            headers,
            self._repeated,
            body_length,
        )

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._begun += 1

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("ascii").lower()
        text = value.decode("ascii")
        if key in self._headers:
            self._repeated = True
            text = self._headers[key] + ", " + text
        self._headers[key] = text

    def on_message_complete(self) -> None:
        self._complete = True


def could_become_head(partial: bytes) -> bool:
    """Whether the start of a head may still become one this reader accepts: no byte
    outside its set, no bare LF, no CR that is not followed by LF (or last)."""
    crlf = partial.count(b"\r\n")
    return (
        not partial.translate(None, _HEAD_BYTES)
        and partial.count(b"\n") == crlf
        and partial.count(b"\r") - partial.endswith(b"\r") == crlf
    )


def parse_head(head: bytes) -> Head | None:
    """`HeadReader.read` with a reader of its own."""
    return HeadReader().read(head)


def answerable(head: Head) -> bool:
    """Whether the connection may answer this request itself: a plain HTTP/1.1 GET or
    HEAD without a body, a single Host (§3.2) and nothing that changes how the
    connection continues (Expect, Upgrade, Connection other than keep-alive)."""
    h = head.headers
    return (
        head.method in ("GET", "HEAD")
        and head.version == "HTTP/1.1"
        and head.body_length == 0
        and not head.repeated
        and "host" in h
        and "transfer-encoding" not in h
        and "expect" not in h
        and "upgrade" not in h
        and h.get("connection", "keep-alive").lower() == "keep-alive"
        and "#" not in head.target
    )


# --- answers (pure) -----------------------------------------------------------------

# status, fields, body; Content-Length, Date and Server are added by encode_answer
Answer = tuple[int, list[tuple[str, str]], bytes]
# (method, path, raw query, lower-case headers, client address) -> an answer from
# memory (its own fields: type, caching, validators), or None: aiohttp answers it
WarmAnswer = Callable[[str, str, str, Mapping[str, str], "str | None"], "Answer | None"]
# (request id, path, Origin) -> the fields every answer carries (origin.http.fields)
CommonFields = Callable[[str, str, "str | None"], list[tuple[str, str]]]

_REASONS = {s.value: s.phrase for s in HTTPStatus}


def encode_answer(answer: Answer, *, head_only: bool, date: str) -> bytes:
    """The bytes of an HTTP/1.1 response (RFC 9112 §4, §6): no body for HEAD and 304
    (§6.3 items 1-2); Content-Length for HEAD is that of the GET (RFC 9110 §8.6)."""
    status, fields, body = answer
    out = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
    out.extend(f"{name}: {value}" for name, value in fields)
    if status != 304:
        out.append(f"Content-Length: {len(body)}")
    out.append(f"Date: {date}")
    out.append(f"Server: {SERVER_SOFTWARE}")
    raw = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return raw if head_only or status == 304 else raw + body


class _HttpDate:
    """The Date field (RFC 9110 §6.6.1), formatted once per second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = formatdate(second, usegmt=True)
        return self._text


@dataclass(frozen=True, slots=True)
class Options:
    """What every connection of one runner shares."""

    answer: WarmAnswer
    fields: CommonFields
    counts: FastPathAnswers
    access_log: str  # ACCESS_LOG mode
    keepalive: float
    date: _HttpDate
    header_timeout: float
    stats: HttpStats  # the app's: a 408 for a late head is counted there


# --- the connection -----------------------------------------------------------------


class FastPathConnection(asyncio.Protocol):
    """One client connection: answers what `options.answer` can from memory, passes
    the rest to `inner` (aiohttp's protocol object for this connection)."""

    def __init__(self, inner: RequestHandler, options: Options) -> None:
        self._inner = inner
        self._options = options
        self._answer = options.answer
        self._log_all = options.access_log == "all"
        self._loop = asyncio.get_event_loop()
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._heads = HeadReader()
        self._buf = b""
        self._body_left = 0  # bytes of a passed-on request body still to pass on
        self._owed = 0  # passed-on requests aiohttp has not finished answering
        self._handed_over = False  # the connection is aiohttp's for good
        self._write_paused = False
        self._read_paused = False
        self._last_data = 0.0
        self._idle_handle: asyncio.TimerHandle | None = None
        self._clock = HeadClock(inner, options.header_timeout, self._head_expired)
        self._timed_out = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        # what aiohttp's request.remote gives for a TCP peer
        self._peer = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
        self._inner.connection_made(transport)  # aiohttp's idle timer starts here
        self._last_data = self._loop.time()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_idle_timer()
        self._clock.stop()
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
        self._last_data = self._loop.time()
        self._clock.data()
        if self._handed_over:
            self._inner.data_received(data)
            return
        self._buf = self._buf + data if self._buf else data
        self._process()

    # told through the runner's access-log hook

    def answered_by_aiohttp(self, keep_alive: bool) -> None:
        """aiohttp has written the whole answer to one request passed to it. After
        an answer that ends the connection (an error, `Connection: close`), aiohttp
        closes it soon: nothing more may be answered here before that."""
        self._clock.answered()
        if self._owed:
            self._owed -= 1
        if not keep_alive:
            self._handed_over = True

    # internals

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
        started = time.perf_counter()
        path, _, query = head.target.partition("?")
        try:
            answer = self._answer(head.method, path, query, head.headers, self._peer)
        except Exception:  # a bug must not cost the connection: aiohttp answers instead
            log.exception("warm answer failed for %s %s", head.method, path)
            return False
        if answer is None or self._transport is None:
            return False
        options = self._options
        status, fields, body = answer
        rid = new_request_id(head.headers.get("x-request-id"))
        fields = fields + options.fields(rid, path, head.headers.get("origin"))
        self._transport.write(
            encode_answer(
                (status, fields, body), head_only=head.method == "HEAD", date=options.date.now()
            )
        )
        seconds = time.perf_counter() - started
        options.counts.count(status, seconds, 0 if head.method == "HEAD" else len(body))
        # aiohttp saw no request: its idle timer must not close the connection now
        self._inner.keep_alive(True)
        self._clock.answered()
        self._arm_idle_timer()
        if self._log_all:
            log_request(log, rid, head.method, path, status, seconds)
        return True

    def _head_expired(self) -> None:
        self._timed_out = True
        options = self._options
        expire_head(self._transport, options.header_timeout, options.stats, options.access_log)

    def _hand_over(self, buf: bytes) -> None:
        self._handed_over = True
        self._cancel_idle_timer()  # aiohttp's own idle timer takes over
        self._buf = b""
        self._inner.data_received(buf)

    def _arm_idle_timer(self) -> None:
        if self._idle_handle is None:
            self._idle_handle = self._loop.call_at(
                self._last_data + self._options.keepalive, self._close_if_idle
            )

    def _cancel_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _close_if_idle(self) -> None:
        """Close a connection that sent nothing for the keep-alive time after the
        fast path answered it (RFC 9112 §9.8: a server may close idle connections).
        While aiohttp owes an answer, aiohttp's own idle timer is in charge: it
        restarts once that answer is sent."""
        self._idle_handle = None
        if self._transport is None or self._owed > 0 or self._handed_over:
            return
        deadline = self._last_data + self._options.keepalive
        if self._loop.time() < deadline:
            self._idle_handle = self._loop.call_at(deadline, self._close_if_idle)
            return
        self._transport.close()


# --- wiring into aiohttp's runner ---------------------------------------------------


class _FastPathServer(WrappingServer):
    """aiohttp's low-level server whose protocol objects are wrapped in
    FastPathConnections."""

    def __init__(self, server: web.Server, options: Options) -> None:
        super().__init__(server, lambda inner: FastPathConnection(inner, options))


def _observing(access_log: type[AbstractAccessLogger]) -> type[AbstractAccessLogger]:
    """`access_log` that also tells the fast path connection that aiohttp has sent
    an answer (aiohttp calls the access logger after the answer's last byte)."""

    class Observing(access_log):  # type: ignore[valid-type,misc]
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            super().log(request, response, time)
            transport = request.transport
            conn = transport.get_protocol() if transport is not None else None
            if isinstance(conn, FastPathConnection):
                conn.answered_by_aiohttp(bool(response.keep_alive))

    return Observing


class FastPathRunner(web.AppRunner):
    """An AppRunner whose sites accept FastPathConnections. `warm_answer(app)` is
    called once the app has started (its caches and settings exist)."""

    def __init__(
        self,
        app: web.Application,
        warm_answer: Callable[[web.Application], WarmAnswer],
        *,
        access_log_class: type[AbstractAccessLogger],
        keepalive_timeout: float = KEEPALIVE_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            access_log_class=_observing(access_log_class),
            keepalive_timeout=keepalive_timeout,
            **kwargs,
        )
        self._warm_answer = warm_answer
        self._keepalive = keepalive_timeout

    async def _make_server(self) -> web.Server:  # BaseRunner's hook for the server
        server = await super()._make_server()
        app = self.app
        allowed = app[keys.SETTINGS].cors_origins

        def fields(rid: str, path: str, origin: str | None) -> list[tuple[str, str]]:
            return answer_fields(rid, path, origin, allowed)

        options = Options(
            answer=self._warm_answer(app),
            fields=fields,
            counts=app[keys.FAST_PATH_ANSWERS],
            access_log=app[keys.SETTINGS].access_log,
            keepalive=self._keepalive,
            date=_HttpDate(),
            header_timeout=app[keys.SETTINGS].header_timeout,
            stats=app[keys.HTTP_STATS],
        )
        return cast(web.Server, _FastPathServer(server, options))
