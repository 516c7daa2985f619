"""Deleting a scene on moto's S3 and CloudFront servers over HTTP: a scene of 2,500
objects over the four buckets is removed completely while another scene keeps every
object; per-key errors in DeleteObjects answers are retried to completion; the
invalidation reaches CloudFront with the scene's paths (after being throttled once);
a worker SIGKILLed mid-delete leaves a job that the next worker finishes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from aiohttp.test_utils import TestClient

from core import catalog, cdn, db, invalidation, layout, queue
from core.storage import open_configured_storage
from origin.app import create_app
from tests.helpers.cdn import create_distribution, invalidated_paths, throttled
from tests.helpers.jobs import scene_objects, wait_job
from tests.helpers.objects import put_many
from tests.helpers.s3calls import delete_errors
from tests.helpers.scenes import AUTH
from tests.helpers.servers import OriginTestServer
from tests.helpers.workers import running_workers
from workers.jobs.lifecycle import make_delete_scene


@pytest.fixture
async def s3_settings(settings, moto_endpoint, monkeypatch):
    # the CloudFront client takes botocore's credential chain, as in production
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    token = uuid.uuid4().hex[:10]
    return dataclasses.replace(
        settings,
        storage="s3",
        s3_endpoint_url=moto_endpoint,
        s3_access_key="test",
        s3_secret_key="test",
        videos_bucket=f"life-videos-{token}",
        assets_bucket=f"life-assets-{token}",
        exports_bucket=f"life-exports-{token}",
        internal_bucket=f"life-internal-{token}",
        cdn_distribution_id=await create_distribution(moto_endpoint),
        cloudfront_endpoint_url=moto_endpoint,
    )


@pytest.fixture
async def pool(s3_settings):
    p = await db.connect_pool(s3_settings.database_url, size=4)
    yield p
    await p.close()


@pytest.fixture
async def storage(s3_settings):
    s = await open_configured_storage(s3_settings)
    await s.ensure_buckets(s3_settings.buckets)
    yield s
    await s.aclose()


async def populate(
    pool, storage, settings, *, segments, per_segment, exports, assets, jobs, per_job
):
    """A scene with rows (user, scene, segments, jobs) and objects under every prefix
    of it in the four buckets; returns (scene id, job ids, every bucket/key)."""
    async with pool.acquire() as conn:
        user = await catalog.create_user(conn, f"u{uuid.uuid4().hex[:12]}")
        scene = (await catalog.create_scene(conn, "The Signal")).id
        seg_ids = []
        for n in range(1, segments + 1):
            seg = layout.new_id("seg")
            await catalog.insert_segment(conn, seg, scene, n, user.id)
            seg_ids.append(seg)
        job_ids = []
        for _ in range(jobs):
            job = await queue.enqueue(conn, "export", {"scene_id": scene}, scene_id=scene)
            job_ids.append(job.id)
    keys = [
        (
            settings.videos_bucket,
            layout.segment_key(scene, seg, layout.media_segment_name("720p", i)),
        )
        for seg in seg_ids
        for i in range(1, per_segment + 1)
    ]
    keys += [(settings.exports_bucket, f"{scene}/moment_{i:04d}.mp4") for i in range(exports)]
    keys += [(settings.assets_bucket, layout.poster_key(scene))]
    keys += [
        (settings.assets_bucket, f"scenes/{scene}/reference/r{i:04d}.png")
        for i in range(assets - 1)
    ]
    keys += [
        (settings.internal_bucket, layout.job_frame_key(j, f"{i:04d}.jpg"))
        for j in job_ids
        for i in range(per_job)
    ]

    def meta(key):
        return layout.file_meta(key.rsplit("/", 1)[-1])

    await put_many(
        storage,
        keys,
        content_type=lambda key: meta(key).content_type,
        tags=lambda key: {"type": meta(key).tag},
    )
    return scene, job_ids, sorted(f"{b}/{k}" for b, k in keys)


async def delete_through_api(settings, scene):
    async with TestClient(OriginTestServer(create_app(settings))) as client:
        r = await client.delete(f"/api/v1/scenes/{scene}", headers={"Authorization": AUTH})
        assert r.status == 202, await r.text()
        assert (await client.get(f"/api/v1/scenes/{scene}/playlist")).status == 404
        return (await r.json())["jobId"]


@pytest.mark.slow
async def test_a_scene_of_2500_objects_is_removed_completely(s3_settings, pool, storage):
    settings = s3_settings
    scene, job_ids, keys = await populate(
        pool, storage, settings, segments=5, per_segment=300, exports=300, assets=200,
        jobs=100, per_job=5,
    )  # fmt: skip
    assert len(keys) == 2_500
    assert {k.split("/", 1)[0] for k in keys} == set(settings.buckets)
    other, other_jobs, other_keys = await populate(
        pool, storage, settings, segments=2, per_segment=10, exports=5, assets=5, jobs=2,
        per_job=5,
    )  # fmt: skip
    assert await scene_objects(storage, settings, scene, job_ids) == keys
    job_id = await delete_through_api(settings, scene)

    invalidations = await cdn.open_invalidations(settings, pool)
    assert isinstance(invalidations.invalidator, cdn.CloudFrontInvalidator)
    handlers = {"delete_scene": make_delete_scene(settings, storage, invalidations)}
    with (
        delete_errors(storage.client, every=7, batches=3) as batches,
        throttled(invalidations.invalidator.client, times=1) as invalidation_calls,
    ):
        async with running_workers(settings, handlers=handlers):
            job = await wait_job(pool, job_id, timeout=120)
    await invalidations.aclose()

    assert job.attempts == 1
    print(
        f"\n2,500 objects deleted in {(job.finished_at - job.created_at).total_seconds():.1f}s:"
        f" {len(batches)} DeleteObjects calls, the largest {max(len(b) for b in batches)} keys,"
        f" {sum(len(b[6::7]) for b in batches[:3])} per-key errors injected and retried"
    )
    assert await scene_objects(storage, settings, scene, job_ids) == []
    assert await scene_objects(storage, settings, other, other_jobs) == other_keys
    # every DeleteObjects carried at most 1,000 keys; the keys withheld (and reported
    # as per-key errors) in the first three were sent again, and are gone
    assert max(len(b) for b in batches) <= 1_000
    for n, batch in enumerate(batches[:3]):
        assert set(batch[6::7]) <= {k for later in batches[n + 1 :] for k in later}
    assert sum(len(b[6::7]) for b in batches[:3]) > 100
    # one throttled CreateInvalidation, then the scene's paths reached CloudFront
    assert len(invalidation_calls) == 2
    received = await invalidated_paths(
        settings.cloudfront_endpoint_url, settings.cdn_distribution_id
    )
    assert received == [sorted(invalidation.scene_deleted_paths(scene))]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM scenes WHERE id = $1", scene) == 0
        assert await conn.fetchval("SELECT count(*) FROM segments WHERE scene_id = $1", scene) == 0
        counted = await cdn.request_counts(conn)
    assert counted[("cloudfront", "sent")][0] >= 1


@pytest.mark.slow
async def test_worker_killed_mid_delete_and_run_again_finishes(s3_settings, pool, storage):
    settings = s3_settings
    # many small prefixes (one per job) make the deletion take a few seconds
    scene, job_ids, keys = await populate(
        pool, storage, settings, segments=2, per_segment=100, exports=20, assets=20,
        jobs=300, per_job=1,
    )  # fmt: skip
    other, other_jobs, other_keys = await populate(
        pool, storage, settings, segments=1, per_segment=5, exports=2, assets=2, jobs=1,
        per_job=2,
    )  # fmt: skip
    job_id = await delete_through_api(settings, scene)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STORAGE": "s3",
        "S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "S3_ACCESS_KEY_ID": "test",
        "S3_SECRET_ACCESS_KEY": "test",
        "VIDEOS_BUCKET": settings.videos_bucket,
        "ASSETS_BUCKET": settings.assets_bucket,
        "EXPORTS_BUCKET": settings.exports_bucket,
        "INTERNAL_BUCKET": settings.internal_bucket,
        "CDN_DISTRIBUTION_ID": settings.cdn_distribution_id,
        "CLOUDFRONT_ENDPOINT_URL": settings.cloudfront_endpoint_url or "",
        "CDN_INVALIDATION_WINDOW": "0.5",
        "JOB_LEASE_SECONDS": "2",
        "LOG_FORMAT": "text",
    }
    cmd = [sys.executable, "-m", "storyforge.cli", "worker"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        job = await queue.get_job(pool, job_id)
        while time.monotonic() < deadline and not (job.status == "running" and job.progress >= 0.1):
            await asyncio.sleep(0.05)
            job = await queue.get_job(pool, job_id)
        assert job.status == "running" and 0.1 <= job.progress < 0.9, job
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    left = await scene_objects(storage, settings, scene, job_ids)
    assert 0 < len(left) < len(keys)  # killed mid-delete
    print(f"\nkilled at {job.progress:.0%} with {len(left)} of {len(keys)} objects left")
    assert (await queue.get_job(pool, job_id)).status == "running"  # until its lease expires

    second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        job = await wait_job(pool, job_id, timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert job.attempts == 2
    assert await scene_objects(storage, settings, scene, job_ids) == []
    assert await scene_objects(storage, settings, other, other_jobs) == other_keys
    received = await invalidated_paths(
        settings.cloudfront_endpoint_url, settings.cdn_distribution_id
    )
    assert sorted(invalidation.scene_deleted_paths(scene)) in received
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM scenes WHERE id = $1", scene) == 0
