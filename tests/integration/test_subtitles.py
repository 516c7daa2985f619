"""The subtitles rendition over HTTP (issue 27): a 3-clip scene whose clips have
different first PTS, one without captions; the stitched master names the languages,
the subtitles playlist (from memory, by the fast path too, ETag/304) has the video's
segments and discontinuities, each WebVTT segment the cues of its moment with its
clip's X-TIMESTAMP-MAP; a caption change is a new document; signed like every other
URI; 200 concurrent warm GETs touch no database. Published segments are set up
through the real database and storage, without ffmpeg."""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import urljoin, urlsplit

import m3u8
import pytest
from aiohttp.test_utils import TestClient

from core import db, signing
from origin.app import create_app
from tests.helpers.metrics import requests, scrape
from tests.helpers.scenes import API_TOKEN, publish, put_captions, scene_with_users
from tests.helpers.servers import OriginTestServer

ROUTE = "/v/{scene_id}/{name}"
EN_1 = b"WEBVTT\n\n00:00.500 --> 00:01.500\none\n\n00:03.500 --> 00:04.500\ntwo\n"
EN_3 = b"WEBVTT\n\n00:01.000 --> 00:05.000\nthree\n\n00:09.000 --> 00:12.000\nfour\n"
FR_3 = b"1\n00:00:02,000 --> 00:00:03,000\nquatre\n"


async def three_clips(client, settings) -> tuple[str, list[str], dict[str, int]]:
    scene, users = await scene_with_users(client, 2)
    segs = [
        await publish(settings, scene, users[0], 1, [4.0, 2.0], first_pts=126_000),
        await publish(settings, scene, users[1], 2, [3.0], first_pts=133_500),
        await publish(settings, scene, users[0], 3, [4.0, 4.0, 1.5], first_pts=129_600),
    ]
    revisions = {
        "en1": await put_captions(client, segs[0], "en", EN_1),
        "en3": await put_captions(client, segs[2], "en", EN_3),
        "fr3": await put_captions(client, segs[2], "fr", FR_3, "application/x-subrip"),
    }
    return scene, segs, revisions


@pytest.mark.both_paths
async def test_stitched_subtitles(origin_client, settings, clock):
    client = origin_client
    scene, (a, b, c), rev = await three_clips(client, settings)
    master = await (await client.get(f"/v/{scene}/master.m3u8")).text()
    parsed = m3u8.loads(master)
    assert [
        (m.type, m.language, m.uri, m.default, m.autoselect, m.forced) for m in parsed.media
    ] == [
        ("SUBTITLES", "en", "subs_en.m3u8", "NO", "YES", "NO"),
        ("SUBTITLES", "fr", "subs_fr.m3u8", "NO", "YES", "NO"),
    ]
    assert len(parsed.playlists) == 2
    assert all(p.stream_info.subtitles == "subs" for p in parsed.playlists)

    r = await client.get(f"/v/{scene}/subs_en.m3u8")
    assert r.status == 200 and r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert r.headers["Cache-Control"] == "public, max-age=5, stale-while-revalidate=30"
    etag = r.headers["ETag"]
    text = await r.text()
    assert text == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        f"#EXTINF:4.000,\n{a}/subs_en_g1_r{rev['en1']}_0001.vtt\n"
        f"#EXTINF:2.000,\n{a}/subs_en_g1_r{rev['en1']}_0002.vtt\n"
        "#EXT-X-DISCONTINUITY\n"
        f"#EXTINF:3.000,\n{b}/subs_en_g1_r0_0001.vtt\n"
        "#EXT-X-DISCONTINUITY\n"
        f"#EXTINF:4.000,\n{c}/subs_en_g1_r{rev['en3']}_0001.vtt\n"
        f"#EXTINF:4.000,\n{c}/subs_en_g1_r{rev['en3']}_0002.vtt\n"
        f"#EXTINF:1.500,\n{c}/subs_en_g1_r{rev['en3']}_0003.vtt\n"
        "#EXT-X-ENDLIST\n"
    )
    # the video variants' segments and discontinuities, one for one
    video = await (await client.get(f"/v/{scene}/720p.m3u8")).text()
    tags = [line for line in video.splitlines() if line.startswith("#")]
    assert tags == [line for line in text.splitlines() if line.startswith("#")]

    found = []
    for uri in [s.uri for s in m3u8.loads(text).segments]:
        r = await client.get(urljoin(f"/v/{scene}/", uri))
        assert r.status == 200 and r.headers["Content-Type"] == "text/vtt; charset=utf-8"
        found.append(await r.text())
    head_a = "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n"
    head_c = "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:129600,LOCAL:00:00:00.000\n\n"
    assert found == [
        head_a + "00:00:00.500 --> 00:00:01.500\none\n\n00:00:03.500 --> 00:00:04.500\ntwo\n\n",
        head_a + "00:00:03.500 --> 00:00:04.500\ntwo\n\n",  # a cue in two segments: in both
        "WEBVTT\n\n",  # the clip without captions: an empty segment
        head_c + "00:00:01.000 --> 00:00:05.000\nthree\n\n",
        head_c + "00:00:01.000 --> 00:00:05.000\nthree\n\n",
        # clamped to the clip's 9.5 s on the timeline: it never shows in another clip
        head_c + "00:00:09.000 --> 00:00:09.500\nfour\n\n",
    ]

    # warm: from memory (the fast path's when it is on), and a 304
    before = await scrape(client)
    r = await client.get(f"/v/{scene}/subs_en.m3u8")
    assert r.status == 200 and r.headers["ETag"] == etag
    r = await client.get(f"/v/{scene}/subs_en.m3u8", headers={"If-None-Match": etag})
    assert r.status == 304
    after = await scrape(client)
    by = "fast_path" if settings.fast_path else "app"
    assert requests(after, ROUTE, 200, by) - requests(before, ROUTE, 200, by) == 1
    assert requests(after, ROUTE, 304, by) - requests(before, ROUTE, 304, by) == 1

    # a caption change is a new scene version: new documents, new segment names; the
    # old names are gone
    new = await put_captions(client, b, "en", b"WEBVTT\n\n00:00.000 --> 00:01.000\nb\n")
    clock.skip(1.0)
    r = await client.get(f"/v/{scene}/subs_en.m3u8", headers={"If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag
    assert f"{b}/subs_en_g1_r{new}_0001.vtt" in await r.text()
    assert (await client.get(f"/v/{scene}/{b}/subs_en_g1_r{new}_0001.vtt")).status == 200
    r = await client.get(f"/v/{scene}/{b}/subs_en_g1_r0_0001.vtt")  # r0: always empty
    assert r.status == 200 and await r.text() == "WEBVTT\n\n"
    assert (await client.get(f"/v/{scene}/{b}/subs_en_g1_r{new + 99}_0001.vtt")).status == 404
    assert (await client.get(f"/v/{scene}/{b}/subs_en_g2_r{new}_0001.vtt")).status == 404
    assert (await client.get(f"/v/{scene}/{b}/subs_en_g1_r{new}_0002.vtt")).status == 404
    assert (await client.get(f"/v/{scene}/subs_de.m3u8")).status == 404
    # removing the only captions in a language takes the rendition away
    r = await client.delete(f"/api/v1/segments/{c}/captions/fr", headers=client.headers_auth)
    assert r.status == 204
    master = await (await client.get(f"/v/{scene}/master.m3u8")).text()
    assert "subs_fr.m3u8" not in master and "subs_en.m3u8" in master
    assert (await client.get(f"/v/{scene}/subs_fr.m3u8")).status == 404


async def test_the_scene_json_lists_languages_and_subtitles(origin_client, settings):
    client = origin_client
    scene, (a, b, c), _ = await three_clips(client, settings)
    body = await (await client.get(f"/api/v1/scenes/{scene}/playlist")).json()
    assert [(s["id"], s["captions"]) for s in body["segments"]] == [
        (a, ["en"]),
        (b, []),
        (c, ["en", "fr"]),
    ]
    assert body["subtitles"] == [
        {"language": "en", "url": f"/v/{scene}/subs_en.m3u8"},
        {"language": "fr", "url": f"/v/{scene}/subs_fr.m3u8"},
    ]


async def test_a_clips_own_subtitles(origin_client, settings):
    client = origin_client
    scene, (a, b, _), rev = await three_clips(client, settings)
    master = await (await client.get(f"/v/{scene}/{a}/master.m3u8")).text()
    assert [m.uri for m in m3u8.loads(master).media] == ["subs_en.m3u8"]
    r = await client.get(f"/v/{scene}/{a}/subs_en.m3u8")
    assert r.status == 200
    assert r.headers["Cache-Control"] == "public, max-age=5, stale-while-revalidate=30"
    assert [s.uri for s in m3u8.loads(await r.text()).segments] == [
        f"subs_en_g1_r{rev['en1']}_0001.vtt",
        f"subs_en_g1_r{rev['en1']}_0002.vtt",
    ]
    # a clip without captions names none
    master = await (await client.get(f"/v/{scene}/{b}/master.m3u8")).text()
    assert "SUBTITLES" not in master
    assert (await client.get(f"/v/{scene}/{b}/subs_en.m3u8")).status == 404
    # the clip's master follows its captions (not only its generation)
    await put_captions(client, b, "de", EN_1)
    master = await (await client.get(f"/v/{scene}/{b}/master.m3u8")).text()
    assert [m.uri for m in m3u8.loads(master).media] == ["subs_de.m3u8"]


async def test_a_clip_without_a_recorded_first_pts_has_empty_segments(origin_client, settings):
    """Renditions published before migration 0010 have no first PTS: nothing to map
    their cues by, so their subtitles segments stay empty rather than misplaced."""
    client = origin_client
    scene, (user,) = await scene_with_users(client)
    seg = await publish(settings, scene, user, 1, [2.0])
    await put_captions(client, seg, "en", EN_1)
    text = await (await client.get(f"/v/{scene}/subs_en.m3u8")).text()
    assert [s.uri for s in m3u8.loads(text).segments] == [f"{seg}/subs_en_g1_r0_0001.vtt"]
    r = await client.get(f"/v/{scene}/{seg}/subs_en_g1_r0_0001.vtt")
    assert r.status == 200 and await r.text() == "WEBVTT\n\n"


class FrozenClock:
    """The read caches' clock, standing still: every request below is within the
    version's TTL, i.e. warm."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.both_paths
async def test_200_concurrent_warm_gets_make_no_database_round_trip(settings, monkeypatch):
    clock = FrozenClock()
    async with TestClient(OriginTestServer(create_app(settings, clock=clock))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        scene, _, _ = await three_clips(client, settings)
        paths = [f"/v/{scene}/subs_en.m3u8", f"/v/{scene}/720p.m3u8"]
        warm = {p: await (await client.get(p)).read() for p in paths}
        acquired: list[str] = []
        acquire = db.OutagePool.acquire

        def counting(self, *, timeout=None):
            acquired.append("acquire")
            return acquire(self, timeout=timeout)

        monkeypatch.setattr(db.OutagePool, "acquire", counting)

        async def get(path: str) -> tuple[int, bytes]:
            r = await client.get(path)
            return r.status, await r.read()

        for path in paths:
            answers = await asyncio.gather(*(get(path) for _ in range(200)))
            assert answers == [(200, warm[path])] * 200
        assert acquired == []


async def test_signed_subtitles(settings):
    key = signing.HmacKey("k2026", b"test-hmac-secret-0123456789")
    signed = dataclasses.replace(settings, signing="hmac", hmac_keys=(key,))
    async with TestClient(OriginTestServer(create_app(signed))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        scene, (a, _, _), _ = await three_clips(client, signed)
        body = await (
            await client.get(f"/api/v1/scenes/{scene}/playlist", headers=client.headers_auth)
        ).json()
        query = urlsplit(body["hlsUrl"]).query
        assert [urlsplit(sub["url"]).query for sub in body["subtitles"]] == [query, query]
        assert (await client.get(f"/v/{scene}/subs_en.m3u8")).status == 403
        seen = 0
        for start in (body["hlsUrl"], f"/v/{scene}/{a}/master.m3u8?{query}"):
            master = m3u8.loads(await (await client.get(start)).text())
            for media in master.media:
                assert urlsplit(media.uri).query == query
                url = urljoin(start, media.uri)
                r = await client.get(url)
                assert r.status == 200, url
                for segment in m3u8.loads(await r.text()).segments:
                    assert urlsplit(segment.uri).query == query
                    r = await client.get(urljoin(url, segment.uri))
                    assert r.status == 200 and (await r.text()).startswith("WEBVTT")
                    seen += 1
        assert seen == 6 * 2 + 2  # two languages over the scene, one over the clip
