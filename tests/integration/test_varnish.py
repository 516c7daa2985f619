"""The origin behind a real cache (issue 28): varnishd running the project's VCL
(infra/varnish/storyforge.vcl) in front of an origin in hmac signing mode that admits
only requests bearing the origin secret (which the VCL adds), with workers purging
cache tags on it (CDN=varnish).

Through the cache: a media segment is fetched from the origin once and then answered
from the cache (tracking and CMCD parameters ignored), with ranges, HEAD and 304s;
the origin tags every answer and the cache strips the tags; a newly published clip
is in the scene's playlists within their max-age; a deleted scene answers 404 within
2 s of the DELETE and nothing of it is answered after; two viewers' signed playlists
never leak into each other, and a forged or missing token is never answered from the
cache. Purges are counted per backend in /metrics, failures too. And `storyforge dev
--cdn` shows the same for its own Varnish."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from core import cachetags, cdn, db, invalidation, layout, signing
from core.settings import LadderRung, Settings
from origin.app import create_app
from origin.playback.routes import SCENE_DOCUMENT_ROUTE, SEGMENT_FILE_ROUTE
from storyforge.dev import varnish
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, make_clip
from tests.helpers.metrics import scrape
from tests.helpers.scenes import API_TOKEN, TS_BYTES, publish, scene_with_users, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import free_port
from tests.helpers.varnish import (
    HAVE_VARNISH,
    NO_VARNISH_REASON,
    leaked_tags,
    origin_requests,
    purges,
)
from tests.helpers.workers import running_workers

pytestmark = pytest.mark.skipif(not HAVE_VARNISH, reason=NO_VARNISH_REASON)

KEY = signing.HmacKey("k2028", b"test-hmac-secret-0123456789")
ORIGIN_SECRET = "varnish-origin-secret-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
# one small rung (named like the published test clips' first one) keeps encodes cheap
LADDER = (LadderRung("720p", 320, 180, 300_000),)
SCENE_MAX_AGE = 5.0  # layout.SCENE_PLAYLIST_CACHE


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()  # the origin's, the cache's


@pytest.fixture(scope="module")
def cdn_settings(module_db, tmp_path_factory, ports) -> Settings:
    return Settings.from_env(
        {},
        database_url=module_db,
        storage_root=tmp_path_factory.mktemp("varnish-storage"),
        api_tokens=(API_TOKEN,),
        log_format="text",
        job_lease_seconds=10.0,
        timeline_interval=2.0,
        refine=False,
        ladder=LADDER,
        signing="hmac",
        hmac_keys=(KEY,),
        origin_secret=ORIGIN_SECRET,
        cdn="varnish",
        cdn_purge_urls=(f"http://127.0.0.1:{ports[1]}/",),
        cdn_invalidation_window=0.5,
    )


@pytest.fixture(scope="module")
def cache_url(ports):
    site = varnish.Site(origin_port=ports[0], origin_secret=ORIGIN_SECRET, probe=False)
    with varnish.running(site, ports[1], memory_mb=64) as url:
        yield url


@pytest.fixture(scope="module")
async def origin(cdn_settings, ports, cache_url):
    server = OriginTestServer(create_app(cdn_settings), port=ports[0])
    async with TestClient(server) as client:
        client.headers_auth = AUTH
        async with running_workers(cdn_settings):
            yield client


@pytest.fixture(scope="module")
async def viewer(cache_url):
    """A viewer's HTTP client, talking to the cache only."""
    async with aiohttp.ClientSession(cache_url) as session:
        yield session


def token(scene_id: str, exp_in: int = 3600) -> str:
    """A viewer's HMAC token for the scene (viewers differ by their expiry)."""
    return signing.mint_token(f"/v/{scene_id}/", int(time.time()) + exp_in, KEY).query


async def published(origin, settings, clips: int = 1) -> tuple[str, list[str]]:
    scene, (user,) = await scene_with_users(origin)
    segments = [await publish(settings, scene, user, i + 1, [4.0, 2.5]) for i in range(clips)]
    return scene, segments


async def denials(origin) -> float:
    """Requests the origin's signing guard refused."""
    return (await scrape(origin))[("storyforge_signing_checks_total", (("outcome", "denied"),))]


def fast_path_answers(samples) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "storyforge_http_requests_total" and ("answered_by", "fast_path") in labels
    )


async def route_count(origin, route: str) -> float:
    return origin_requests(await scrape(origin), route)


async def test_a_segment_is_fetched_from_the_origin_once(origin, viewer, cdn_settings):
    scene, (seg,) = await published(origin, cdn_settings)
    query = token(scene)
    path = f"/v/{scene}/{seg}/720p_0001.ts"
    # the origin's own answer names what it depends on
    r = await origin.get(f"{path}?{query}", headers={"X-Origin-Secret": ORIGIN_SECRET})
    assert r.status == 200
    assert r.headers["Surrogate-Key"] == f"{scene} {seg} {seg}.g1"
    before = await route_count(origin, SEGMENT_FILE_ROUTE)
    answers = []
    for i in range(100):
        # players add their own parameters: they are not part of the key
        extra = "&CMCD=br%3D300%2Cot%3Dv&utm_source=x" if i % 2 else ""
        async with viewer.get(f"{path}?{query}{extra}") as r:
            answers.append(
                (r.status, await r.read(), tuple(leaked_tags(r.headers)), r.headers["X-Cache"])
            )
    assert {a[:3] for a in answers} == {(200, TS_BYTES, ())}
    assert [a[3] for a in answers] == ["MISS"] + ["HIT"] * 99
    assert await route_count(origin, SEGMENT_FILE_ROUTE) - before == 1


async def test_ranges_head_and_304_come_from_the_cache(origin, viewer, cdn_settings):
    scene, (seg,) = await published(origin, cdn_settings)
    url = f"/v/{scene}/{seg}/720p_0002.ts?{token(scene)}"
    before = await route_count(origin, SEGMENT_FILE_ROUTE)
    async with viewer.get(url, headers={"Range": "bytes=100-299"}) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes 100-299/{len(TS_BYTES)}"
        assert await r.read() == TS_BYTES[100:300]
    async with viewer.get(url, headers={"Range": "bytes=-10"}) as r:
        assert (r.status, await r.read(), r.headers["X-Cache"]) == (206, TS_BYTES[-10:], "HIT")
    async with viewer.get(url, headers={"Range": f"bytes={len(TS_BYTES)}-"}) as r:
        assert r.status == 416
    async with viewer.head(url) as r:
        assert (r.status, r.headers["Content-Length"]) == (200, str(len(TS_BYTES)))
        etag = r.headers["ETag"]
        assert leaked_tags(r.headers) == []
    async with viewer.get(url, headers={"If-None-Match": etag}) as r:
        assert (r.status, await r.read(), r.headers["X-Cache"]) == (304, b"", "HIT")
    assert await route_count(origin, SEGMENT_FILE_ROUTE) - before == 1

    # a scene document: 304 through the cache too, on its version's ETag
    master = f"/v/{scene}/master.m3u8?{token(scene)}"
    async with viewer.get(master) as r:
        assert r.status == 200
        etag = r.headers["ETag"]
    async with viewer.get(master, headers={"If-None-Match": etag}) as r:
        assert (r.status, r.headers["X-Cache"]) == (304, "HIT")


async def test_two_viewers_signed_playlists_never_leak(origin, viewer, cdn_settings):
    scene, _ = await published(origin, cdn_settings)
    alice, bob = token(scene, 3600), token(scene, 7200)
    assert alice != bob
    bodies = {}
    for who, query in (("alice", alice), ("bob", bob), ("alice", alice), ("bob", bob)):
        async with viewer.get(f"/v/{scene}/720p.m3u8?{query}") as r:
            assert r.status == 200
            body = await r.text()
        bodies.setdefault(who, set()).add(body)
    for who, mine, theirs in (("alice", alice, bob), ("bob", bob, alice)):
        (body,) = bodies[who]  # the cached copy is the viewer's own each time
        uris = [line for line in body.splitlines() if line and not line.startswith("#")]
        assert uris and all(u.endswith("?" + mine) for u in uris), body
        assert theirs not in body


async def test_a_forged_or_missing_token_is_never_answered_from_the_cache(
    origin, viewer, cdn_settings
):
    scene, (seg,) = await published(origin, cdn_settings)
    good = token(scene)
    exp, kid, sig = (dict(p.split("=") for p in good.split("&"))[k] for k in ("exp", "kid", "sig"))
    forged = f"exp={exp}&kid={kid}&sig={'A' * 43}"
    for path in (f"/v/{scene}/master.m3u8", f"/v/{scene}/{seg}/720p_0001.ts"):
        async with viewer.get(f"{path}?{good}") as r:
            assert r.status == 200  # cached now
        denied = await denials(origin)
        for _ in range(2):
            for query in (forged, "", "utm_source=x", f"exp={exp}&kid={kid}"):
                async with viewer.get(f"{path}?{query}") as r:
                    assert r.status == 403, (path, query)
                    assert r.headers["X-Cache"] != "HIT"
                    assert leaked_tags(r.headers) == []
        assert await denials(origin) - denied == 8  # every one of them reached the origin's guard


async def test_the_origin_admits_only_the_cache(origin, viewer, cdn_settings):
    scene, _ = await published(origin, cdn_settings)
    path = f"/v/{scene}/master.m3u8?{token(scene)}"
    r = await origin.get(path)  # no origin secret: not from the cache
    assert r.status == 403
    async with viewer.get(path) as r:
        assert r.status == 200
    # the origin's answers name the scene and its documents, the fast path's too
    fast = fast_path_answers(await scrape(origin))
    for _ in range(2):
        r = await origin.get(path, headers={"X-Origin-Secret": ORIGIN_SECRET})
        assert r.status == 200
        assert r.headers["Surrogate-Key"] == f"{scene} {scene}.docs"
    assert fast_path_answers(await scrape(origin)) > fast


async def test_a_deleted_scene_is_gone_from_the_cache_within_2_s(origin, viewer, cdn_settings):
    scene, (seg,) = await published(origin, cdn_settings)
    query = token(scene)
    paths = [
        f"/v/{scene}/master.m3u8",
        f"/v/{scene}/720p.m3u8",
        f"/v/{scene}/{seg}/720p.m3u8",
        f"/v/{scene}/{seg}/720p_0001.ts",
    ]
    for path in paths * 2:
        async with viewer.get(f"{path}?{query}") as r:
            assert r.status == 200
    async with viewer.get(f"{paths[0]}?{query}") as r:
        assert r.headers["X-Cache"] == "HIT"

    r = await origin.delete(f"/api/v1/scenes/{scene}", headers=AUTH)
    assert r.status == 202
    deleted = time.monotonic()
    while True:
        async with viewer.get(f"{paths[0]}?{query}") as r:
            if r.status == 404:
                break
            assert r.status == 200
        assert time.monotonic() - deleted < 2.0, "the master still answered 2 s after DELETE"
        await asyncio.sleep(0.05)
    # nothing of it is answered any more, now or a while later
    for _ in range(2):
        for path in paths:
            async with viewer.get(f"{path}?{query}") as r:
                assert r.status == 404, path
        await asyncio.sleep(1.0)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)
async def test_a_new_clip_is_in_the_playlists_within_their_max_age(
    origin, viewer, cdn_settings, tmp_path
):
    scene, (user,) = await scene_with_users(origin)
    await publish(cdn_settings, scene, user, 1, [4.0, 2.5])
    query = token(scene)
    variant = f"/v/{scene}/720p.m3u8?{query}"
    async with viewer.get(variant) as r:
        assert r.status == 200
    sent_before = purges(await scrape(origin))

    clip = make_clip(tmp_path / "clip.mp4", width=320, height=180, duration=2.0)
    r = await origin.post(
        f"/api/v1/scenes/{scene}/segments",
        params={"contributor": user, "sequence": "2"},
        data=clip.read_bytes(),
        headers={**AUTH, "Content-Type": "video/mp4"},
    )
    assert r.status == 202, await r.text()
    new = (await r.json())["segmentId"]

    # players keep polling the cached playlist meanwhile
    async def poll_until_ready() -> float:
        while (await (await origin.get(f"/api/v1/segments/{new}")).json())[
            "status"
        ] == "processing":
            async with viewer.get(variant) as r:
                assert r.status == 200 and new not in await r.text()
            await asyncio.sleep(0.2)
        return time.monotonic()

    ready = await asyncio.wait_for(poll_until_ready(), 120)
    assert (await wait_done(origin, new))["status"] == "ready"
    while True:
        async with viewer.get(variant) as r:
            if new in await r.text():
                break
        assert time.monotonic() - ready < SCENE_MAX_AGE, "the new clip is not in the playlist"
        await asyncio.sleep(0.1)
    requests, tags = purges(await scrape(origin))
    assert requests > sent_before[0] and tags > sent_before[1]  # the publish purged


async def test_purges_are_retried_then_fail_and_are_counted(origin, cdn_settings, cache_url):
    nobody = f"http://127.0.0.1:{free_port()}/"
    sleeps: list[float] = []

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    async def count(backend: str, outcome: str, requests: int, items: int) -> None:
        await cdn.count_requests(pool, backend, outcome, requests, items)

    pool = await db.connect_pool(cdn_settings.database_url, size=2)
    session = aiohttp.ClientSession()
    purger = cdn.VarnishInvalidator(session, [cache_url + "/", nobody], attempts=3, sleep=no_wait)
    invalidations = cdn.Invalidations(purger, window=0.0, count=count)
    try:
        before = purges(await scrape(origin), "failed")
        stale = invalidation.scene_documents("scn_aaaaaaaaaaaa", ["720p"], query_variants=True)
        with pytest.raises(cdn.InvalidationFailed, match="after 3 attempts"):
            await invalidations.invalidate("scn_aaaaaaaaaaaa", stale)
        assert len(sleeps) == 2  # the unreachable one, retried with backoff
        after = purges(await scrape(origin), "failed")
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    finally:
        await invalidations.aclose()
        await pool.close()


async def test_stale_copies_within_swr_and_while_the_origin_fails(cdn_settings):
    """The VCL's grace rules against a scripted origin: a copy past max-age is answered
    within stale-while-revalidate (and fetched again behind it), past it the origin is
    asked first; when the origin answers 5xx or cannot be reached the stale copy is
    answered; purges come only from the ACL."""
    served: list[str] = []
    state = {"status": 200}

    async def document(request: web.Request) -> web.Response:
        served.append(request.path)
        if state["status"] != 200:
            return web.json_response({"error": {}}, status=state["status"])
        return web.Response(
            text=f"v{len(served)}",
            headers={
                "Cache-Control": "public, max-age=1, stale-while-revalidate=1",
                "Surrogate-Key": "scn_x scn_x.docs",
            },
        )

    app = web.Application()
    app.router.add_get("/v/{tail:.*}", document)
    origin_port, port = free_port(), free_port()
    server = TestServer(app, port=origin_port)
    await server.start_server(shutdown_timeout=0.5)  # Varnish keeps its connections
    # only ::1 may purge: this test's requests come from 127.0.0.1
    site = varnish.Site(origin_port=origin_port, purgers=("::1",), probe=False)
    try:
        with varnish.running(site, port, memory_mb=16) as url:
            async with aiohttp.ClientSession(url) as viewer:

                async def get() -> tuple[int, str, str]:
                    async with viewer.get("/v/scn_x/master.m3u8") as r:
                        assert leaked_tags(r.headers) == []
                        return r.status, await r.text(), r.headers["X-Cache"]

                assert await get() == (200, "v1", "MISS")
                assert await get() == (200, "v1", "HIT")
                await asyncio.sleep(1.3)  # past max-age, within stale-while-revalidate
                assert await get() == (200, "v1", "HIT")
                await asyncio.sleep(0.3)  # fetched again behind it
                assert await get() == (200, "v2", "HIT")
                await asyncio.sleep(2.5)  # past both: the origin is asked first
                assert (await get())[1] == "v3"
                await asyncio.sleep(2.5)
                state["status"] = 503
                asked = len(served)
                assert await get() == (200, "v3", "HIT")  # a stale copy beats a 5xx
                assert len(served) > asked  # the origin was asked all the same
                # the stale answer is fetched again behind it (and that fails too): let
                # that fetch reach the origin before closing it, else it can land on a
                # connection the closing server accepted and never answers, and Varnish
                # waits out the backend's first_byte_timeout (30 s) on it
                deadline = time.monotonic() + 10
                while len(served) < asked + 2:
                    assert time.monotonic() < deadline, "no background fetch behind the copy"
                    await asyncio.sleep(0.02)
                await server.close()  # the origin cannot be reached at all
                assert await get() == (200, "v3", "HIT")

                purger = cdn.VarnishInvalidator(aiohttp.ClientSession(), [url + "/"], attempts=3)
                try:
                    with pytest.raises(
                        cdn.InvalidationFailed, match=r"refused the purge .HTTP 403"
                    ):
                        await purger.send(invalidation.Request((cachetags.scene("scn_x"),)))
                finally:
                    await purger.aclose()
    finally:
        await server.close()


# --- storyforge dev --cdn ------------------------------------------------------------


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _route_requests(base: str, route: str) -> float:
    """The dev origin's /metrics request counter for `route`."""
    _, _, body = _get(base + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("storyforge_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)
def test_dev_with_cdn_serves_through_varnish(tmp_path):
    port, cdn_port = free_port(), free_port()
    env = {
        **os.environ,
        "LADDER": "240p:426x240:300k",
        "REFINE": "off",
        "CDN_INVALIDATION_WINDOW": "0.5",
    }
    proc = subprocess.Popen(
        [
            *varnish_dev_command(),
            "dev",
            "--home",
            str(tmp_path / "home"),
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-demo",
            "--cdn",
            "--cdn-port",
            str(cdn_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    base, cache = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{cdn_port}"
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        lines = [line for line in lines if not line.startswith("creating")]
        while len(lines) < 2:
            lines.append(proc.stdout.readline().strip())
        assert lines == [f"ready: {base}", f"cdn: {cache}"]
        token = (tmp_path / "home" / "api-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def call(method: str, path: str, body: object = None, **headers: str) -> dict:
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            request = urllib.request.Request(
                base + path, data=data, method=method, headers={**auth, **headers}
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                return json.load(r)

        user = call("POST", "/api/v1/users", {"username": "cdnviewer"})["id"]
        scene = call("POST", "/api/v1/scenes", {"title": "Through the cache"})["id"]
        clip = make_clip(tmp_path / "clip.mp4", width=426, height=240, duration=2.0)
        seg = call(
            "POST",
            f"/api/v1/scenes/{scene}/segments?contributor={user}&sequence=1",
            clip.read_bytes(),
            **{"Content-Type": "video/mp4"},
        )["segmentId"]
        deadline = time.monotonic() + 120
        while call("GET", f"/api/v1/segments/{seg}")["status"] == "processing":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        # the scene JSON names the cache, the origin's answers carry tags, the cache's none
        playlist = call("GET", f"/api/v1/scenes/{scene}/playlist")
        assert playlist["segments"][0]["hlsUrl"].startswith(cache + "/v/")
        ts = f"/v/{scene}/{seg}/{layout.media_segment_name('240p', 1)}"
        status, headers, body = _get(base + ts)
        assert status == 200 and headers["Surrogate-Key"].split() == [scene, seg, f"{seg}.g1"]

        before = _route_requests(base, SEGMENT_FILE_ROUTE)
        for _ in range(100):
            status, headers, got = _get(cache + ts)
            assert (status, got) == (200, body)
            assert leaked_tags(headers) == []
        assert _route_requests(base, SEGMENT_FILE_ROUTE) - before == 1

        assert _get(cache + f"/v/{scene}/master.m3u8")[0] == 200
        assert _get(cache + f"/v/{scene}/master.m3u8")[1]["X-Cache"] == "HIT"
        scene_docs = _route_requests(base, SCENE_DOCUMENT_ROUTE)
        call("DELETE", f"/api/v1/scenes/{scene}")
        deleted = time.monotonic()
        while _get(cache + f"/v/{scene}/master.m3u8")[0] != 404:
            assert time.monotonic() - deleted < 2.0, "the master still answered 2 s after DELETE"
            time.sleep(0.05)
        assert _route_requests(base, SCENE_DOCUMENT_ROUTE) > scene_docs
        assert _get(cache + ts)[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def varnish_dev_command() -> list[str]:
    from storyforge.dev.supervisor import STORYFORGE

    return STORYFORGE


def test_the_shipped_vcl_compiles_with_the_example_site():
    """docs/DEPLOY.md's recipe: storyforge.vcl beside a site file made from the example
    (in a directory Debian's varnish account can read)."""
    base = Path(tempfile.mkdtemp(prefix="storyforge-vcl-"))
    try:
        base.chmod(0o755)
        shutil.copyfile(varnish.VCL, base / "storyforge.vcl")
        shutil.copyfile(
            varnish.VCL.with_name("storyforge-site.vcl.example"), base / varnish.SITE_FILE
        )
        out = subprocess.run(
            [
                varnish.varnishd(),
                "-C",
                "-f",
                str(base / "storyforge.vcl"),
                "-p",
                f"vcl_path={base}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
