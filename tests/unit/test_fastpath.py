"""Request heads, answers and the guard's memory of verified tokens, without sockets
(origin/http/fastpath.py, origin/http/auth.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import signing
from origin.http.auth import SigningState, admit
from origin.http.fastpath import Head, answerable, could_become_head, encode_answer, parse_head


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_a_plain_get():
    got = parse_head(head("GET /v/scn_x/720p.m3u8?exp=1&kid=a HTTP/1.1", "Host: o", "Origin: x"))
    assert got == Head(
        "GET",
        "/v/scn_x/720p.m3u8?exp=1&kid=a",
        "HTTP/1.1",
        {"host": "o", "origin": "x"},
        False,
        0,
    )
    assert answerable(got)


def test_bodies_are_framed_by_content_length_or_marked_chunked():
    got = parse_head(head("POST /api HTTP/1.1", "Host: o", "Content-Length: 12"))
    assert got is not None and got.body_length == 12 and not answerable(got)
    got = parse_head(head("POST /api HTTP/1.1", "Host: o", "Transfer-Encoding: chunked"))
    assert got is not None and got.body_length is None
    got = parse_head(head("GET /x HTTP/1.1", "Host: o", "Content-Length: 0"))
    assert got is not None and got.body_length == 0 and answerable(got)


@pytest.mark.parametrize(
    "raw",
    [
        head("GET /x HTTP/1.1", "Host: o", "Content-Length: 1", "Content-Length: 2"),
        head("GET /x HTTP/1.1", "Host: o", "Content-Length: 1", "Transfer-Encoding: chunked"),
        head("GET /x HTTP/1.1", "Host: o", "Content-Length: +1"),
        head("GET /x HTTP/1.1", "Host : o"),  # whitespace before the colon (RFC 9112 §5.1)
        head("GET /x HTTP/1.1", "Host: o", " folded"),  # obs-fold (§5.2)
        head("GET /x HTTP/1.1", "Host: o", "X: caf\xe9"),  # obs-text
        head("GET /x HTTP/1.1", "Host: o", "X: a\x00b"),
        head("GET /x HTTP/2.0", "Host: o"),
        head("GET http://o/x HTTP/1.1", "Host: o"),  # absolute-form
        head("OPTIONS * HTTP/1.1", "Host: o"),
        head("GET /x HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade"),
        b"GET /x HTTP/1.1\nHost: o\n\nGET /y HTTP/1.1\r\n\r\n",  # two heads, bare LFs
        b"GET /x HTTP/1.1\r\nHost: o\rX: y\r\n\r\n",  # bare CR
        b"GET /x\r\n\r\n",
        head("G\u00e9T /x HTTP/1.1"),
    ],
)
def test_heads_left_to_aiohttp(raw):
    assert parse_head(raw) is None


@pytest.mark.parametrize(
    "lines",
    [
        ("HEAD /x HTTP/1.1", "Host: o"),
        ("GET /x HTTP/1.1", "Host: o", "Connection: keep-alive"),
        ("GET /x HTTP/1.1", "Host: o", "connection: Keep-Alive"),
    ],
)
def test_answerable(lines):
    got = parse_head(head(*lines))
    assert got is not None and answerable(got)


@pytest.mark.parametrize(
    "lines",
    [
        ("GET /x HTTP/1.1",),  # no Host (RFC 9112 §3.2: 400 is aiohttp's to give)
        ("GET /x HTTP/1.1", "Host: o", "Host: p"),
        ("GET /x HTTP/1.1", "Host: o", "X: 1", "X: 2"),
        ("GET /x HTTP/1.0", "Host: o"),
        ("GET /x HTTP/1.1", "Host: o", "Connection: close"),
        ("GET /x HTTP/1.1", "Host: o", "Expect: 100-continue"),
        ("POST /x HTTP/1.1", "Host: o", "Content-Length: 0"),
        ("DELETE /x HTTP/1.1", "Host: o"),
    ],
)
def test_not_answerable(lines):
    got = parse_head(head(*lines))
    assert got is not None and not answerable(got)


def test_the_reader_reads_heads_one_after_another():
    from origin.http.fastpath import HeadReader

    reader = HeadReader()
    for i in range(3):
        got = reader.read(head(f"GET /{i} HTTP/1.1", "Host: o"))
        assert got is not None and got.target == f"/{i}"
    assert reader.read(head("POST /p HTTP/1.1", "Host: o", "Content-Length: 3")) is not None
    # it waited for a body: the next head gets a fresh parser
    got = reader.read(head("GET /after HTTP/1.1", "Host: o"))
    assert got is not None and got.target == "/after"


@pytest.mark.parametrize(
    ("partial", "could"),
    [
        (b"GET /x HTTP/1.1\r\nHo", True),
        (b"GET /x HTTP/1.1\r", True),  # the LF may follow
        (b"GET /x HTTP/1.1\nHost: o\n", False),  # bare LF: aiohttp says 400 at once
        (b"GET /x HTTP/1.1\rHost", False),
        (b"\x16\x03\x01\x02\x00\x01\x00", False),  # a TLS ClientHello
        (b"GET /caf\xc3\xa9", False),
    ],
)
def test_partial_heads(partial, could):
    assert could_become_head(partial) is could


@given(st.binary(max_size=300))
def test_any_bytes_give_a_head_or_none(data):
    got = parse_head(data + b"\r\n\r\n")
    if got is not None:
        assert got.target.startswith("/")
        assert got.version in ("HTTP/1.1", "HTTP/1.0")
        assert got.body_length is None or got.body_length >= 0


def test_encode_answer():
    fields = [("Content-Type", "text/vtt"), ("ETag", '"e"'), ("X-Request-Id", "r")]
    got = encode_answer((200, fields, b"WEBVTT\n"), head_only=False, date="D")
    assert got == (
        b'HTTP/1.1 200 OK\r\nContent-Type: text/vtt\r\nETag: "e"\r\nX-Request-Id: r\r\n'
        b"Content-Length: 7\r\nDate: D\r\nServer: " + _server() + b"\r\n\r\nWEBVTT\n"
    )
    head_only = encode_answer((200, fields, b"WEBVTT\n"), head_only=True, date="D")
    assert head_only == got[: -len(b"WEBVTT\n")]
    not_modified = encode_answer((304, fields, b""), head_only=False, date="D")
    assert not_modified.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert b"Content-Length" not in not_modified and not_modified.endswith(b"\r\n\r\n")


def _server() -> bytes:
    from aiohttp.http import SERVER_SOFTWARE

    return SERVER_SOFTWARE.encode()


# --- the guard remembers verified tokens, and still checks each request -------------

KEY = signing.HmacKey("k1", b"unit-secret-0123456789")
SCENE = "scn_0123456789abcdef"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def state(clock: Clock, bind_ip: bool = False) -> SigningState:
    cfg = signing.SigningConfig(mode="hmac", hmac_keys=(KEY,), hmac_bind_ip=bind_ip)
    return SigningState(config=cfg, clock=clock)


def test_a_remembered_token_is_still_checked():
    clock = Clock(1_000)
    s = state(clock)
    token = signing.mint_token(f"/v/{SCENE}/", 1_060, KEY)
    path = f"/v/{SCENE}/720p.m3u8"
    assert admit(s, path, token.query, "10.0.0.1", None, SCENE) == token.query
    assert len(s.verified) == 1
    # the same token again: remembered, still for this scene and this client only
    assert admit(s, f"/v/{SCENE}/master.m3u8", token.query, "10.0.0.1", None, SCENE) == (
        token.query
    )
    other = "scn_fedcba9876543210"
    assert isinstance(
        admit(s, f"/v/{other}/720p.m3u8", token.query, "10.0.0.1", None, other), signing.Denied
    )
    # altered by one character: never matches what was remembered
    forged = token.query[:-1] + ("A" if token.query[-1] != "A" else "B")
    assert isinstance(admit(s, path, forged, "10.0.0.1", None, SCENE), signing.Denied)
    # expiry is checked on every request
    clock.now = 1_060
    assert admit(s, path, token.query, "10.0.0.1", None, SCENE) == signing.Denied("token expired")


def test_a_remembered_bound_token_is_not_valid_from_another_address():
    clock = Clock(1_000)
    s = state(clock, bind_ip=True)
    token = signing.mint_token(f"/v/{SCENE}/", 1_060, KEY, ip="10.0.0.1")
    path = f"/v/{SCENE}/720p.m3u8"
    assert admit(s, path, token.query, "10.0.0.1", None, SCENE) == token.query
    denied = admit(s, path, token.query, "10.0.0.2", None, SCENE)
    assert denied == signing.Denied("token is bound to another client address")


def test_failures_are_not_remembered():
    s = state(Clock(1_000))
    token = signing.mint_token(f"/v/{SCENE}/", 900, KEY)  # already expired
    path = f"/v/{SCENE}/720p.m3u8"
    assert admit(s, path, token.query, None, None, SCENE) == signing.Denied("token expired")
    assert len(s.verified) == 0
