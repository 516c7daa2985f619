"""`/v/{sceneId}/chapters.vtt` over HTTP: one cue per ready clip at the stitched
playlist's clip starts (to the millisecond), titled with sequence and username;
cached per scene version (ETag, 304, rebuilt when a clip is published), answered warm
by the fast path, CORS like the other scene documents. Published segments are set up
through the real database and storage, without ffmpeg."""

from __future__ import annotations

import m3u8
import pytest

from tests.helpers.metrics import requests, scrape
from tests.helpers.scenes import publish, scene_with_users

ROUTE = "/v/{scene_id}/{name}"


def clip_starts_ms(playlist: str) -> list[int]:
    """Where each clip starts in a stitched media playlist, read by the m3u8 library:
    the EXTINF sum before each discontinuity."""
    starts, t = [0], 0
    for seg in m3u8.loads(playlist).segments:
        if seg.discontinuity:
            starts.append(t)
        t += round(seg.duration * 1000)
    return starts


def cues(vtt: str) -> list[tuple[str, str, str]]:
    blocks = vtt.strip().split("\n\n")
    assert blocks[0] == "WEBVTT"
    out = []
    for block in blocks[1:]:
        timing, text = block.split("\n")
        start, end = timing.split(" --> ")
        out.append((start, end, text))
    return out


def vtt_ms(stamp: str) -> int:
    h, m, s = stamp.split(":")
    return (int(h) * 3600 + int(m) * 60) * 1000 + round(float(s) * 1000)


@pytest.mark.both_paths
async def test_chapters_follow_the_stitched_timeline(origin_client, settings, clock):
    client = origin_client
    scene, users = await scene_with_users(client, 2)
    await publish(settings, scene, users[0], 1, [4.004, 4.004, 1.335])
    await publish(settings, scene, users[1], 2, [3.0])
    await publish(settings, scene, users[0], 4, [4.0, 0.8])
    body = await (await client.get(f"/api/v1/scenes/{scene}/playlist")).json()
    assert body["chaptersUrl"] == f"/v/{scene}/chapters.vtt"
    names = [s["contributor"]["username"] for s in body["segments"]]

    r = await client.get(body["chaptersUrl"], headers={"Origin": "https://app.example"})
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/vtt; charset=utf-8"
    assert r.headers["Cache-Control"] == "public, max-age=5, stale-while-revalidate=30"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    etag = r.headers["ETag"]
    found = cues(await r.text())
    assert [text for _, _, text in found] == [f"1. {names[0]}", f"2. {names[1]}", f"4. {names[2]}"]
    for profile in ("720p", "1080p"):
        playlist = await (await client.get(f"/v/{scene}/{profile}.m3u8")).text()
        assert [vtt_ms(start) for start, _, _ in found] == clip_starts_ms(playlist)
    assert [vtt_ms(s) for s, _, _ in found] == [0, 9343, 12343]
    assert [end for _, end, _ in found] == ["00:00:09.343", "00:00:12.343", "00:00:17.143"]
    # each cue ends where the next begins, and the scene JSON agrees
    assert [s["startTime"] for s in body["segments"]] == [0.0, 9.343, 12.343]

    # warm: the same bytes, from memory (the fast path's when it is on), and a 304
    before = await scrape(client)
    r = await client.get(body["chaptersUrl"])
    assert r.status == 200 and r.headers["ETag"] == etag
    r = await client.get(body["chaptersUrl"], headers={"If-None-Match": etag})
    assert r.status == 304
    after = await scrape(client)
    by = "fast_path" if settings.fast_path else "app"
    assert requests(after, ROUTE, 200, by) - requests(before, ROUTE, 200, by) == 1
    assert requests(after, ROUTE, 304, by) - requests(before, ROUTE, 304, by) == 1

    # a new clip is a new scene version: a new document once the scene version is read
    # again (at most every second)
    await publish(settings, scene, users[1], 3, [2.0])
    clock.skip(1.0)
    r = await client.get(body["chaptersUrl"], headers={"If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag
    found = cues(await r.text())
    assert [text.split(". ")[0] for _, _, text in found] == ["1", "2", "3", "4"]
    assert vtt_ms(found[3][0]) == 14343


async def test_chapters_of_missing_or_empty_scenes(origin_client):
    client = origin_client
    scene, _ = await scene_with_users(client, 1)
    r = await client.get(f"/v/{scene}/chapters.vtt")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    assert (await client.get("/v/scn_0000000000000000/chapters.vtt")).status == 404
    assert (await client.get(f"/v/{scene}/chapters.vtt.bak")).status == 404
