"""The hostile corpus (issue 14): crafted uploads through the real upload API and a
real worker, and crafted HTTP requests on raw sockets to the origin with the fast path
on and off, each with its expected answer in one table per kind. Never a 500, never a
hang (every exchange is bounded), never a connection out of the box, never a server
path in an answer.

One origin per path, one worker and a loopback listener (the bait crafted playlists
point at) run for the whole module on an event loop of their own in a thread, on a
database of the module's own (the worker claims only this module's jobs), so a case
costs its own exchange only."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core import catalog, db, layout, signing
from core.cdn import open_invalidations
from core.settings import Settings
from core.storage import open_configured_storage
from origin.app import create_app
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_LADDER, make_clip
from tests.helpers.hostile import Bait, body
from tests.helpers.scenes import API_TOKEN, publish
from tests.helpers.servers import OriginTestServer
from workers.runtime.loop import run_worker
from workers.runtime.main import handlers

pytestmark = pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)

KEY = signing.HmacKey("hostile", b"hostile-corpus-secret-0123456789")
EXCHANGE_SECONDS = 10.0  # a request that gets no answer within this fails its test
UPLOAD_SECONDS = 90.0  # an upload still processing after this fails its test
SERVER_PATH = re.compile(r"(?:^|[\s'\"(=])/[\w.]")  # an absolute path in a text


# --------------------------------------------------------------------------- uploads


@dataclass(frozen=True)
class Refused:
    """The upload API answers `status` at once (no segment is made)."""

    status: int


@dataclass(frozen=True)
class Failed:
    """Accepted (202), then the worker fails the clip with a reason matching `reason`."""

    reason: str


@dataclass(frozen=True)
class Ready:
    """Accepted and published (every rendition's first media segment stored)."""


READY = Ready()
NOT_READABLE = r"^not a readable video file"

UPLOADS: dict[str, Refused | Failed | Ready] = {
    "zero-bytes": Refused(400),
    "random-bytes": Failed(NOT_READABLE),
    "text": Refused(415),  # sent as text/plain (CONTENT_TYPES)
    "mp4-head-only": Failed(NOT_READABLE + r".*moov atom not found"),
    "truncated-moov": Failed(NOT_READABLE),
    "moov-without-mdat": Failed(
        r"^no picture could be decoded at the declared size 64x64: .*partial file"
    ),
    "mpegts-garbage": Failed(NOT_READABLE),
    "png": Failed(r"^a still image \(png_pipe\), not a video$"),
    "jpeg": Failed(r"^a still image \(jpeg_pipe\), not a video$"),
    "png-in-mov": Failed(r"^a still image \(png\), not a video$"),
    "gif": Failed(r"^not a video container \(gif\)$"),
    "apng": Failed(r"^not a video container \(apng\)$"),
    "hls-local-file": Failed(r"^not a video container \(hls\)$"),
    "hls-loopback": Failed(r"^not a video container \(hls\)$"),
    "ffconcat-local-file": Failed(r"^not a video container \(concat\)$"),
    "ffconcat-loopback": Failed(r"^not a video container \(concat\)$"),
    "sdp-loopback": Failed(r"^not a video container \(sdp\)$"),
    "srt-file": Failed(r"^not a video container \(srt\)$"),
    "subtitles-only": Failed(r"^no video stream$"),
    "audio-only-m4a": Failed(r"^audio only$"),
    "audio-with-cover-art": Failed(r"^audio only$"),
    "audio-only-wav": Failed(r"^not a video container \(wav\)$"),
    "audio-only-mp3": Failed(r"^not a video container \(mp3\)$"),
    "two-hour-declared": Failed(r"^duration 7200\.0 s exceeds the maximum 600 s$"),
    "two-hour-stream": Failed(r"^duration 7200\.0 s exceeds the maximum 600 s$"),
    "too-short": Failed(r"^duration 0\.0 s is below the minimum 0\.1 s$"),
    "too-wide": Failed(r"^picture 16384x16 exceeds the maximum 7680x4320$"),
    "declared-8000x8000": Failed(r"^picture 8000x8000 exceeds the maximum 7680x4320$"),
    "declared-16384x16384": Failed(r"^could not read the picture size$"),
    "tiny-picture": Failed(r"^picture 8x8 is too small$"),
    "pixel-rate": Failed(r"^1280x720 at 600 fps is 553 million pixels per second, above"),
    "rotation-45": Failed(r"^display rotation of 45 degrees is not a multiple of 90"),
    "wrong-type-webm-as-mp4": READY,
    "rotation-90": READY,
    "vfr-extreme": READY,
    "zero-fps": READY,
    "huge-fps": READY,
    "many-streams": READY,
}
#: Content-Type sent with a body (default video/mp4): the API checks the type only,
#: the container is the probe's business.
CONTENT_TYPES = {"text": "text/plain"}


# --------------------------------------------------------------------------- requests


def req(line: str, *headers: str, body: str = "", host: bool = True) -> str:
    """A request head (CRLF line ends, Host first unless `host` is False) and body."""
    return "\r\n".join([line, *(["Host: origin.test"] if host else []), *headers, "", body])


# Placeholders: {scene} {seg} (a published scene and clip), {tok} (a valid token for
# it), {expired}, {forged}, {other} (a token for another scene), {other_scene}, and
# {scene_b64} {user_b64} (the scene and a user in Base64, for tus metadata).
M = "/v/{scene}/master.m3u8"
TS = "/v/{scene}/{seg}/720p_0001.ts"
AUTH = f"Authorization: Bearer {API_TOKEN}"
JSON = "Content-Type: application/json"


def api(path: str, body: str, *, auth: bool = True) -> str:
    """A JSON POST to the API with the bearer token; `body` holds no placeholder (its
    Content-Length is counted here)."""
    headers = [AUTH] if auth else []
    length = f"Content-Length: {len(body.encode())}"
    return req(f"POST {path} HTTP/1.1", *headers, JSON, length, body=body)


CLOSE = "Connection: close"
# a request hidden in a body (no placeholders: lengths are counted before they are filled)
SMUGGLED = "GET /healthz HTTP/1.1\r\nHost: origin.test\r\n\r\n"

#: name -> (bytes sent, the status of the first answer) or (bytes sent, the statuses of
#: every answer until the server closes: a pipelined conversation).
REQUESTS: dict[str, tuple[str, int | tuple[int, ...]]] = {
    # baselines: the same connection and placeholders answer 200
    "baseline-master": (req(f"GET {M}?{{tok}} HTTP/1.1"), 200),
    "baseline-ts": (req(f"GET {TS}?{{tok}} HTTP/1.1"), 200),
    # signed tokens
    "unsigned": (req(f"GET {M} HTTP/1.1"), 403),
    "forged-signature": (req(f"GET {M}?{{forged}} HTTP/1.1"), 403),
    "expired-token": (req(f"GET {TS}?{{expired}} HTTP/1.1"), 403),
    "other-scene-token": (req(f"GET {M}?{{other}} HTTP/1.1"), 403),
    "token-twice": (req(f"GET {M}?{{tok}}&{{tok}} HTTP/1.1"), 403),
    "token-garbage-exp": (req(f"GET {M}?exp=soon&kid=hostile&sig=AAAA HTTP/1.1"), 403),
    # traversal: never another scene's or the server's files
    "dotdot-other-token": (
        req("GET /v/{scene}/../{other_scene}/master.m3u8?{other} HTTP/1.1"),
        403,
    ),
    "dotdot-own-token": (req("GET /v/{scene}/../{other_scene}/master.m3u8?{tok} HTTP/1.1"), 404),
    "dotdot-escape": (req("GET /v/{scene}/{seg}/../../../../etc/passwd?{tok} HTTP/1.1"), 404),
    "dotdot-encoded": (req("GET /v/{scene}/%2e%2e/%2e%2e/etc/passwd?{tok} HTTP/1.1"), 404),
    "slash-encoded": (req("GET /v/{scene}/{seg}%2F720p_0001.ts?{tok} HTTP/1.1"), 404),
    "backslash": (req("GET /v/{scene}/{seg}/..\\..\\720p.m3u8?{tok} HTTP/1.1"), 404),
    "nul-byte": (req("GET /v/{scene}/{seg}/720p_0001.ts%00.m3u8?{tok} HTTP/1.1"), 404),
    "bad-scene-id": (req("GET /v/scn_NOT-AN-ID/master.m3u8 HTTP/1.1"), 403),
    "bad-segment-id": (req("GET /api/v1/segments/seg_..%2f..%2fetc HTTP/1.1"), 404),
    "non-ascii-path": (req("GET /v/{scene}/ma\xefster.m3u8?{tok} HTTP/1.1"), 400),
    # framing and smuggling
    "cl-and-te": (
        req(f"GET {M}?{{tok}} HTTP/1.1", "Content-Length: 4", "Transfer-Encoding: chunked")
        + "0\r\n\r\n",
        400,
    ),
    "duplicate-cl-differing": (
        req("POST /api/v1/scenes HTTP/1.1", "Content-Length: 2", "Content-Length: 3", body="{}"),
        400,
    ),
    "duplicate-cl-same": (
        req(f"GET {M}?{{tok}} HTTP/1.1", "Content-Length: 0", "Content-Length: 0"),
        400,
    ),
    "te-not-chunked": (
        req("POST /api/v1/scenes HTTP/1.1", AUTH, "Transfer-Encoding: gzip", body="{}"),
        400,
    ),
    "bad-chunk-size": (
        req("POST /api/v1/scenes HTTP/1.1", AUTH, JSON, "Transfer-Encoding: chunked")
        + "zz\r\n{}\r\n0\r\n\r\n",
        400,
    ),
    # pipelined: a body that holds a request is a body, not a request
    "body-holds-a-request": (
        api("/api/v1/scenes", SMUGGLED, auth=False) + req(f"GET {M}?{{tok}} HTTP/1.1", CLOSE),
        (401, 200),
    ),
    "cl-te-pipelined": (
        req(f"POST {M}?{{tok}} HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked")
        + "0\r\n\r\n"
        + SMUGGLED,
        (400,),
    ),
    "te-cl-pipelined": (
        req(f"POST {M}?{{tok}} HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 50")
        + "0\r\n\r\n"
        + SMUGGLED,
        (400,),
    ),
    "duplicate-cl-pipelined": (
        req(f"POST {M}?{{tok}} HTTP/1.1", "Content-Length: 0", "Content-Length: 60") + SMUGGLED,
        (400,),
    ),
    "three-pipelined": (
        req(f"GET {M}?{{tok}} HTTP/1.1")
        + req(f"GET {TS}?{{tok}} HTTP/1.1", "Range: bytes=0-3")
        + req(f"GET {M} HTTP/1.1", CLOSE),
        (200, 206, 403),
    ),
    "obs-fold": (req(f"GET {M}?{{tok}} HTTP/1.1", "X-Note: one", " folded"), 400),
    "bare-lf": (f"GET {M}?{{tok}} HTTP/1.1\nHost: origin.test\n\n", 400),
    "space-before-colon": (req(f"GET {M}?{{tok}} HTTP/1.1", "Host : evil.test"), 400),
    "negative-cl": (req("POST /api/v1/scenes HTTP/1.1", "Content-Length: -1"), 400),
    "huge-cl-upload": (
        req(
            "POST /api/v1/scenes/{scene}/segments?contributor=usr_000000000000 HTTP/1.1",
            AUTH,
            "Content-Type: video/mp4",
            "Content-Length: 1000000000000000",
        ),
        413,
    ),
    # another version is answered as HTTP/1.1 (RFC 9110 §6.2 lets a server refuse, 505)
    "http2-version": (req(f"GET {M}?{{tok}} HTTP/2.0"), 200),
    "http09": ("GET /\r\n\r\n", 404),
    # sizes
    "overlong-url": (req(f"GET {M}?{{tok}}&pad={'a' * 9000} HTTP/1.1"), 400),
    "overlong-header": (req(f"GET {M}?{{tok}} HTTP/1.1", "X-Big: " + "b" * 9000), 400),
    "many-headers": (req(f"GET {M}?{{tok}} HTTP/1.1", *(f"X-H{i}: {i}" for i in range(200))), 400),
    # ranges and conditionals
    "range-past-end": (req(f"GET {TS}?{{tok}} HTTP/1.1", "Range: bytes=99999999-"), 416),
    # an invalid ranges-specifier may be ignored or rejected (RFC 9110 §14.2): rejected
    "range-garbage": (req(f"GET {TS}?{{tok}} HTTP/1.1", "Range: bytes=abc"), 416),
    "range-reversed": (req(f"GET {TS}?{{tok}} HTTP/1.1", "Range: bytes=50-10"), 416),
    "range-multi": (req(f"GET {TS}?{{tok}} HTTP/1.1", "Range: bytes=0-1,5-6"), 200),
    "if-none-match-garbage": (req(f"GET {M}?{{tok}} HTTP/1.1", 'If-None-Match: "x, ,,'), 200),
    # methods
    "delete-media": (req(f"DELETE {TS}?{{tok}} HTTP/1.1"), 405),
    "put-playlist": (req(f"PUT {M}?{{tok}} HTTP/1.1", "Content-Length: 0"), 405),
    "unknown-method": (req(f"BREW {M}?{{tok}} HTTP/1.1"), 400),  # llhttp knows no BREW
    # the JSON API
    "api-no-token": (api("/api/v1/scenes", "{}", auth=False), 401),
    "api-bad-json": (api("/api/v1/scenes", '{"title":'), 400),
    "api-json-list": (api("/api/v1/scenes", "[]"), 400),
    "api-json-nul-title": (api("/api/v1/scenes", '{"title": "a\\u0000b"}'), 400),
    "api-json-huge-number": (api("/api/v1/scenes", '{"title": 1e999999}'), 400),
    "api-json-deep": (api("/api/v1/scenes", "[" * 100_000 + "]" * 100_000), 400),
    "api-export-bad-quality": (api("/api/v1/scenes/{scene}/export", '{"quality": "9000p"}'), 400),
    "api-export-bad-range": (
        api("/api/v1/scenes/{scene}/export", '{"quality": "720p", "start": 5, "end": -1}'),
        400,
    ),
    "api-export-nan": (
        api("/api/v1/scenes/{scene}/export", '{"quality": "720p", "start": NaN, "end": 9}'),
        400,
    ),
    "tus-metadata-nul": (
        req(
            "POST /api/v1/uploads HTTP/1.1",
            AUTH,
            "Tus-Resumable: 1.0.0",
            "Upload-Length: 10",
            "Upload-Metadata: sceneId {scene_b64},contributor {user_b64},filename YQBiLm1wNA==",
            "Content-Length: 0",
        ),
        400,
    ),
    "tus-negative-length": (
        req(
            "POST /api/v1/uploads HTTP/1.1",
            AUTH,
            "Tus-Resumable: 1.0.0",
            "Upload-Length: -5",
            "Upload-Metadata: sceneId {scene_b64},contributor {user_b64}",
            "Content-Length: 0",
        ),
        400,
    ),
    "api-retry-bad-id": (api("/api/v1/segments/seg_%2e%2e/retry", ""), 404),
}


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    loop: asyncio.AbstractEventLoop
    ports: dict[bool, int]  # fast path on/off -> port
    fields: dict[str, str]  # the placeholders of REQUESTS
    scene: str  # where the uploads go
    user: str
    bait: Bait
    bait_connections: list[int]
    settings: Settings
    closers: list[Callable[[], Any]]

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


async def _start(stack: Stack, root: Path) -> None:
    base = stack.settings
    pool = await db.connect_pool(base.database_url, size=4)
    storage = await open_configured_storage(base)
    await storage.ensure_buckets(base.buckets)
    async with pool.acquire() as conn:
        user = await catalog.create_user(conn, "hostile-" + layout.new_id("usr")[4:12])
        played, other, uploads = [
            await catalog.create_scene(conn, f"hostile {n}") for n in ("played", "other", "uploads")
        ]
    seg = await publish(base, played.id, user.id, 1, [4.0, 2.0])
    await publish(base, other.id, user.id, 1, [4.0])
    now = int(time.time())
    tok = signing.mint_token(f"/v/{played.id}/", now + 3600, KEY).query
    head, sig = tok.rsplit("sig=", 1)
    stack.fields.update(
        scene=played.id,
        seg=seg,
        other_scene=other.id,
        tok=tok,
        forged=f"{head}sig={'B' if sig[0] == 'A' else 'A'}{sig[1:]}",
        expired=signing.mint_token(f"/v/{played.id}/", now - 10, KEY).query,
        other=signing.mint_token(f"/v/{other.id}/", now + 3600, KEY).query,
    )
    stack.scene, stack.user = uploads.id, user.id
    stack.fields.update(
        scene_b64=base64.b64encode(played.id.encode()).decode(),
        user_b64=base64.b64encode(user.id.encode()).decode(),
    )

    def bait_connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stack.bait_connections.append(1)
        writer.close()

    bait = await asyncio.start_server(bait_connected, "127.0.0.1", 0)
    stack.bait = dataclasses.replace(
        stack.bait, url=f"http://127.0.0.1:{bait.sockets[0].getsockname()[1]}"
    )
    for fast in (True, False):
        server = OriginTestServer(create_app(dataclasses.replace(base, fast_path=fast)))
        await server.start_server()
        assert server.port is not None
        stack.ports[fast] = server.port
        stack.closers.append(server.close)
    quiet = dataclasses.replace(base, signing="none", hmac_keys=())  # workers do not sign
    invalidations = await open_invalidations(quiet, pool)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            pool,
            handlers(quiet, storage, invalidations),
            lease_seconds=10.0,
            poll_interval=0.2,
            grace_seconds=5,
            stop=stop,
            name="hostile-worker",
        )
    )

    async def stop_worker() -> None:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await invalidations.aclose()
        await storage.aclose()
        await pool.close()
        bait.close()

    stack.closers.append(stop_worker)


@pytest.fixture(scope="module")
def stack(module_db, tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("hostile")
    secret = make_clip(root / "secret.mp4", width=64, height=64, duration=1, audio=None)
    settings = Settings.from_env(
        {},
        database_url=module_db,
        storage_root=root / "storage",
        api_tokens=(API_TOKEN,),
        log_format="text",
        job_lease_seconds=10.0,
        timeline_interval=2.0,
        signing="hmac",
        hmac_keys=(KEY,),
        refine=False,  # one stage (issue 17's tests turn it on)
        ladder=SMALL_LADDER,  # any published clip will do
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hostile-stack", daemon=True)
    thread.start()
    stack = Stack(loop, {}, {}, "", "", Bait(secret, ""), [], settings, [])
    try:
        stack.run(_start(stack, root))
        for fast in (True, False):  # warm: the fast path answers these from its caches
            for path in (M, "/v/{scene}/720p.m3u8"):
                assert (
                    exchange(stack.ports[fast], req(f"GET {path}?{{tok}} HTTP/1.1"), stack)[0]
                    == 200
                )
        yield stack
    finally:
        for close in reversed(stack.closers):
            stack.run(close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _answers(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(status, body) of each answer on the connection until the server closes it."""
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        fields = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
        )
        if b"content-length" in fields:
            end = int(fields[b"content-length"])
        elif fields.get(b"transfer-encoding") == b"chunked":
            while b"0\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            end = data.find(b"0\r\n\r\n") + 5
        else:
            end = len(data)
        while len(data) < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        yield int(head.split(b" ", 2)[1]), data[:end]
        data = data[end:]


def exchange(port: int, template: str, stack: Stack, *, every: bool = False) -> list[int]:
    """Send crafted bytes on a fresh connection; the status of the first answer, or with
    `every` of each answer until the server closes ([] when none came). Every answer
    is checked for server paths and tracebacks."""
    for name, value in stack.fields.items():
        template = template.replace("{" + name + "}", value)
    statuses = []
    root = str(stack.settings.storage_root).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_SECONDS) as sock:
        sock.sendall(template.encode("latin-1"))
        for status, answer in _answers(sock):
            assert root not in answer and b"Traceback" not in answer, answer[:300]
            statuses.append(status)
            if not every:
                break
    return statuses


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "plain"])
@pytest.mark.parametrize("name", list(REQUESTS))
def test_hostile_request(stack, name, fast):
    template, expected = REQUESTS[name]
    if isinstance(expected, int):
        assert exchange(stack.ports[fast], template, stack) == [expected], name
    else:  # the whole conversation: no request smuggled in, none lost
        assert exchange(stack.ports[fast], template, stack, every=True) == list(expected), name


# --------------------------------------------------------------------------- upload runs


def _api(
    stack: Stack, method: str, path: str, payload: bytes = b"", ctype: str = ""
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports[True], timeout=EXCHANGE_SECONDS)
    try:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        if ctype:
            headers["Content-Type"] = ctype
        conn.request(method, path, body=payload, headers=headers)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize("name", list(UPLOADS))
def test_hostile_upload(stack, name, tmp_path):
    expected = UPLOADS[name]
    data = body(name, tmp_path, stack.bait)
    url = f"/api/v1/scenes/{stack.scene}/segments?contributor={stack.user}"
    status, answer = _api(stack, "POST", url, data, CONTENT_TYPES.get(name, "video/mp4"))
    if isinstance(expected, Refused):
        assert status == expected.status, answer
        return
    assert status == 202, answer
    deadline = time.monotonic() + UPLOAD_SECONDS
    while True:
        status, clip = _api(stack, "GET", answer["statusUrl"])
        assert status == 200, clip
        if clip["status"] != "processing" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    stored = stack.settings.storage_root / stack.settings.videos_bucket / stack.scene
    files = stored / answer["segmentId"]
    if isinstance(expected, Failed):
        assert clip["status"] == "failed", clip
        assert re.search(expected.reason, clip["error"]), clip["error"]
        assert not SERVER_PATH.search(clip["error"]), clip["error"]
        assert not files.exists()
    else:
        assert clip["status"] == "ready", clip
        assert all((files / f"{r.name}_0001.ts").is_file() for r in stack.settings.ladder)
    assert stack.bait_connections == []
