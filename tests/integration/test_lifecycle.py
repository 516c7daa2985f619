"""A scene's life over HTTP, on the real database and LocalStorage (clips published
as the transcoder would, without ffmpeg): deleting a scene hides everything at once
in every origin process and its job removes every object and row; removing a clip
takes it out of the stitched scene at once and its objects after the grace period;
unpublished clips free their sequence; failed clips are retried; concurrent uploads
get consecutive sequences; a cancelled running job is fenced and waited for."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import m3u8
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core import db, layout, queue
from core.storage import open_configured_storage
from origin.app import create_app
from storyforge import jobs
from tests.helpers.jobs import keys_under, scene_objects, wait_job
from tests.helpers.scenes import AUTH, TS_BYTES, new_scene, publish, published_scene, upload
from tests.helpers.servers import OriginTestServer

H = {"Authorization": AUTH}
NOT_A_VIDEO = b"this is not a video, only bytes " * 64


@pytest.fixture
async def pool(settings):
    p = await db.connect_pool(settings.database_url, size=4)
    yield p
    await p.close()


@pytest.fixture
async def storage(settings):
    s = await open_configured_storage(settings)
    await s.ensure_buckets(settings.buckets)
    yield s
    await s.aclose()


async def claim(pool, job_id: str) -> queue.Job:
    """Claim this job as a worker elsewhere would (other tests' queued jobs, claimed
    on the way, are handed back)."""
    others = []
    try:
        while True:
            job = await queue.claim(pool, ["transcode"], worker="elsewhere", lease_seconds=60)
            assert job is not None and job.lease_token is not None
            if job.id == job_id:
                return job
            others.append(job)
    finally:
        for other in others:
            await queue.release(pool, other.id, other.lease_token)


async def invalidations_counted(client, backend="none", outcome="skipped") -> float:
    r = await client.get("/metrics")
    for family in text_string_to_metric_families(await r.text()):
        for sample in family.samples:
            if sample.name == "storyforge_cdn_invalidation_requests_total" and sample.labels == {
                "backend": backend,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


async def new_user(client) -> str:
    r = await client.post("/api/v1/users", json={"username": f"u{time.time_ns()}"}, headers=H)
    return (await r.json())["id"]


async def put_poster(storage, settings, scene):
    await storage.put(
        settings.assets_bucket,
        layout.poster_key(scene),
        b"\xff\xd8 poster",
        content_type="image/jpeg",
        cache_control=layout.ASSET_CACHE,
        tags={"type": "thumbnail"},
    )


def scene_urls(scene, seg):
    return [
        f"/v/{scene}/master.m3u8",
        f"/v/{scene}/720p.m3u8",
        f"/v/{scene}/storyboard.vtt",
        f"/v/{scene}/{seg}/720p_0001.ts",
        f"/v/{scene}/{seg}/master.m3u8",
        f"/a/scenes/{scene}/poster.jpg",
        f"/api/v1/scenes/{scene}/playlist",
        f"/api/v1/segments/{seg}",
    ]


async def statuses(client, urls):
    return {url: (await client.get(url)).status for url in urls}


@pytest.mark.both_paths
async def test_deleted_scene_is_hidden_at_once_then_removed_completely(
    origin_client, settings, storage, pool, run_workers
):
    client = origin_client
    scene, segs = await published_scene(client, settings, clips=2)
    other, other_segs = await published_scene(client, settings, clips=1)
    await put_poster(storage, settings, scene)
    user = await new_user(client)
    # a clip still queued (no worker yet): its upload is one of the scene's objects too
    upload_job = (await upload(client, scene, user, _bad_clip()))["jobId"]
    urls = scene_urls(scene, segs[0])
    for _ in range(2):  # the second round is answered from the warm caches
        assert set((await statuses(client, urls)).values()) == {200}, await statuses(client, urls)

    r = await client.delete(f"/api/v1/scenes/{scene}", headers=H)
    assert r.status == 202, await r.text()
    job_id = (await r.json())["jobId"]
    # hidden from the next request on, while its job has not even started
    assert set((await statuses(client, urls)).values()) == {404}
    assert (await queue.get_job(pool, job_id)).status == "queued"
    # its scene.deleted event was written with the change (issue 18's outbox)
    events = await pool.fetch(
        "SELECT type, payload FROM webhook_events WHERE scene_id = $1 ORDER BY seq", scene
    )
    assert [e["type"] for e in events][-1] == "scene.deleted"
    assert json.loads(events[-1]["payload"])["data"]["jobId"] == job_id
    assert (await queue.get_job(pool, upload_job)).status == "cancelled"
    r = await client.post(
        f"/api/v1/scenes/{scene}/segments",
        params={"contributor": user},
        data=b"x" * 100,
        headers={**H, "Content-Type": "video/mp4"},
    )
    assert r.status == 404  # nothing lands in a deleted scene
    again = await client.delete(f"/api/v1/scenes/{scene}", headers=H)
    assert again.status == 202 and (await again.json())["jobId"] == job_id

    assert await scene_objects(storage, settings, scene, [upload_job])
    counted = await invalidations_counted(client)
    run_workers()
    await wait_job(pool, job_id)
    assert await scene_objects(storage, settings, scene, [upload_job]) == []
    # no CDN configured: the invalidation is skipped, and counted as such in /metrics
    assert await invalidations_counted(client) == counted + 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM scenes WHERE id = $1", scene) == 0
        assert await conn.fetchval("SELECT count(*) FROM segments WHERE scene_id = $1", scene) == 0
    assert (await client.delete(f"/api/v1/scenes/{scene}", headers=H)).status == 404
    # the other scene is untouched
    assert set((await statuses(client, scene_urls(other, other_segs[0])[:4])).values()) == {200}
    assert len(await scene_objects(storage, settings, other)) == 4

    for url, status in [
        ("/api/v1/scenes/scn_nosuchscene0000", 404),
        ("/api/v1/scenes/not-an-id", 404),
    ]:
        r = await client.delete(url, headers=H)
        assert r.status == status and (await r.json())["error"]["code"] == "not_found"
    r = await client.delete(f"/api/v1/scenes/{other}")
    assert r.status == 401


def _bad_clip():
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="storyforge-bad-")) / "bad.mp4"
    path.write_bytes(NOT_A_VIDEO)
    return path


@pytest.mark.both_paths
async def test_deletion_reaches_every_origin_process_within_a_second(settings, fast_path):
    """Two origin apps on one database: one deletes, the other (warm caches, so the
    fast path would answer) stops answering within 1 s."""
    async with (
        TestClient(OriginTestServer(create_app(settings))) as a,
        TestClient(OriginTestServer(create_app(settings))) as b,
    ):
        scene, segs = await published_scene(a, settings, clips=1)
        urls = [
            f"/v/{scene}/master.m3u8",
            f"/v/{scene}/720p.m3u8",
            f"/v/{scene}/{segs[0]}/720p_0001.ts",
        ]
        for _ in range(3):
            assert set((await statuses(b, urls)).values()) == {200}
        r = await a.delete(f"/api/v1/scenes/{scene}", headers=H)
        assert r.status == 202
        deleted = time.monotonic()
        pending = set(urls)
        gone_after: dict[str, float] = {}
        while pending and time.monotonic() - deleted < 3:
            for url in list(pending):
                if (await b.get(url)).status == 404:
                    gone_after[url] = time.monotonic() - deleted
                    pending.discard(url)
            await asyncio.sleep(0.01)
        assert not pending, pending
        assert max(gone_after.values()) < 1.0, gone_after
        print(f"\nfast_path={fast_path}: 404 in the other process after {gone_after}")


async def test_removed_clip_leaves_the_scene_at_once_and_storage_after_the_grace(
    settings, storage, pool, run_workers
):
    settings = dataclasses.replace(settings, segment_removal_grace=2.0)
    async with TestClient(OriginTestServer(create_app(settings))) as client:
        scene, segs = await published_scene(client, settings, clips=3)
        first, middle, last = segs
        before = await client.get(f"/v/{scene}/720p.m3u8")
        assert (await before.text()).count("#EXT-X-DISCONTINUITY") == 2
        master_before = await client.get(f"/v/{scene}/master.m3u8")

        r = await client.delete(f"/api/v1/segments/{middle}", headers=H)
        assert r.status == 202, await r.text()
        body = await r.json()
        assert body["status"] == "removed" and body["sceneId"] == scene
        variant = await client.get(f"/v/{scene}/720p.m3u8")
        text = await variant.text()
        assert middle not in text and first in text and last in text
        playlist = m3u8.loads(text)
        assert text.count("#EXT-X-DISCONTINUITY") == 1
        assert [s.discontinuity for s in playlist.segments] == [False, False, True, False]
        master = await client.get(f"/v/{scene}/master.m3u8")
        assert master.headers["ETag"] != master_before.headers["ETag"]
        assert "BANDWIDTH=" in await master.text()
        scene_json = await (await client.get(f"/api/v1/scenes/{scene}/playlist")).json()
        assert [s["id"] for s in scene_json["segments"]] == [first, last]
        assert (await client.get(f"/api/v1/segments/{middle}")).status == 404
        # players holding the previous playlist keep playing during the grace period
        ts = await client.get(f"/v/{scene}/{middle}/720p_0001.ts")
        assert ts.status == 200 and await ts.read() == TS_BYTES
        again = await client.delete(f"/api/v1/segments/{middle}", headers=H)
        assert again.status == 202 and (await again.json())["jobId"] == body["jobId"]

        run_workers()
        job = await wait_job(pool, body["jobId"], timeout=30)
        assert (job.finished_at - job.created_at).total_seconds() >= 2.0
        assert await keys_under(storage, settings.videos_bucket, f"{scene}/{middle}/") == []
        assert await keys_under(storage, settings.videos_bucket, f"{scene}/{last}/")
        assert (await client.get(f"/v/{scene}/{middle}/720p_0001.ts")).status == 404
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM segments WHERE id = $1", middle) == 0
        assert (await client.delete(f"/api/v1/segments/{middle}", headers=H)).status == 404

        # removing the first clip: the poster becomes the next clip's large thumbnail
        await put_poster(storage, settings, scene)
        await storage.put(
            settings.videos_bucket,
            layout.segment_key(scene, last, "thumbnail_large.jpg"),
            b"\xff\xd8 the last clip",
            content_type="image/jpeg",
        )
        r = await client.delete(f"/api/v1/segments/{first}", headers=H)
        assert r.status == 202
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            poster = await client.get(f"/a/scenes/{scene}/poster.jpg")
            if await poster.read() == b"\xff\xd8 the last clip":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the poster was not refreshed")
        assert poster.headers["Content-Type"] == "image/jpeg"


async def test_unpublished_clips_free_their_sequence_and_failed_ones_are_retried(
    origin_client, settings, storage, pool, run_workers
):
    client = origin_client
    scene, (user,) = await new_scene(client)
    bad = _bad_clip()
    processing = await upload(client, scene, user, bad, sequence=1)
    # taken while processing
    r = await client.post(
        f"/api/v1/scenes/{scene}/segments",
        params={"contributor": user, "sequence": "1"},
        data=bad.read_bytes(),
        headers={**H, "Content-Type": "video/mp4"},
    )
    assert r.status == 409
    r = await client.delete(f"/api/v1/segments/{processing['segmentId']}", headers=H)
    assert r.status == 202
    removal = (await r.json())["jobId"]
    assert (await queue.get_job(pool, processing["jobId"])).status == "cancelled"
    assert (await client.get(f"/api/v1/segments/{processing['segmentId']}")).status == 404
    failing = await upload(client, scene, user, bad, sequence=1)  # free again at once

    run_workers()
    await wait_job(pool, removal)
    assert await keys_under(storage, settings.internal_bucket, f"jobs/{processing['jobId']}/") == []
    await wait_job(pool, failing["jobId"], ["failed"])
    status = await (await client.get(f"/api/v1/segments/{failing['segmentId']}")).json()
    assert status["status"] == "failed" and status["error"]

    # a failed clip is queued again from its kept upload, with a fresh attempt budget
    r = await client.post(f"/api/v1/segments/{failing['segmentId']}/retry", headers=H)
    assert r.status == 202, await r.text()
    assert (await r.json())["jobId"] == failing["jobId"]
    job = await wait_job(pool, failing["jobId"], ["failed"])
    assert job.attempts == 1 and len(job.errors) == 2  # failed again: it is no video
    r = await client.post(f"/api/v1/segments/{failing['segmentId']}/retry")
    assert r.status == 401
    r = await client.post("/api/v1/segments/seg_nosuchsegment00/retry", headers=H)
    assert r.status == 404
    await storage.delete(settings.internal_bucket, layout.upload_key(failing["jobId"]))
    r = await client.post(f"/api/v1/segments/{failing['segmentId']}/retry", headers=H)
    assert r.status == 409 and "upload" in (await r.json())["error"]["message"]

    # a failed clip is removed at once and frees its sequence
    r = await client.delete(f"/api/v1/segments/{failing['segmentId']}", headers=H)
    assert r.status == 202
    replacement = await upload(client, scene, user, bad, sequence=1)
    assert replacement["sequence"] == 1
    # a published clip cannot be retried
    seg = await publish(settings, scene, user, 2, [4.0])
    r = await client.post(f"/api/v1/segments/{seg}/retry", headers=H)
    assert r.status == 409


async def test_a_clip_in_flight_or_cancelled_by_an_operator_is_not_retried(
    origin_client, settings, pool
):
    client = origin_client
    scene, (user,) = await new_scene(client)
    queued = await upload(client, scene, user, _bad_clip())
    retry = f"/api/v1/segments/{queued['segmentId']}/retry"
    r = await client.post(retry, headers=H)
    assert r.status == 409
    assert "has not failed (it is queued or running)" in (await r.json())["error"]["message"]
    async with pool.acquire() as conn:
        await jobs.cancel(conn, queued["jobId"], settings)
    status = await (await client.get(f"/api/v1/segments/{queued['segmentId']}")).json()
    assert status["status"] == "failed" and status["error"] == jobs.CANCEL_REASON
    r = await client.post(retry, headers=H)
    assert r.status == 409
    assert (await r.json())["error"]["message"] == (
        f"the clip's transcode was cancelled ({jobs.CANCEL_REASON}); upload the clip again"
    )
    assert (await queue.get_job(pool, queued["jobId"])).status == "cancelled"


async def test_a_deletion_that_failed_for_good_is_answered_not_run_again(
    origin_client, settings, pool
):
    """Issue 24: deleting again answers a job that failed for good (no new one) until
    it is retried; one that gave up after its attempts is queued anew. No worker runs:
    the jobs end as a worker would leave them."""
    client = origin_client
    scene, (seg, _) = await published_scene(client, settings, clips=2)

    async def jobs_of(kind: str) -> list[str]:
        rows = await pool.fetch(
            "SELECT id FROM jobs WHERE kind = $1 AND scene_id = $2 ORDER BY created_at",
            kind,
            scene,
        )
        return [r["id"] for r in rows]

    async def end(job_id: str, status: str) -> None:
        await pool.execute(
            "UPDATE jobs SET status = $2, last_error = 'boom' WHERE id = $1", job_id, status
        )

    r = await client.delete(f"/api/v1/segments/{seg}", headers=H)
    removal = (await r.json())["jobId"]
    await end(removal, "failed")
    for _ in range(2):
        r = await client.delete(f"/api/v1/segments/{seg}", headers=H)
        assert r.status == 202 and (await r.json())["jobId"] == removal
    assert await jobs_of("remove_segment") == [removal]
    await end(removal, "dead")
    r = await client.delete(f"/api/v1/segments/{seg}", headers=H)
    assert r.status == 202 and (await r.json())["jobId"] != removal
    assert len(await jobs_of("remove_segment")) == 2

    r = await client.delete(f"/api/v1/scenes/{scene}", headers=H)
    deletion = (await r.json())["jobId"]
    await end(deletion, "failed")
    for _ in range(2):
        r = await client.delete(f"/api/v1/scenes/{scene}", headers=H)
        body = await r.json()
        assert r.status == 202 and body == {"sceneId": scene, "jobId": deletion, "status": "failed"}
    assert await jobs_of("delete_scene") == [deletion]

    async def no_upload(key: str) -> bool:  # (a deletion has no upload to look for)
        return False

    async with pool.acquire() as conn:  # `storyforge jobs retry`
        await jobs.retry(conn, deletion, no_upload)
    r = await client.delete(f"/api/v1/scenes/{scene}", headers=H)
    body = await r.json()
    assert body == {"sceneId": scene, "jobId": deletion, "status": "queued"}
    assert await jobs_of("delete_scene") == [deletion]


async def test_concurrent_uploads_without_sequence_get_consecutive_ones(origin_client):
    client = origin_client
    scene, (user,) = await new_scene(client)
    bad = _bad_clip()
    answers = await asyncio.gather(*(upload(client, scene, user, bad) for _ in range(4)))
    assert sorted(a["sequence"] for a in answers) == [1, 2, 3, 4]


async def test_a_cancelled_running_job_is_fenced_and_waited_for(
    origin_client, settings, storage, pool, run_workers
):
    """A transcode running (claimed, its lease held) when its scene is deleted can no
    longer publish, and the scene's objects are removed only once its worker lets go."""
    client = origin_client
    scene, (user,) = await new_scene(client)
    clip = await upload(client, scene, user, _bad_clip())
    job = await claim(pool, clip["jobId"])
    r = await client.delete(f"/api/v1/scenes/{scene}", headers=H)
    delete_job = (await r.json())["jobId"]
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(queue.LeaseLost):
            await queue.lock_lease(conn, job.id, job.lease_token)
    assert not await queue.heartbeat(pool, job.id, job.lease_token, lease_seconds=60)
    assert await queue.holders(pool, scene_id=scene) == 1

    run_workers()
    await asyncio.sleep(1.5)  # the deleting job waits for the cancelled worker
    assert (await queue.get_job(pool, delete_job)).status == "running"
    assert await keys_under(storage, settings.internal_bucket, f"jobs/{job.id}/")
    assert await queue.let_go(pool, job.id, job.lease_token)  # its worker stopped
    await wait_job(pool, delete_job)
    assert await keys_under(storage, settings.internal_bucket, f"jobs/{job.id}/") == []
