"""A scene's life with the real pipeline (ffmpeg on lavfi clips, hls.js in Debian's
headless Chromium): a transcode running when its scene is deleted publishes nothing
and leaves no object; removing the middle clip of three gives a stitched scene of two
clips (discontinuity, BANDWIDTH as RFC 8216 measures it) that hls.js plays to the
end, and the removed clip's objects are gone after the grace period."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import m3u8
import pytest
from aiohttp.test_utils import TestClient

from core import db, queue
from core.settings import DEFAULT_LADDER
from core.storage import open_configured_storage
from origin.app import create_app
from tests.helpers.browser import (
    CHROMIUM,
    NO_CHROMIUM_REASON,
    Browser,
    open_player,
    play_to_end,
)
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_PAIR
from tests.helpers.jobs import scene_objects, wait_job
from tests.helpers.scenes import AUTH, new_scene, upload, wait_done
from tests.helpers.servers import OriginTestServer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]
H = {"Authorization": AUTH}


@pytest.fixture
def clip(clips):
    # 640x360 fills both rungs of SMALL_PAIR (a smaller source gets no 360p: issue 26)
    return clips.get(width=640, height=360, duration=3)


@pytest.fixture
async def pool(settings):
    p = await db.connect_pool(settings.database_url, size=2)
    yield p
    await p.close()


async def everything_of(settings, scene, job_ids):
    storage = await open_configured_storage(settings)
    try:
        return await scene_objects(storage, settings, scene, job_ids)
    finally:
        await storage.aclose()


# the full ladder: a transcode still running when the deletion lands (it is cut short)
@pytest.mark.parametrize("ladder", [DEFAULT_LADDER], ids=["full-ladder"])
async def test_a_transcode_running_when_its_scene_is_deleted_publishes_nothing(
    origin_client, settings, run_workers, pool, clips
):
    client = origin_client
    scene, (user,) = await new_scene(client)
    # 1080p: the full ladder's work (a smaller source gets no upscaled rungs: issue 26)
    long_clip = clips.get(width=1920, height=1080, duration=10)
    transcode = await upload(client, scene, user, long_clip)
    run_workers()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = await queue.get_job(pool, transcode["jobId"])
        if job.status == "running" and job.progress >= 0.03:  # ffmpeg is running
            break
        await asyncio.sleep(0.05)
    assert job.status == "running", job
    r = await client.delete(f"/api/v1/scenes/{scene}", headers=H)
    assert r.status == 202
    delete_job = await wait_job(pool, (await r.json())["jobId"], timeout=120)

    job = await queue.get_job(pool, transcode["jobId"])
    assert job.status == "cancelled" and job.lease_token is None, job  # it let go
    assert delete_job.finished_at > job.updated_at  # the deletion waited for it
    assert await everything_of(settings, scene, [job.id]) == []
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM renditions r JOIN segments s "
                "ON s.id = r.segment_id WHERE s.scene_id = $1",
                scene,
            )
            == 0
        )
        assert await conn.fetchval("SELECT count(*) FROM scenes WHERE id = $1", scene) == 0


def measured_peak(durations, sizes, target):
    """RFC 8216 §4.3.4.2, by brute force: the largest bit rate of any contiguous set
    of segments whose total duration is between 0.5 and 1.5 times the target."""
    ms = [round(d * 1000) for d in durations]
    best = 0.0
    for i in range(len(ms)):
        for j in range(i + 1, len(ms) + 1):
            span = sum(ms[i:j])
            if 500 * target <= span <= 1500 * target:
                best = max(best, 8000 * sum(sizes[i:j]) / span)
    return math.ceil(best)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON)
@pytest.mark.parametrize("ladder", [SMALL_PAIR], ids=["two-small-rungs"])
async def test_removing_the_middle_clip_keeps_the_scene_playable(settings, run_workers, pool, clip):
    app_settings = dataclasses.replace(settings, segment_removal_grace=4.0)
    async with TestClient(OriginTestServer(create_app(app_settings))) as client:
        client.headers_auth = H
        scene, (user,) = await new_scene(client)
        up = [await upload(client, scene, user, clip, sequence=n) for n in (1, 2, 3)]
        run_workers(concurrency=2)
        for u in up:
            assert (await wait_done(client, u["segmentId"], timeout=240))["status"] == "ready"
        middle = up[1]["segmentId"]
        r = await client.delete(f"/api/v1/segments/{middle}", headers=H)
        assert r.status == 202
        removal = (await r.json())["jobId"]

        master = m3u8.loads(await (await client.get(f"/v/{scene}/master.m3u8")).text())
        assert len(master.playlists) == 2
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT r.profile, r.durations, r.sizes FROM renditions r JOIN segments s "
                "ON s.id = r.segment_id WHERE s.scene_id = $1 AND s.status = 'ready' "
                "ORDER BY s.sequence",
                scene,
            )
        for variant in master.playlists:
            uri = variant.uri
            text = await (await client.get(f"/v/{scene}/{uri}")).text()
            media = m3u8.loads(text)
            assert middle not in text
            assert text.count("#EXT-X-DISCONTINUITY") == 1  # one boundary between two clips
            assert media.segments[0].uri.startswith(up[0]["segmentId"])
            assert media.segments[-1].uri.startswith(up[2]["segmentId"])
            profile = uri.removesuffix(".m3u8")
            durations = [d for r in rows if r["profile"] == profile for d in r["durations"]]
            sizes = [s for r in rows if r["profile"] == profile for s in r["sizes"]]
            assert [s.duration for s in media.segments] == pytest.approx(durations, abs=1e-3)
            average = math.ceil(8000 * sum(sizes) / sum(round(d * 1000) for d in durations))
            peak = measured_peak(durations, sizes, media.target_duration)
            assert variant.stream_info.bandwidth == max(peak, average)
            assert variant.stream_info.average_bandwidth == average

        async with Browser() as b:
            await open_player(b, str(client.make_url(f"/player/{scene}")))
            assert await play_to_end(b) == [0, 1]
            duration = await b.eval("document.getElementById('video').duration")
            assert abs(duration - 6.0) < 0.5

        job = await wait_job(pool, removal, timeout=60)
        assert (job.finished_at - job.created_at).total_seconds() >= 4.0  # the grace period
        assert await everything_of(settings, f"{scene}/{middle}", [up[1]["jobId"]]) == []
        assert await everything_of(settings, f"{scene}/{up[2]['segmentId']}", [])
        first_ts = f"{settings.ladder[0].name}_0001.ts"
        assert (await client.get(f"/v/{scene}/{up[2]['segmentId']}/{first_ts}")).status == 200
        assert (await client.get(f"/v/{scene}/{middle}/{first_ts}")).status == 404
