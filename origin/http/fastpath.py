"""What the fast path reads and writes, without I/O: request heads read strictly with
llhttp (the parser aiohttp uses too), which of them the connection may answer itself
(`answerable`), and the bytes of an answer (`encode_answer`). The connection that uses
them is origin/http/connection.py; what it answers is handed to it by origin/server.py
(a `WarmAnswer`: origin/playback/warm.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

import httptools
from aiohttp.http import SERVER_SOFTWARE

# aiohttp's default limits: a head outside them is left to aiohttp (400/431 or not)
MAX_HEAD = 8190
MAX_FIELDS = 128

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

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}
_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n\r\n"


def encode_answer(answer: Answer, *, head_only: bool, date: str) -> bytes:
    """The bytes of an HTTP/1.1 response (RFC 9112 §4, §6): no body for HEAD and 304
    (§6.3 items 1-2); Content-Length for HEAD is that of the GET (RFC 9110 §8.6)."""
    status, fields, body = answer
    text = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n"]
    text += [f"{name}: {value}\r\n" for name, value in fields]
    if status != 304:
        text.append(f"Content-Length: {len(body)}\r\n")
    text.append(f"Date: {date}\r\n")
    text.append(_SERVER_LINE)
    raw = "".join(text).encode("latin-1")
    return raw if head_only or status == 304 else raw + body


class HttpDate:
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
