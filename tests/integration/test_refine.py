"""Issue 17 with the real pipeline (ffmpeg on lavfi clips, hls.js in headless
Chromium): a clip plays as the fast ladder (its lowest rung alone since issue 26),
then a `refine` job publishes the final generation, every rung, under new keys; a player that loaded the fast playlists plays them to the
end, a new one gets the final ones, and the fast generation's objects are gone after
the grace period. A refinement waits for every other kind of job, and a clip removed
while it runs never publishes it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import tempfile
import time
from pathlib import Path

import m3u8
import pytest
from aiohttp.test_utils import TestClient

from core import layout, queue
from core.settings import LadderRung, StagePresets
from core.storage import open_configured_storage
from origin.app import create_app
from tests.helpers.browser import CHROMIUM, NO_CHROMIUM_REASON, Browser, open_player, play_to_end
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, make_clip
from tests.helpers.jobs import keys_under, wait_job
from tests.helpers.scenes import AUTH, new_scene, upload, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import stop_mid_job, worker_process
from tests.helpers.workers import running_workers

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]
H = {"Authorization": AUTH}
# a small ladder keeps the encodes cheap; the stages differ as in production
LADDER = (LadderRung("180p", 320, 180, 300_000), LadderRung("360p", 640, 360, 800_000))
# s: the fast generation outlives the refinement this long; long enough for two players
# on a loaded machine (the test brings its end forward once they are done)
GRACE = 120.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(
        tmp_path_factory.mktemp("clips") / "clip.mp4", width=640, height=360, duration=3
    )


@pytest.fixture
def refining(settings):
    return dataclasses.replace(
        settings,
        refine=True,
        ladder=LADDER,
        fast_preset=StagePresets("veryfast"),
        refine_preset=StagePresets("medium"),
        segment_removal_grace=GRACE,
    )


@pytest.fixture
def kinds(refining):
    """`kinds(*names)`: a worker running only those job kinds, in a block."""
    return lambda *names: running_workers(refining, kinds=names)


async def refine_job(pool, segment_id: str) -> queue.Job:
    async with pool.acquire() as conn:
        job_id = await conn.fetchval(
            "SELECT id FROM jobs WHERE kind = 'refine' AND segment_id = $1", segment_id
        )
    assert job_id is not None, f"no refine job for {segment_id}"
    job = await queue.get_job(pool, job_id)
    assert job is not None
    return job


async def fast_clip(client, pool, kinds, clip) -> tuple[str, str, queue.Job]:
    """A new scene with `clip` published as the fast ladder; its queued refine job."""
    client.headers_auth = H
    scene, (user,) = await new_scene(client)
    seg = (await upload(client, scene, user, clip))["segmentId"]
    async with kinds("transcode"):
        assert (await wait_done(client, seg, timeout=120))["quality"] == "fast"
    return scene, seg, await refine_job(pool, seg)


async def test_a_refinement_waits_for_every_other_kind(settings, pool):
    """Claim order: the highest priority first, whatever was queued earlier."""
    mine = [
        (await queue.enqueue(pool, kind, {"n": n})).id
        for n, kind in enumerate(("refine", "webhook", "transcode"))
    ]
    claimed = []
    while (job := await queue.claim(pool, None, worker="w", lease_seconds=5)) is not None:
        if job.id in mine:  # (jobs other tests left behind are claimed too)
            claimed.append((job.kind, job.priority))
    assert claimed == [("webhook", 100), ("transcode", 100), ("refine", 0)]


async def wait_final(client, segment_ids: list[str], timeout: float = 120) -> float:
    """When the first of the clips was seen `final` (time.monotonic()), once all are."""
    deadline = time.monotonic() + timeout
    first: float | None = None
    while time.monotonic() < deadline:
        qualities = []
        for seg in segment_ids:
            status = await (await client.get(f"/api/v1/segments/{seg}")).json()
            qualities.append((status.get("quality"), status.get("generation")))
        if first is None and ("final", 2) in qualities:
            first = time.monotonic()
        if all(q == ("final", 2) for q in qualities):
            assert first is not None
            return first
        await asyncio.sleep(0.1)
    raise AssertionError(f"not final after {timeout} s: {qualities}")


def _uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON)
async def test_fast_then_final_across_a_playing_scene(refining, pool, kinds, clip, clock):
    async with TestClient(OriginTestServer(create_app(refining, clock=clock))) as client:
        client.headers_auth = H
        scene, (user,) = await new_scene(client)
        up = [await upload(client, scene, user, clip, sequence=n) for n in (1, 2)]
        segs = [u["segmentId"] for u in up]
        async with kinds("transcode"):
            for seg in segs:
                status = await wait_done(client, seg, timeout=120)
                assert (status["status"], status["quality"], status["generation"]) == (
                    "ready",
                    "fast",
                    1,
                )
        # the first stage makes the lowest rung alone (issue 26): the scene's one variant
        fast_master = m3u8.loads(await (await client.get(f"/v/{scene}/master.m3u8")).text())
        assert [p.uri for p in fast_master.playlists] == ["180p.m3u8"]
        assert (await client.get(f"/v/{scene}/360p.m3u8")).status == 404
        fast_text = await (await client.get(f"/v/{scene}/180p.m3u8")).text()
        assert all(re.search(r"/180p_\d{4}\.ts$", u) for u in _uris(fast_text)), fast_text
        jobs = [await refine_job(pool, seg) for seg in segs]
        assert {(j.status, j.priority) for j in jobs} == {("queued", 0)}

        async with Browser() as old, Browser() as new:
            # a player loads the fast playlists, then the final generation is published
            await open_player(old, str(client.make_url(f"/player/{scene}")))
            fetch_text = f"fetch('/v/{scene}/180p.m3u8').then(r => r.text())"
            old_ts = _uris(await old.eval(fetch_text))  # what the fast player holds
            async with kinds("refine"):
                published = await wait_final(client, segs)
                clock.skip(1.2)  # past the origin's 1 s version and readiness TTLs
                final_text = await (await client.get(f"/v/{scene}/360p.m3u8")).text()
                final = m3u8.loads(final_text)
                # the refinement adds the higher rung
                assert all(re.search(r"/360p_g2_\d{4}\.ts$", u) for u in _uris(final_text))
                low = await (await client.get(f"/v/{scene}/180p.m3u8")).text()
                assert all(re.search(r"/180p_g2_\d{4}\.ts$", u) for u in _uris(low)), low
                fast = m3u8.loads(fast_text)
                # drop-in: the same segmentation, so the same timeline
                assert [s.duration for s in final.segments] == [s.duration for s in fast.segments]
                clip_text = await (await client.get(f"/v/{scene}/{segs[0]}/180p.m3u8")).text()
                assert all(u.startswith("180p_g2_") for u in _uris(clip_text)), clip_text

                # the fast player plays to the end; the fast generation's objects stay
                assert await play_to_end(old) == [0, 1]
                statuses = await old.eval(
                    f"Promise.all({json.dumps(old_ts)}"
                    f".map(u => fetch('/v/{scene}/' + u).then(r => r.status)))"
                )
                assert statuses == [200] * len(old_ts)
                # a new player gets the final generation
                await open_player(new, str(client.make_url(f"/player/{scene}")))
                assert await play_to_end(new) == [0, 1]
                fetched = await new.eval(
                    "performance.getEntriesByType('resource').map(e => e.name)"
                    ".filter(n => n.endsWith('.ts'))"
                )
                assert fetched and all("_g2_" in n for n in fetched), fetched
                assert time.monotonic() - published < GRACE, "the grace period ran out early"

                # the players are done: the grace period ends now rather than in GRACE s
                for job in jobs:  # deferred until then (or past it on a slow machine)
                    await wait_job(pool, job.id, ("queued", "succeeded"), timeout=30)
                await pool.execute(
                    "UPDATE jobs SET run_after = now(), payload = jsonb_set(payload, "
                    "'{purge_after}', to_jsonb(extract(epoch FROM now())::float8)) "
                    "WHERE id = ANY($1) AND status = 'queued'",
                    [job.id for job in jobs],
                )
                for job in jobs:
                    done = await wait_job(pool, job.id, timeout=60)
                    assert done.finished_at is not None
        storage = await open_configured_storage(refining)
        try:
            for seg in segs:
                names = [
                    k.rsplit("/", 1)[1]
                    for k in await keys_under(
                        storage, refining.videos_bucket, layout.segment_prefix(scene, seg)
                    )
                ]
                media = sorted(n for n in names if n.endswith(".ts"))
                assert media and all("_g2_" in n for n in media), media
                assert "source.mp4" in names and "thumbnail.jpg" in names
        finally:
            await storage.aclose()
        assert (await client.get(f"/v/{scene}/{segs[0]}/180p_0001.ts")).status == 404
        assert (await client.get(f"/v/{scene}/{segs[0]}/360p_g2_0001.ts")).status == 200


async def test_a_removed_clips_refinement_never_publishes(refining, pool, kinds, tmp_path):
    removing = dataclasses.replace(refining, segment_removal_grace=1.0)
    longer = make_clip(tmp_path / "longer.mp4", width=1280, height=720, duration=12)
    async with TestClient(OriginTestServer(create_app(removing))) as client:
        scene, seg, job = await fast_clip(client, pool, kinds, longer)
        async with kinds("refine", "remove_segment"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                job = await queue.get_job(pool, job.id)
                if job.status == "running" and job.progress > 0.03:  # ffmpeg is encoding
                    break
                await asyncio.sleep(0.05)
            assert job.status == "running" and job.progress < 0.9, job
            r = await client.delete(f"/api/v1/segments/{seg}", headers=H)
            assert r.status == 202
            removal = (await r.json())["jobId"]
            job = await wait_job(pool, job.id, ("cancelled",), timeout=5)
            await wait_job(pool, removal, timeout=60)
            async with pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT generation, quality FROM segments WHERE id = $1", seg
                )
            # purged after its (short) grace period; never refined before
            assert row is None or (row["generation"], row["quality"]) == (1, "fast")
        job = await queue.get_job(pool, job.id)
        assert job.status == "cancelled" and job.lease_token is None, job
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM segments WHERE id = $1", seg) == 0
        storage = await open_configured_storage(removing)
        try:
            assert await keys_under(storage, removing.videos_bucket, f"{scene}/{seg}/") == []
        finally:
            await storage.aclose()


async def test_a_worker_killed_mid_refinement_is_finished_once_by_another(
    refining, pool, kinds, tmp_path
):
    """SIGKILLed while its ffmpeg encodes: nothing is published, the lease runs out, a
    second worker refines the clip again and publishes generation 2 once."""
    grace = 1.0
    quick = dataclasses.replace(refining, segment_removal_grace=grace)
    env = {
        "REFINE": "on",
        "LADDER": ",".join(f"{r.name}:{r.width}x{r.height}:{r.video_bitrate}" for r in LADDER),
        "FAST_PRESET": "veryfast",
        "REFINE_PRESET": "medium",
        "SEGMENT_REMOVAL_GRACE": str(grace),
    }
    # the ladder's top rung (a smaller source gets no rendition of it, issue 26)
    longer = make_clip(tmp_path / "longer.mp4", width=640, height=360, duration=8)
    async with TestClient(OriginTestServer(create_app(quick))) as client:
        scene, seg, job = await fast_clip(client, pool, kinds, longer)
        first = worker_process(quick, **env)
        try:
            # stopped once the encoding ffmpeg has read a third of the source
            fed = longer.stat().st_size // 3
            await stop_mid_job(first, job.id, fed=fed, tool="libx264")
            job = await queue.get_job(pool, job.id)
            assert (job.status, job.attempts) == ("running", 1), job
            first.kill()
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        status = await (await client.get(f"/api/v1/segments/{seg}")).json()
        assert (status["quality"], status["generation"]) == ("fast", 1)
        second = worker_process(quick, **env)
        try:
            await wait_final(client, [seg], timeout=120)
            job = await wait_job(pool, job.id, ("succeeded",), timeout=60)
        finally:
            second.terminate()
            second.wait(30)
        assert job.attempts == 2 and "lease expired" in (job.errors[0]["error"]), job.errors
        clip_text = await (await client.get(f"/v/{scene}/{seg}/360p.m3u8")).text()
        listed = _uris(clip_text)
        assert listed and all(u.startswith("360p_g2_") for u in listed), clip_text
    storage = await open_configured_storage(quick)
    try:
        key = layout.segment_key(scene, seg, "360p.m3u8")
        async with await storage.get(quick.videos_bucket, key) as obj:
            stored_playlist = (await obj.read()).decode()
        names = [
            k.rsplit("/", 1)[1]
            for k in await keys_under(
                storage, quick.videos_bucket, layout.segment_prefix(scene, seg)
            )
        ]
    finally:
        await storage.aclose()
    # generation 2 once (no third), exactly the segments its playlists list
    assert sorted(n for n in names if n.startswith("360p") and n.endswith(".ts")) == listed
    # the stored copy of the clip's playlist (the seed's layout) names them too
    assert _uris(stored_playlist) == listed
    assert not [n for n in names if "_g3_" in n], names
    assert not list(Path(tempfile.gettempdir()).glob(f"storyforge-{job.id}-*"))
