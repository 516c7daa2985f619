"""Signed URLs over HTTP. hmac mode: unsigned, forged, garbage and expired requests
to /v/ are 403 JSON; the token minted by the scene JSON (and the player page)
reaches every child URI of every document the origin serves, and each of them
answers 200. cloudfront mode: the origin secret header, the custom-policy query
carried to children, signed cookies. And hls.js in Chromium plays a signed
stitched scene with every /v/ request verified."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from urllib.parse import parse_qsl, urljoin, urlsplit

import m3u8
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from core import layout, playlists, signing
from core.storage import open_configured_storage
from origin import keys
from origin.app import create_app
from tests.helpers.browser import CHROMIUM, NO_CHROMIUM_REASON, Browser
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_PAIR
from tests.helpers.scenes import (
    API_TOKEN,
    TS_BYTES,
    new_scene,
    publish,
    scene_with_users,
    upload,
    wait_done,
)
from tests.helpers.servers import OriginTestServer

KEY = signing.HmacKey("k2026", b"test-hmac-secret-0123456789")
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ORIGIN_SECRET = "cdn-origin-secret-0123456789"
CDN = "https://cdn.storyforge.io"
KP = "K2JCJMDEHXQW5F"
_PROFILES = {
    "720p": (1280, 720, 1_500_000, "avc1.4d401f,mp4a.40.2"),
    "1080p": (1920, 1080, 4_000_000, "avc1.640028,mp4a.40.2"),
}


@pytest.fixture
def settings(settings):
    """Every test here runs the origin (and workers) in hmac mode."""
    return dataclasses.replace(settings, signing="hmac", hmac_keys=(KEY,))


async def _put(settings, scene: str, seg: str, name: str, data: bytes) -> None:
    storage = await open_configured_storage(settings)
    try:
        meta = layout.file_meta(name)
        await storage.put(
            settings.videos_bucket,
            layout.segment_key(scene, seg, name),
            data,
            content_type=meta.content_type,
            cache_control=meta.cache_control,
            tags={"type": meta.tag},
        )
    finally:
        await storage.aclose()


async def publish_full(settings, scene: str, user: str, sequence: int, durations) -> str:
    """A ready segment with every file a transcoded one has: .ts files, its own master
    and media playlists, thumbnail, storyboard sheet and VTT."""
    seg = await publish(settings, scene, user, sequence, durations)
    renditions = [
        playlists.Rendition(
            p, w, h, 30.0, codecs, durations, [len(TS_BYTES)] * len(durations), bw, bw * 3 // 4
        )
        for p, (w, h, bw, codecs) in _PROFILES.items()
    ]
    files = {
        "master.m3u8": playlists.clip_master_playlist(renditions).encode(),
        "thumbnail.jpg": b"\xff\xd8jpeg",
        "storyboard.jpg": b"\xff\xd8sheet",
        "storyboard.vtt": (
            b"WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90\n"
        ),
    }
    for r in renditions:
        files[f"{r.profile}.m3u8"] = playlists.clip_media_playlist(r).encode()
    for name, data in files.items():
        await _put(settings, scene, seg, name, data)
    return seg


@pytest.fixture
async def signed_scene(origin_client, settings):
    scene, (u1, u2) = await scene_with_users(origin_client, 2)
    segs = [
        await publish_full(settings, scene, u1, 1, [4.0, 2.0]),
        await publish_full(settings, scene, u2, 2, [3.0]),
    ]
    return scene, segs


def _forbidden(body) -> str:
    assert set(body) == {"error"} and body["error"]["code"] == "forbidden", body
    return body["error"]["message"]


def _flip_sig(query: str) -> str:
    head, sig = query.rsplit("sig=", 1)
    return f"{head}sig={'B' if sig[0] == 'A' else 'A'}{sig[1:]}"


def _stats(client):
    return client.server.app[keys.SIGNING].stats


def _token_of(url: str) -> str:
    return urlsplit(url).query


async def _crawl(client, start: list[str], query: str) -> dict[str, int]:
    """Fetch every URL reachable from `start` through playlists and VTTs; assert each
    child URI carries exactly `query`. Returns {path: status}."""
    seen: dict[str, int] = {}
    todo = list(start)
    while todo:
        url = todo.pop()
        path = urlsplit(url).path
        if path in seen:
            continue
        assert _token_of(url) == query, url
        r = await client.get(url)
        seen[path] = r.status
        assert r.status == 200, (url, r.status, await r.text())
        children: list[str] = []
        if path.endswith(".m3u8"):
            doc = m3u8.loads(await r.text())
            children = [p.uri for p in doc.playlists] + [s.uri for s in doc.segments]
        elif path.endswith(".vtt"):
            children = re.findall(r"^(\S+?)(?:#xywh=\S+)?$", await r.text(), re.M)
            children = [c for c in children if c != "WEBVTT" and "-->" not in c]
        else:
            await r.read()
        todo += [urljoin(url, c) for c in children]
    return seen


# -------------------------------------------------------------------- hmac mode


@pytest.mark.both_paths
async def test_unsigned_forged_and_garbage_requests_are_403(origin_client, signed_scene):
    client = origin_client
    scene, (seg, _) = signed_scene
    ts = f"/v/{scene}/{seg}/720p_0001.ts"
    for url in (ts, f"/v/{scene}/master.m3u8", f"/v/{scene}/{seg}/master.m3u8"):
        r = await client.get(url)
        assert r.status == 403 and r.content_type == "application/json"
        assert _forbidden(await r.json()).startswith("missing token")
        assert r.headers["Cache-Control"] == "no-store"
    assert (await client.head(ts)).status == 403
    good = _token_of(
        (await (await client.get(f"/api/v1/scenes/{scene}/playlist", headers=AUTH)).json())[
            "hlsUrl"
        ]
    )
    assert (await client.get(f"{ts}?{good}")).status == 200
    other, _ = await scene_with_users(client, 0)
    garbage = [
        _flip_sig(good),  # forged: one character of the signature changed
        good + "&" + good,
        good + "&kid=k2026",
        "exp=99999999999&kid=k2026&sig=" + "A" * 43,
        "exp=" + "9" * 5000 + "&kid=k2026&sig=x",
        "exp=%FF%FE&kid=%E2%98%83&sig=%00%0A",
        "exp=1&kid=k2026&sig=\u00e9\u00e9",
        "%" * 2000,
        "&&&===&&",
        signing.mint_token(f"/v/{other}/", 4_000_000_000, KEY).query,  # another scene
        signing.mint_token(f"/v/{scene}/", 4_000_000_000, signing.HmacKey("old", b"x" * 20)).query,
    ]
    for query in garbage:
        r = await client.get(f"{ts}?{query}")
        assert r.status == 403, (query, r.status)
        _forbidden(await r.json())
    # the scene id is validated before anything else: hostile paths never reach storage
    for path in (
        f"/v/..%2F..%2Fetc/passwd?{good}",
        f"/v/{scene}/..%2F..%2F..%2Fetc%2Fpasswd?{good}",
        f"/v/SCN_{scene[4:]}/master.m3u8?{good}",
        f"/v/{other}/{seg}/720p_0001.ts?{good}",
        "/v/scn_" + "a" * 300 + "/master.m3u8",
    ):
        r = await client.get(path)
        assert r.status in (403, 404), (path, r.status)
        assert r.status != 500
    stats = _stats(client)
    # verified: the good .ts, and the traversal under the token's own scene (which the
    # handler then refuses with 404: the token covers a prefix, names are still checked)
    assert stats.denied == len(garbage) + 4 + 4 and stats.verified == 2


@pytest.mark.both_paths
async def test_the_token_reaches_every_child_and_each_answers_200(origin_client, signed_scene):
    client = origin_client
    scene, segs = signed_scene
    url = f"/api/v1/scenes/{scene}/playlist"
    r = await client.get(url)
    assert r.status == 401  # with signing on, minting takes the bearer token
    r = await client.get(url, headers=AUTH)
    assert r.status == 200 and r.headers["Cache-Control"] == "private, no-store"
    body = await r.json()
    query = _token_of(body["hlsUrl"])
    fields = dict(parse_qsl(query))
    assert list(fields) == ["exp", "kid", "sig"] and fields["kid"] == "k2026"
    assert body["expiresAt"].endswith("Z")
    urls = [body["hlsUrl"], body["storyboardUrl"], body["chaptersUrl"]]
    for s in body["segments"]:
        urls += [s["hlsUrl"], s["thumbnailUrl"]]
    assert all(_token_of(u) == query for u in urls)
    before = _stats(client).verified
    seen = await _crawl(client, urls, query)
    # stitched master + 2 variants + VTT; per segment: master, 2 media playlists,
    # thumbnail, storyboard sheet; the .ts files of both variants
    assert f"/v/{scene}/720p.m3u8" in seen and f"/v/{scene}/1080p.m3u8" in seen
    for seg in segs:
        assert f"/v/{scene}/{seg}/1080p.m3u8" in seen
        assert f"/v/{scene}/{seg}/storyboard.jpg" in seen
        assert f"/v/{scene}/{seg}/720p_0001.ts" in seen
    assert sum(p.endswith(".ts") for p in seen) == 2 * 3
    assert _stats(client).verified - before == len(seen) and _stats(client).denied == 0
    # per-segment VTT (stored) is rewritten too
    r = await client.get(f"/v/{scene}/{segs[0]}/storyboard.vtt?{query}")
    assert f"storyboard.jpg?{query}#xywh=0,0,160,90" in await r.text()
    # the cached template serves another viewer's token without a rebuild
    other = signing.mint_token(f"/v/{scene}/", 4_000_000_000, KEY).query
    text = await (await client.get(f"/v/{scene}/720p.m3u8?{other}")).text()
    assert other in text and query not in text
    text = await (await client.get(f"/v/{scene}/{segs[0]}/720p.m3u8?{other}")).text()
    assert f"720p_0002.ts?{other}" in text and query not in text
    # conditional GET still works on signed documents
    r = await client.get(f"/v/{scene}/720p.m3u8?{other}")
    r2 = await client.get(
        f"/v/{scene}/720p.m3u8?{other}", headers={"If-None-Match": r.headers["ETag"]}
    )
    assert r2.status == 304


@pytest.mark.both_paths
async def test_expired_token_is_403(origin_client, signed_scene):
    client = origin_client
    scene, (seg, _) = signed_scene
    state = client.server.app[keys.SIGNING]
    now = 1_800_000_000
    state.clock = lambda: now
    body = await (await client.get(f"/api/v1/scenes/{scene}/playlist", headers=AUTH)).json()
    query = _token_of(body["hlsUrl"])
    assert dict(parse_qsl(query))["exp"] == str(now + 21600)
    ts = f"/v/{scene}/{seg}/720p_0001.ts?{query}"
    state.clock = lambda: now + 21599
    assert (await client.get(ts)).status == 200
    state.clock = lambda: now + 21600
    r = await client.get(ts)
    assert r.status == 403 and _forbidden(await r.json()) == "token expired"
    r = await client.get(f"/v/{scene}/master.m3u8?{query}")
    assert r.status == 403


async def test_ip_binding(settings, signed_scene):
    bound = dataclasses.replace(settings, hmac_bind_ip=True)
    scene, (seg, _) = signed_scene
    async with TestClient(OriginTestServer(create_app(bound))) as client:
        url = f"/api/v1/scenes/{scene}/playlist"
        mine = _token_of((await (await client.get(url, headers=AUTH)).json())["hlsUrl"])
        assert dict(parse_qsl(mine))["ip"] == "127.0.0.1"
        ts = f"/v/{scene}/{seg}/720p_0001.ts"
        assert (await client.get(f"{ts}?{mine}")).status == 200
        # the app asks for a token bound to its viewer's address
        r = await client.get(url, params={"viewerIp": "203.0.113.5"}, headers=AUTH)
        theirs = _token_of((await r.json())["hlsUrl"])
        assert dict(parse_qsl(theirs))["ip"] == "203.0.113.5"
        r = await client.get(f"{ts}?{theirs}")
        assert r.status == 403
        assert _forbidden(await r.json()) == "token is bound to another client address"
        # an unbound token is not enough when binding is on
        unbound = signing.mint_token(f"/v/{scene}/", 4_000_000_000, KEY).query
        assert (await client.get(f"{ts}?{unbound}")).status == 403
        r = await client.get(url, params={"viewerIp": "nope"}, headers=AUTH)
        assert r.status == 400


async def test_player_page_is_signed(origin_client, signed_scene):
    client = origin_client
    scene, segs = signed_scene
    r = await client.get(f"/player/{scene}")
    assert r.status == 200 and r.headers["Cache-Control"] == "private, no-store"
    html = await r.text()
    cfg = json.loads(re.search(r'<script id="cfg" type="application/json">(.*?)</script>', html)[1])
    query = _token_of(cfg["masterUrl"])
    assert cfg["masterUrl"] == f"/v/{scene}/master.m3u8?{query}"
    assert cfg["storyboardUrl"] == f"/v/{scene}/storyboard.vtt?{query}"
    assert cfg["chaptersUrl"] == f"/v/{scene}/chapters.vtt?{query}"
    prefix = "data:application/json;base64,"
    assert cfg["playlistUrl"].startswith(prefix)
    inline = json.loads(base64.b64decode(cfg["playlistUrl"][len(prefix) :]))
    assert inline["sceneId"] == scene and len(inline["segments"]) == 2
    assert all(_token_of(s["hlsUrl"]) == query for s in inline["segments"])
    assert (await client.get(cfg["masterUrl"])).status == 200
    # no cookies endpoint outside cloudfront mode
    assert (await client.get(f"/api/v1/scenes/{scene}/cookies", headers=AUTH)).status == 404


# -------------------------------------------------------------- cloudfront mode


@pytest.fixture(scope="module")
def cf_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
async def cf_client(settings, cf_pem):
    cf = dataclasses.replace(
        settings,
        signing="cloudfront",
        hmac_keys=(),
        cdn_base_url=CDN,
        cloudfront_key_pair_id=KP,
        cloudfront_private_key=cf_pem,
        origin_secret=ORIGIN_SECRET,
    )
    async with TestClient(OriginTestServer(create_app(cf))) as c:
        c.cf_settings = cf
        c.headers_auth = AUTH
        yield c


def _cf_b64decode(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


@pytest.mark.both_paths
async def test_cloudfront_origin_secret_policy_propagation_and_cookies(cf_client, cf_pem):
    client = cf_client
    scene, (user,) = await scene_with_users(client, 1)
    seg = await publish_full(client.cf_settings, scene, user, 1, [4.0, 2.0])
    ts = f"/v/{scene}/{seg}/720p_0001.ts"
    # origin secret header: the CDN adds it; anyone else is refused
    r = await client.get(ts)
    assert r.status == 403
    assert _forbidden(await r.json()) == "missing or wrong origin secret header"
    r = await client.get(ts, headers={"X-Origin-Secret": ORIGIN_SECRET[:-1] + "x"})
    assert r.status == 403
    secret = {"X-Origin-Secret": ORIGIN_SECRET}
    assert (await client.get(ts, headers=secret)).status == 200

    # the scene JSON carries a custom policy over the scene prefix, signed by our key
    body = await (await client.get(f"/api/v1/scenes/{scene}/playlist", headers=AUTH)).json()
    assert body["hlsUrl"].startswith(f"{CDN}/v/{scene}/master.m3u8?Policy=")
    query = _token_of(body["hlsUrl"])
    params = dict(parse_qsl(query))
    policy = _cf_b64decode(params["Policy"])
    statement = json.loads(policy)["Statement"][0]
    assert statement["Resource"] == f"{CDN}/v/{scene}/*"
    public = serialization.load_pem_private_key(cf_pem.encode(), None).public_key()
    public.verify(_cf_b64decode(params["Signature"]), policy, padding.PKCS1v15(), hashes.SHA1())
    assert params["Key-Pair-Id"] == KP
    assert all(_token_of(s["thumbnailUrl"]) == query for s in body["segments"])

    # CloudFront forwards the viewer's query: every child gets the same policy query
    for path in (
        f"/v/{scene}/master.m3u8",
        f"/v/{scene}/720p.m3u8",
        f"/v/{scene}/{seg}/master.m3u8",
    ):
        text = await (await client.get(f"{path}?{query}", headers=secret)).text()
        uris = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        assert uris and all(u.startswith(CDN) or "/" not in u for u in uris)
        assert all(u.endswith("?" + query) for u in uris), text
    # a viewer on signed cookies: no query to forward, children stay bare
    text = await (await client.get(f"/v/{scene}/720p.m3u8", headers=secret)).text()
    assert f"{CDN}/v/{scene}/{seg}/720p_0001.ts\n" in text and "?" not in text
    # a forwarded query that is not a well-formed custom policy is never echoed
    text = await (
        await client.get(
            f"/v/{scene}/720p.m3u8?Policy=a%0A%23EXT-X-KEY&Signature=b&Key-Pair-Id=K",
            headers=secret,
        )
    ).text()
    assert "#EXT-X-KEY" not in text and "?" not in text

    # signed cookies for the scene prefix
    url = f"/api/v1/scenes/{scene}/cookies"
    assert (await client.get(url)).status == 401
    r = await client.get(url, headers=AUTH)
    assert r.status == 200
    data = await r.json()
    assert set(data["cookies"]) == {
        "CloudFront-Policy",
        "CloudFront-Signature",
        "CloudFront-Key-Pair-Id",
    }
    assert data["path"] == f"/v/{scene}/"
    set_cookies = r.headers.getall("Set-Cookie")
    assert len(set_cookies) == 3
    for header in set_cookies:
        name, _, rest = header.partition("=")
        assert rest.startswith(data["cookies"][name] + ";")
        attrs = {a.strip().split("=")[0].lower(): a for a in rest.split(";")[1:]}
        assert {"secure", "httponly", "path", "samesite", "expires"} <= set(attrs)
        assert attrs["path"].strip() == f"Path=/v/{scene}/"
        assert attrs["samesite"].strip() == "SameSite=None"
    policy = _cf_b64decode(data["cookies"]["CloudFront-Policy"])
    assert json.loads(policy)["Statement"][0]["Resource"] == f"{CDN}/v/{scene}/*"
    public.verify(
        _cf_b64decode(data["cookies"]["CloudFront-Signature"]),
        policy,
        padding.PKCS1v15(),
        hashes.SHA1(),
    )
    r = await client.get("/api/v1/scenes/scn_0000000000000000/cookies", headers=AUTH)
    assert r.status == 404


# ----------------------------------------------------------------------- browser


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON)
@pytest.mark.parametrize("ladder", [SMALL_PAIR], ids=["two-small-rungs"])
async def test_hlsjs_plays_a_signed_scene(origin_client, run_workers, clips):
    client = origin_client
    scene, users = await new_scene(client, 2)
    sources = [  # both fill both rungs (a smaller source gets no 360p: issue 26)
        clips.get(width=640, height=360, fps=30, duration=4),
        clips.get(width=640, height=360, fps=25, duration=4, audio=None),
    ]
    segs = []
    for i, (clip, user) in enumerate(zip(sources, users, strict=True), start=1):
        segs.append((await upload(client, scene, user, clip, sequence=i))["segmentId"])
    run_workers(concurrency=2)
    for seg in segs:
        assert (await wait_done(client, seg, timeout=240))["status"] == "ready"
    stats = _stats(client)
    assert stats.verified == stats.denied == 0

    async with Browser() as b:
        await b.goto(str(client.make_url(f"/player/{scene}")))
        await b.wait_for(
            "window.sf && sf.hls && sf.scene && sf.events.some(e => e.kind === 'manifest')",
            what="manifest parsed",
        )
        assert await b.eval("sf.hls.levels.length") == 2
        await b.eval(
            "(() => { const v = document.getElementById('video'); "
            "v.playbackRate = 2; return v.play().then(() => true); })()"
        )
        await b.wait_for(
            "sf.events.some(e => e.kind === 'ended') || sf.fatal", timeout=60, what="ended"
        )
        assert await b.eval("sf.fatal") is None
        assert await b.eval("sf.ccSeen") == [0, 1]
        fragments = await b.eval("sf.hls.levels[0].details.fragments.length")
        master = await b.eval("sf.hls.url")
        assert "sig=" in master
        cues = await b.eval("sf.cues.length")
        assert cues >= 1
    # every /v/ request the player made carried a valid token
    assert stats.denied == 0, stats.reasons
    assert stats.verified_segments >= fragments
    assert stats.verified >= fragments + 3  # + master, a variant, the storyboard VTT
    # and one of its .ts files without the token is refused
    r = await client.get(f"/v/{scene}/{segs[0]}/{SMALL_PAIR[0].name}_0001.ts")
    assert r.status == 403 and stats.denied == 1
    _forbidden(await r.json())
