"""The fast path against plain aiohttp, on the same app and data: random
pipelined streams of good and odd requests, ending in one that is malformed, chunked
or closes the connection, get the same answers in the same order from both (only
Date and generated request ids differ). The fast path gets each stream cut at random
places; plain aiohttp gets it one request per write (aiohttp answers 400 to a whole
read that holds a malformed request, valid requests before it included, so it is the
reference only when reads follow requests). A connection that framed a request
differently from aiohttp (request smuggling) or answered out of turn would show up
here as a different answer stream."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re

import pytest
from aiohttp.test_utils import TestClient

from origin.app import create_app
from tests.helpers.scenes import published_scene
from tests.helpers.servers import OriginTestServer

STREAMS = 40


def pieces(scene: str, seg: str) -> dict[str, tuple[bytes, bool]]:
    """Request kinds: the bytes, and whether the answer has no body (HEAD)."""
    pl = f"/v/{scene}/720p.m3u8".encode()
    ts = f"/v/{scene}/{seg}/720p_0001.ts".encode()
    smuggled = b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\n\r\n"

    def post(body: bytes) -> bytes:
        return b"POST /healthz HTTP/1.1\r\nHost: o\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    return {
        "warm": (b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\n\r\n", False),
        "warm-cors": (
            b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nOrigin: https://a.example\r\n\r\n",
            False,
        ),
        "warm-etag": (
            b"GET " + pl + b' HTTP/1.1\r\nHost: o\r\nIf-None-Match: "x", *\r\n\r\n',
            False,
        ),
        "warm-rid": (b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nX-Request-Id: abc-1\r\n\r\n", False),
        "head": (b"HEAD " + pl + b" HTTP/1.1\r\nHost: o\r\n\r\n", True),
        "master": (
            b"GET /v/" + scene.encode() + b"/master.m3u8 HTTP/1.1\r\nHost: o\r\n\r\n",
            False,
        ),
        "query": (b"GET " + pl + b"?a=1&b=%20 HTTP/1.1\r\nHost: o\r\n\r\n", False),
        "ts-range": (b"GET " + ts + b" HTTP/1.1\r\nHost: o\r\nRange: bytes=10-99\r\n\r\n", False),
        "health": (b"GET /healthz HTTP/1.1\r\nHost: o\r\n\r\n", False),
        "missing": (b"GET /v/scn_0000000000000000/720p.m3u8 HTTP/1.1\r\nHost: o\r\n\r\n", False),
        "post-smuggled": (post(smuggled), False),
        "post-empty": (post(b""), False),
        "get-with-body": (
            b"GET "
            + pl
            + b" HTTP/1.1\r\nHost: o\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
            + smuggled,
            False,
        ),
        "chunked": (
            b"POST /healthz HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n",
            False,
        ),
        "dup-header": (b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nX: 1\r\nX: 2\r\n\r\n", False),
        "no-host": (b"GET " + pl + b" HTTP/1.1\r\n\r\n", False),
        "keep-alive": (
            b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nConnection: keep-alive\r\n\r\n",
            False,
        ),
        "encoded": (
            b"GET /v/" + scene.encode() + b"/720p%2Em3u8 HTTP/1.1\r\nHost: o\r\n\r\n",
            False,
        ),
        "dot-segment": (
            b"GET /v/" + scene.encode() + b"/./720p.m3u8 HTTP/1.1\r\nHost: o\r\n\r\n",
            False,
        ),
        "options": (
            b"OPTIONS " + pl + b" HTTP/1.1\r\nHost: o\r\nOrigin: https://a.example\r\n"
            b"Access-Control-Request-Method: GET\r\n\r\n",
            False,
        ),
        # these end the connection one way or another
        "close": (b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n", False),
        "http10": (b"GET " + pl + b" HTTP/1.0\r\n\r\n", False),
        "bare-lf": (b"GET " + pl + b" HTTP/1.1\nHost: o\n\n", False),
        "no-colon": (b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nBroken\r\n\r\n", False),
        "ctl": (b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nX: a\x7fb\r\n\r\n", False),
        "cl-te": (
            b"POST /healthz HTTP/1.1\r\nHost: o\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            False,
        ),
        "bad-cl": (b"POST /healthz HTTP/1.1\r\nHost: o\r\nContent-Length: 1x\r\n\r\n", False),
        "fold": (b"GET " + pl + b" HTTP/1.1\r\nHost: o\r\nX: a\r\n b\r\n\r\n", False),
        "absolute": (
            b"GET http://o" + pl + b" HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
            False,
        ),
        "http2": (b"GET " + pl + b" HTTP/2.0\r\nHost: o\r\n\r\n", False),
    }


FINAL = b"GET /healthz HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n"
# requests after which the connection ends (malformed, or asking to close): the last
# of a stream. What aiohttp answers to bytes read together with a malformed request
# depends on how they arrived, with or without the fast path.
ENDERS = {
    "close",
    "http10",
    "bare-lf",
    "no-colon",
    "ctl",
    "cl-te",
    "bad-cl",
    "fold",
    "absolute",
    "http2",
    "chunked",
}


async def exchange(client, chunks: list[bytes], pause: float = 0.0) -> bytes:
    """Send `chunks` and collect everything the server says until it closes or is
    quiet for 2 s. Reading runs all along: a server that answers 400 and closes while
    the rest is still being sent resets the connection, and unread answers are lost."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    received: list[bytes] = []

    async def read_all() -> None:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), 2.0)
            except (TimeoutError, ConnectionError):
                return
            if not data:
                return
            received.append(data)

    reading = asyncio.create_task(read_all())
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:
        pass  # the server closed (a 400): what it said is being read
    await reading
    writer.close()
    return b"".join(received)


_VARYING = re.compile(rb"^(Date|X-Request-Id): .*$", re.IGNORECASE | re.MULTILINE)


def answers(raw: bytes, head_only: list[bool]) -> list[tuple[bytes, list[bytes], bytes]]:
    """The answers in a response stream: status line, sorted fields (Date and request
    ids blanked: they differ between any two answers), body."""
    out = []
    i = 0
    while raw:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            out.append((b"<partial>", [], raw))
            break
        lines = _VARYING.sub(rb"\1: *", raw[:end].replace(b"\r\n", b"\n")).split(b"\n")
        raw = raw[end + 4 :]
        fields = {line.split(b":", 1)[0].lower(): line for line in lines[1:]}
        status = lines[0]
        length = 0
        no_body = (i < len(head_only) and head_only[i]) or status.split(b" ")[1] in (
            b"204",
            b"304",
        )
        if not no_body and b"content-length" in fields:
            length = int(fields[b"content-length"].split(b":", 1)[1])
        body, raw = raw[:length], raw[length:]
        if status.endswith(b" 400 Bad Request") and b"text/plain" in fields.get(
            b"content-type", b""
        ):
            # aiohttp's parser error quotes the bytes it had read, which depend on how
            # they arrived: keep the error itself
            body = b"\n".join(body.split(b"\n")[:2])
            fields.pop(b"content-length", None)
        out.append((status, sorted(fields.values()), body))
        i += 1
    return out


@pytest.fixture
async def both(settings):
    settings = dataclasses.replace(settings, cors_origins=("https://a.example",))
    edge = TestClient(OriginTestServer(create_app(settings)))
    plain = TestClient(OriginTestServer(create_app(dataclasses.replace(settings, fast_path=False))))
    await edge.start_server()
    await plain.start_server()
    yield edge, plain, settings
    await edge.close()
    await plain.close()


async def test_random_request_streams_get_the_same_answers(both):
    edge, plain, settings = both
    scene, (seg, _) = await published_scene(edge, settings)
    kinds = pieces(scene, seg)
    plain_kinds = sorted(set(kinds) - ENDERS)
    rng = random.Random(20261125)
    streams = [["warm", "head", "ts-range", "post-smuggled", "warm", "get-with-body", "warm"]]
    streams += [["warm", name] for name in sorted(ENDERS)]
    for _ in range(STREAMS):
        stream = [rng.choice(plain_kinds) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.5:
            stream.append(rng.choice(sorted(ENDERS)))
        streams.append(stream)
    # warm both servers' caches the same way first
    for client in (edge, plain):
        await exchange(client, [kinds["warm"][0] + kinds["master"][0] + FINAL])
    for stream in streams:
        requests = [kinds[name][0] for name in stream]
        if stream[-1] not in ENDERS:
            requests.append(FINAL)
        data = b"".join(requests)
        cuts = sorted(rng.sample(range(1, len(data)), k=min(3, len(data) - 1)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        head_only = [kinds[name][1] for name in stream]
        got = answers(await exchange(edge, chunks), head_only)
        want = answers(await exchange(plain, requests, pause=0.01), head_only)
        assert got == want, stream
        assert got, stream  # every stream gets at least one answer
