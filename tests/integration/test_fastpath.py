"""The fast path on the wire (origin/http/connection.py): warm scene documents answered on
the connection carry exactly what aiohttp's answer carries; requests the
connection passes to aiohttp (segment files, API calls with bodies, chunked bodies,
malformed heads) keep their order on a pipelined connection; a client that does not
read cannot make the origin buffer without bound; idle connections are closed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest
from aiohttp.test_utils import TestClient

from core import signing
from origin import keys
from origin.app import create_app
from origin.playback.warm import warm_scene_documents
from tests.helpers.scenes import AUTH, TS_BYTES, published_scene
from tests.helpers.servers import OriginTestServer
from tests.helpers.wire import TO_AIOHTTP, Wire, get, same_answer


class Spy:
    """Wraps the warm answers and records which requests the connection answered."""

    def __init__(self) -> None:
        self.answered: list[str] = []

    def factory(self, app):
        inner = warm_scene_documents(app)

        def answer(method, path, query, headers, remote):
            got = inner(method, path, query, headers, remote)
            if got is not None:
                self.answered.append(f"{method} {path}")
            return got

        return answer


async def start(settings, **options):
    spy = Spy()
    server = OriginTestServer(create_app(settings), warm_answer=spy.factory, **options)
    client = TestClient(server)
    await client.start_server()
    return client, spy


@pytest.fixture
async def fast(settings):
    client, spy = await start(dataclasses.replace(settings, cors_origins=("https://app.example",)))
    client.spy = spy
    yield client
    await client.close()


# --- a raw HTTP/1.1 connection ------------------------------------------------------


# --- tests --------------------------------------------------------------------------


async def test_warm_answers_equal_aiohttp_answers(fast, settings):
    scene, _ = await published_scene(fast, settings)
    wire = await Wire.open(fast)
    origin = "Origin: https://app.example"
    for name in ("720p.m3u8", "master.m3u8", "storyboard.vtt"):
        path = f"/v/{scene}/{name}"
        for extra in ((), (origin,)):
            wire.send(get(path, *extra, *TO_AIOHTTP))
            by_aiohttp = await wire.response()
            count = len(fast.spy.answered)
            wire.send(get(path, *extra))
            here = await wire.response()
            assert fast.spy.answered[count:] == [f"GET {path}"]
            same_answer(by_aiohttp, here)
            assert here[0] == 200 and here[2]
            if extra:
                assert here[1]["access-control-allow-origin"] == "https://app.example"
                assert "Content-Range" in here[1]["access-control-expose-headers"]
        # HEAD: the GET's fields, no body
        for extra in (TO_AIOHTTP, ()):
            wire.send(get(path, *extra, method="HEAD"))
            status, headers, body = await wire.response(head_only=True)
            assert status == 200 and body == b""
            assert headers["content-length"] == str(len(here[2]))
        # conditional GET (RFC 9110 §13.1.2)
        etag = here[1]["etag"]
        for extra in (TO_AIOHTTP, ()):
            wire.send(get(path, f"If-None-Match: {etag}", *extra))
            status, headers, body = await wire.response()
            assert status == 304 and body == b"" and headers["etag"] == etag
            assert headers["cache-control"] == here[1]["cache-control"]
    assert f"HEAD /v/{scene}/master.m3u8" in fast.spy.answered
    # the same answers over aiohttp's own client
    r = await fast.get(f"/v/{scene}/720p.m3u8")
    assert r.status == 200 and r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    wire.close()


async def test_pipelined_requests_are_answered_in_order(fast, settings):
    scene, (seg, _) = await published_scene(fast, settings)
    playlist = f"/v/{scene}/720p.m3u8"
    wire = await Wire.open(fast)
    wire.send(get(playlist))
    first = await wire.response()
    body = json.dumps({"username": "pipelined"}).encode()
    upload = (
        f"POST /api/v1/users HTTP/1.1\r\nHost: o\r\nAuthorization: {AUTH}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    # one write: warm, file (aiohttp), warm, API call with a body (aiohttp), warm,
    # unknown path (aiohttp 404), HEAD warm, health
    wire.send(
        get(playlist)
        + get(f"/v/{scene}/{seg}/720p_0001.ts")
        + get(playlist)
        + upload
        + get(playlist)
        + get("/v/nope")
        + get(playlist, method="HEAD")
        + get("/healthz")
    )
    answers = [await wire.response() for _ in range(6)]
    answers.append(await wire.response(head_only=True))
    answers.append(await wire.response())
    statuses = [a[0] for a in answers]
    assert statuses == [200, 200, 200, 201, 200, 404, 200, 200]
    assert answers[0][2] == answers[2][2] == answers[4][2] == first[2]
    assert answers[1][2] == TS_BYTES
    assert json.loads(answers[3][2])["username"] == "pipelined"
    assert json.loads(answers[5][2])["error"]["code"] == "not_found"
    assert answers[6][2] == b""
    # a body that looks like a request is never answered as one
    sneaky = get(playlist)
    wire.send(
        (
            f"POST /api/v1/users HTTP/1.1\r\nHost: o\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(sneaky)}\r\n\r\n"
        ).encode()
        + sneaky
        + get("/healthz")
    )
    status, _, _ = await wire.response()
    assert status == 400  # the body was not JSON: aiohttp read it as the body
    status, _, body = await wire.response()
    assert status == 200 and json.loads(body)["status"] == "ok"
    wire.close()


async def test_chunked_and_malformed_requests_go_to_aiohttp(fast, settings):
    scene, _ = await published_scene(fast, settings)
    playlist = f"/v/{scene}/720p.m3u8"
    # chunked body: the connection is aiohttp's from then on, still in order
    wire = await Wire.open(fast)
    chunked = (
        f"POST /api/v1/users HTTP/1.1\r\nHost: o\r\nAuthorization: {AUTH}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        '14\r\n{"username": "chunk"\r\n1\r\n}\r\n0\r\n\r\n'
    ).encode()
    wire.send(get(playlist) + chunked + get(playlist))
    a, b, c = [await wire.response() for _ in range(3)]
    assert (a[0], b[0], c[0]) == (200, 201, 200)
    assert a[2] == c[2]
    wire.close()
    before = len(fast.spy.answered)
    bad_heads = [
        b"GET /x HTTP/1.1\r\nHost: o\r\nBad Header\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: o\r\nX: a\x01b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: o\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: o\r\nContent-Length: -1\r\n\r\n",
        b"GET " + playlist.encode() + b" HTTP/1.1\r\nHost: o\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET " + playlist.encode() + b" HTTP/1.1\r\nHost: o\r\n" + b"X: a\r\n" * 200 + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain port
    ]
    for raw in bad_heads:
        wire = await Wire.open(fast)
        wire.send(raw + get(playlist))
        status, _, _ = await wire.response()
        assert 400 <= status < 500, raw[:40]
        assert await wire.closed(), raw[:40]
        wire.close()
    assert len(fast.spy.answered) == before


async def test_connection_close_and_http10_are_left_to_aiohttp(fast, settings):
    scene, _ = await published_scene(fast, settings)
    playlist = f"/v/{scene}/720p.m3u8"
    wire = await Wire.open(fast)
    wire.send(get(playlist))
    warm = await wire.response()
    wire.send(get(playlist, "Connection: close"))
    status, headers, body = await wire.response()
    assert status == 200 and body == warm[2]
    assert headers.get("connection", "").lower() == "close"
    assert await wire.closed()
    wire.close()
    wire = await Wire.open(fast)
    wire.send(f"GET {playlist} HTTP/1.0\r\nHost: o\r\n\r\n".encode())
    status, _, body = await wire.response()
    assert status == 200 and body == warm[2]
    assert await wire.closed()
    wire.close()


async def test_a_client_that_does_not_read_is_bounded(fast, settings):
    scene, _ = await published_scene(fast, settings, clips=6)
    playlist = f"/v/{scene}/720p.m3u8"
    wire = await Wire.open(fast)
    wire.send(get(playlist))
    _, _, body = await wire.response()
    n = 3000  # ~ len(body) * n bytes of answers if all were made at once
    wire.send(get(playlist) * n)
    await wire.writer.drain()
    await asyncio.sleep(1.0)
    buffered = [
        c.transport.get_write_buffer_size()
        for c in fast.server.runner.server.connections
        if c.transport is not None
    ]
    assert buffered and max(buffered) < 256 * 1024 < len(body) * n
    for _ in range(n):  # then every answer arrives, in order
        status, _, got = await wire.response()
        assert status == 200 and got == body
    wire.close()


KEEPALIVE = 1.0  # seconds: the keep-alive timeout of the idle-connection test


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "plain"])
async def test_idle_connections_are_closed(settings, fast_path):
    if fast_path:
        client, _ = await start(settings, keepalive_timeout=KEEPALIVE)
    else:
        plain = create_app(dataclasses.replace(settings, fast_path=False))
        client = TestClient(OriginTestServer(plain, keepalive_timeout=KEEPALIVE))
        await client.start_server()
    try:
        scene, _ = await published_scene(client, settings)
        playlist = f"/v/{scene}/720p.m3u8"
        wire = await Wire.open(client)
        wire.send(get("/healthz"))
        assert (await wire.response())[0] == 200
        started = time.monotonic()
        assert await wire.closed(timeout=5)
        assert KEEPALIVE - 0.1 < time.monotonic() - started < KEEPALIVE + 4
        wire.close()
        # a connection in use (warm answers every 0.1 s, a tenth of the timeout, so a
        # busy machine's stalls do not make it idle) outlives the keep-alive timeout;
        # once idle, it is closed
        wire = await Wire.open(client)
        started = time.monotonic()
        while time.monotonic() - started < 2.5 * KEEPALIVE:
            await asyncio.sleep(0.1)
            wire.send(get(playlist))
            assert (await wire.response())[0] == 200
        idle = time.monotonic()
        assert await wire.closed(timeout=5)
        assert KEEPALIVE - 0.1 < time.monotonic() - idle < KEEPALIVE + 4
        wire.close()
        # a connection that never sends a request is closed too
        wire = await Wire.open(client)
        assert await wire.closed(timeout=5)
        wire.close()
    finally:
        await client.close()


async def test_signed_warm_answers_are_verified_each_time(settings):
    key = signing.HmacKey("k1", b"edge-test-secret-0123456789")
    signed = dataclasses.replace(settings, signing="hmac", hmac_keys=(key,))
    client, spy = await start(signed)
    try:
        scene, _ = await published_scene(client, signed)
        state = client.server.app[keys.SIGNING]
        token = signing.mint_token(f"/v/{scene}/", int(time.time()) + 600, key)
        path = f"/v/{scene}/720p.m3u8"
        wire = await Wire.open(client)
        wire.send(get(f"{path}?{token.query}", *TO_AIOHTTP))
        cold = await wire.response()
        wire.send(get(f"{path}?{token.query}"))
        warm = await wire.response()
        same_answer(cold, warm)
        assert warm[2].count(token.query.encode()) == warm[2].count(b".ts") > 0
        assert spy.answered == [f"GET {path}"]
        assert state.stats.verified == 2
        forged = token.query[:-3] + ("AAA" if not token.query.endswith("AAA") else "BBB")
        for query in (forged, "", f"exp=1&kid=k1&sig={token.sig}"):
            wire.send(get(f"{path}?{query}"))
            status, _, body = await wire.response()
            assert status == 403, query
            assert json.loads(body)["error"]["code"] == "forbidden"
        assert spy.answered == [f"GET {path}"]
        assert state.stats.denied == 3
        wire.close()
    finally:
        await client.close()


async def test_answers_on_the_connection_are_logged_like_aiohttp_ones(settings):
    import io
    import logging

    from core import logs

    client, spy = await start(dataclasses.replace(settings, access_log="all"))
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs._TextFormatter())
    logger = logging.getLogger("storyforge.origin")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        scene, _ = await published_scene(client, settings)
        path = f"/v/{scene}/720p.m3u8"
        wire = await Wire.open(client)
        for rid in ("by-aiohttp", "on-the-connection"):
            wire.send(get(path, f"X-Request-Id: {rid}"))
            status, headers, _ = await wire.response()
            assert status == 200 and headers["x-request-id"] == rid
        assert spy.answered == [f"GET {path}"]  # the first one built the document
        text = out.getvalue()
        assert f"[by-aiohttp] GET {path} 200" in text
        assert f"[on-the-connection] GET {path} 200" in text
        wire.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        await client.close()
