"""The read path over HTTP: segment files (ranges, conditionals, HEAD, CORS) on both
storage backends, stitched scene playlists, the scene JSON, assets, the player page,
and hostile paths. Published segments are set up through the real database and
storage (rows + objects), without ffmpeg."""

from __future__ import annotations

import dataclasses

import m3u8
import pytest
from aiohttp.test_utils import TestClient

from core import layout
from origin import keys
from origin.app import create_app
from tests.helpers.s3calls import s3_calls
from tests.helpers.scenes import TS_BYTES, publish, scene_with_users
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import on_moto


def _on_s3(settings, endpoint):
    return on_moto(settings, endpoint, cors_origins=("https://app.storyforge.io",))


@pytest.fixture(params=["local", "s3"])
def backend_settings(request, settings):
    if request.param == "local":
        return settings
    return _on_s3(settings, request.getfixturevalue("moto_endpoint"))


@pytest.fixture
async def client(backend_settings):
    async with TestClient(OriginTestServer(create_app(backend_settings))) as c:
        c.headers_auth = {"Authorization": "Bearer test-token-0123456789"}
        yield c


async def test_segment_file_headers_ranges_and_conditionals(client, backend_settings):
    scene, (user,) = await scene_with_users(client)
    seg = await publish(backend_settings, scene, user, 1, [4.0, 2.5])
    url = f"/v/{scene}/{seg}/720p_0001.ts"
    n = len(TS_BYTES)

    r = await client.get(url)
    assert r.status == 200
    assert await r.read() == TS_BYTES
    assert r.headers["Content-Type"] == "video/mp2t"
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.headers["Content-Length"] == str(n)
    assert r.headers["Accept-Ranges"] == "bytes"
    etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
    assert etag.startswith('"') or etag.startswith('W/"')

    r = await client.head(url)
    assert r.status == 200 and r.headers["Content-Length"] == str(n)
    assert await r.read() == b""

    cases = {
        "bytes=0-0": (0, 0),
        "bytes=-10": (n - 10, n - 1),
        "bytes=100-": (100, n - 1),
        "bytes=100-199": (100, 199),
        f"bytes=5-{n + 1000}": (5, n - 1),
    }
    for header, (start, end) in cases.items():
        r = await client.get(url, headers={"Range": header})
        assert r.status == 206, header
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{n}", header
        assert await r.read() == TS_BYTES[start : end + 1], header

    r = await client.get(url, headers={"Range": f"bytes={n}-"})
    assert r.status == 416
    assert r.headers["Content-Range"] == f"bytes */{n}"
    # multi-range may answer 200 with the whole body
    r = await client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert r.status in (200, 206)
    if r.status == 200:
        assert await r.read() == TS_BYTES

    r = await client.get(url, headers={"If-None-Match": etag})
    assert r.status == 304
    assert await r.read() == b""
    r = await client.get(url, headers={"If-Modified-Since": modified})
    assert r.status == 304
    r = await client.get(url, headers={"If-None-Match": '"something-else"'})
    assert r.status == 200


async def test_segment_file_on_s3_is_one_get_object(settings, moto_endpoint):
    """A `.ts` request costs one S3 call, whatever its Range and conditionals: S3
    evaluates them in the GetObject itself (no HEAD first); a HEAD costs one HeadObject."""
    s3_settings = _on_s3(settings, moto_endpoint)
    async with TestClient(OriginTestServer(create_app(s3_settings))) as client:
        client.headers_auth = {"Authorization": "Bearer test-token-0123456789"}
        scene, (user,) = await scene_with_users(client)
        seg = await publish(s3_settings, scene, user, 1, [4.0])
        url = f"/v/{scene}/{seg}/720p_0001.ts"
        assert (await client.get(url)).status == 200  # the segment is known ready from here
        storage = client.server.app[keys.STORAGE]
        n = len(TS_BYTES)
        with s3_calls(storage.client) as calls:
            r = await client.get(url)
            assert r.status == 200 and await r.read() == TS_BYTES
        assert calls == ["GetObject"]
        etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
        cases = [
            ({"Range": "bytes=100-199"}, 206),
            ({"Range": f"bytes={n}-"}, 416),
            ({"Range": "bytes=0-1,5-6"}, 200),
            ({"If-None-Match": etag}, 304),
            ({"If-Modified-Since": modified}, 304),
            ({"If-Match": '"other"'}, 412),
            ({"Range": "bytes=0-0", "If-Range": etag}, 206),
        ]
        for headers, status in cases:
            with s3_calls(storage.client) as calls:
                r = await client.get(url, headers=headers)
                assert r.status == status, headers
                await r.read()
            assert calls == ["GetObject"], headers
        with s3_calls(storage.client) as calls:
            assert (await client.head(url)).status == 200
        assert calls == ["HeadObject"]


async def test_cors(client, backend_settings):
    scene, (user,) = await scene_with_users(client)
    seg = await publish(backend_settings, scene, user, 1, [4.0])
    url = f"/v/{scene}/{seg}/1080p_0001.ts"
    origin = "https://app.storyforge.io"
    r = await client.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] in (origin, "*")
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    assert "Range" in r.headers["Access-Control-Allow-Headers"]
    r = await client.get(url, headers={"Origin": origin, "Range": "bytes=0-3"})
    assert r.status == 206
    assert r.headers["Access-Control-Allow-Origin"] in (origin, "*")
    exposed = r.headers["Access-Control-Expose-Headers"]
    assert "Content-Length" in exposed and "Content-Range" in exposed
    if backend_settings.cors_origins != ("*",):
        r = await client.options(
            url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert r.status == 403


async def test_only_ready_segments_of_live_scenes_are_served(client, backend_settings):
    scene, (user,) = await scene_with_users(client)
    processing = await publish(backend_settings, scene, user, 1, [4.0], ready=False)
    r = await client.get(f"/v/{scene}/{processing}/720p_0001.ts")
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "not_found"
    # a scene with no ready clip: 404 with a reason, not an empty playlist
    r = await client.get(f"/v/{scene}/master.m3u8")
    assert r.status == 404
    assert "no ready clip" in (await r.json())["error"]["message"]
    # a ready segment asked for under another scene
    other, _ = await scene_with_users(client, 0)
    ready = await publish(backend_settings, scene, user, 2, [4.0])
    assert (await client.get(f"/v/{scene}/{ready}/720p_0001.ts")).status == 200
    assert (await client.get(f"/v/{other}/{ready}/720p_0001.ts")).status == 404
    # unknown scene
    assert (await client.get("/v/scn_0000000000000000/master.m3u8")).status == 404


HOSTILE = [
    "/v/..%2F..%2Fetc/passwd",
    "/v/scn_0000000000000000/..%2F..%2F..%2Fetc%2Fpasswd",
    "/v/scn_0000000000000000/seg_0000000000000000/..%2F..%2Fmetadata.json",
    "/v/scn_0000000000000000/seg_0000000000000000/%2e%2e",
    "/v/scn_0000000000000000/seg_0000000000000000/720p_0001.ts%00",
    "/v/SCN_0000000000000000/master.m3u8",
    "/v/scn_0000000000000000/seg_0000000000000000/source.mp4/..",
    "/v/scn_0000000000000000/%2e%2e/%2e%2e/x",
    "/v/scn_" + "a" * 300 + "/master.m3u8",
    "/v/scn_0000000000000000/999999999999p.m3u8",
    "/a/avatars/..%2F..%2Fsecret",
    "/a/" + "%2e%2e/" * 5 + "etc/passwd",
    "/player/..%2Fx",
]


@pytest.mark.parametrize("path", HOSTILE)
async def test_hostile_paths_never_500(client, path):
    r = await client.get(path)
    assert r.status in (400, 404), (path, r.status)
    assert "root:" not in await r.text()


@pytest.mark.both_paths
async def test_stitched_scene_playlists(client, backend_settings):
    scene, users = await scene_with_users(client, 3)
    segs = [
        await publish(backend_settings, scene, users[0], 1, [4.0, 4.0, 1.2]),
        await publish(backend_settings, scene, users[1], 2, [4.0, 0.8]),
        await publish(backend_settings, scene, users[2], 3, [3.5]),
    ]
    r = await client.get(f"/v/{scene}/master.m3u8")
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert r.headers["Cache-Control"] == layout.SCENE_PLAYLIST_CACHE
    master = m3u8.loads(await r.text())
    assert [p.uri for p in master.playlists] == ["720p.m3u8", "1080p.m3u8"]
    r720 = await client.get(f"/v/{scene}/720p.m3u8")
    r1080 = await client.get(f"/v/{scene}/1080p.m3u8")
    t720, t1080 = await r720.text(), await r1080.text()
    assert t720 == t1080.replace("1080p_", "720p_")
    pl = m3u8.loads(t720)
    assert pl.target_duration == 4
    assert pl.is_endlist and pl.playlist_type == "vod"
    assert [s.discontinuity for s in pl.segments] == [False, False, False, True, False, True]
    assert [s.uri for s in pl.segments][:1] == [f"{segs[0]}/720p_0001.ts"]
    # the relative URIs resolve to files the origin serves
    r = await client.get(f"/v/{scene}/{pl.segments[3].uri}")
    assert r.status == 200
    # ETag from the scene version; an unchanged scene answers 304
    etag = r720.headers["ETag"]
    r = await client.get(f"/v/{scene}/720p.m3u8", headers={"If-None-Match": etag})
    assert r.status == 304
    # unknown variant
    assert (await client.get(f"/v/{scene}/480p.m3u8")).status == 404
    # storyboard on the scene timeline
    r = await client.get(f"/v/{scene}/storyboard.vtt")
    assert r.status == 200
    vtt = await r.text()
    assert vtt.startswith("WEBVTT")
    assert f"{segs[1]}/storyboard.jpg#xywh=0,0,160,90" in vtt
    assert "00:00:09.200 --> " in vtt  # the second clip starts after 4 + 4 + 1.2 s


async def test_scene_playlist_json_matches_seed_5_1(client, backend_settings):
    scene, users = await scene_with_users(client, 2, title="Chapter One")
    a = await publish(backend_settings, scene, users[0], 1, [4.0, 1.0])
    b = await publish(backend_settings, scene, users[1], 2, [3.0])
    r = await client.get(f"/api/v1/scenes/{scene}/playlist")
    assert r.status == 200
    body = await r.json()
    assert set(body) == {
        "sceneId",
        "title",
        "totalDuration",
        "segmentCount",
        "segments",
        "updatedAt",
        "hlsUrl",
        "storyboardUrl",
        "chaptersUrl",
        "subtitles",
    }
    assert body["subtitles"] == []  # no clip has captions
    assert body["sceneId"] == scene and body["title"] == "Chapter One"
    assert body["segmentCount"] == 2 and body["totalDuration"] == 8.0
    assert [s["id"] for s in body["segments"]] == [a, b]
    first, second = body["segments"]
    assert set(first) == {
        "id",
        "sequence",
        "duration",
        "startTime",
        "hlsUrl",
        "thumbnailUrl",
        "contributor",
        "captions",
    }
    assert first["captions"] == []
    assert second["startTime"] == 5.0 and second["sequence"] == 2
    assert first["hlsUrl"] == f"/v/{scene}/{a}/master.m3u8"
    assert first["thumbnailUrl"] == f"/v/{scene}/{a}/thumbnail.jpg"
    assert set(first["contributor"]) == {"id", "username"}
    assert body["hlsUrl"] == f"/v/{scene}/master.m3u8"
    assert body["chaptersUrl"] == f"/v/{scene}/chapters.vtt"
    assert body["updatedAt"].endswith("Z")


async def test_cdn_base_makes_urls_absolute(settings):
    cdn = dataclasses.replace(settings, cdn_base_url="https://cdn.storyforge.io")
    async with TestClient(OriginTestServer(create_app(cdn))) as c:
        c.headers_auth = {"Authorization": "Bearer test-token-0123456789"}
        scene, (user,) = await scene_with_users(c)
        seg = await publish(cdn, scene, user, 1, [4.0])
        pl = await (await c.get(f"/v/{scene}/720p.m3u8")).text()
        assert f"https://cdn.storyforge.io/v/{scene}/{seg}/720p_0001.ts" in pl
        body = await (await c.get(f"/api/v1/scenes/{scene}/playlist")).json()
        assert body["hlsUrl"] == f"https://cdn.storyforge.io/v/{scene}/master.m3u8"


async def test_player_page_and_static(client):
    scene, _ = await scene_with_users(client, 0, title="</script><b>x")
    r = await client.get(f"/player/{scene}")
    assert r.status == 200
    html = await r.text()
    assert "/static/hls.min.js" in html and f"/v/{scene}/master.m3u8" in html
    assert "</script><b>x" not in html  # the title cannot break out of the config block
    r = await client.get("/static/hls.min.js")
    assert r.status == 200 and len(await r.read()) > 100_000
    assert (await client.get("/static/../pyproject.toml")).status == 404
    assert (await client.get("/player/scn_0000000000000000")).status == 404
