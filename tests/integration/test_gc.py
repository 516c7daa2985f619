"""`storyforge gc --dry-run|--apply` on the real database and LocalStorage: objects no
row points to (older than a day) are listed, then removed; objects with rows, recent
ones and keys of no known layout stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from core import catalog, db, layout, queue
from core.storage import open_configured_storage
from tests.helpers.jobs import keys_under

DAY = 86_400


@pytest.fixture
async def pool(settings):
    p = await db.connect_pool(settings.database_url, size=2)
    yield p
    await p.close()


def gc(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STORAGE": "local",
        "STORAGE_ROOT": str(settings.storage_root),
        "LOG_FORMAT": "text",
    }
    return subprocess.run(
        [sys.executable, "-m", "storyforge.cli", "gc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_gc_lists_then_removes_only_old_objects_without_rows(settings, pool):
    storage = await open_configured_storage(settings)
    await storage.ensure_buckets(settings.buckets)
    videos, assets, exports, internal = settings.buckets
    async with pool.acquire() as conn:
        user = await catalog.create_user(conn, f"u{uuid.uuid4().hex[:12]}")
        scene = (await catalog.create_scene(conn, "Live")).id
        seg = layout.new_id("seg")
        await catalog.insert_segment(conn, seg, scene, 1, user.id)
        job = await queue.enqueue(conn, "export", {}, scene_id=scene)
    gone_scene, gone_seg, gone_user, gone_job, young_job = (
        layout.new_id("scn"),
        layout.new_id("seg"),
        layout.new_id("usr"),
        layout.new_id("job"),
        layout.new_id("job"),
    )
    kept = [
        (videos, layout.segment_key(scene, seg, "720p_0001.ts")),
        (assets, layout.poster_key(scene)),
        (assets, layout.avatar_key(user.id)),
        (internal, layout.upload_key(job.id)),
        (assets, "topics/space/icon.png"),  # no rows for topics: never ours to judge
        (videos, "README"),
    ]
    orphans = [
        (videos, layout.segment_key(gone_scene, gone_seg, "720p_0001.ts")),
        (videos, layout.segment_key(gone_scene, gone_seg, "720p_0002.ts")),
        (videos, layout.segment_key(scene, gone_seg, "master.m3u8")),  # clip row gone
        (exports, layout.export_key(gone_scene, layout.new_id("exp"), "full_720p.mp4")),
        (assets, layout.poster_key(gone_scene)),
        (assets, layout.avatar_key(gone_user)),
        (internal, layout.upload_key(gone_job)),
    ]
    young = [(internal, layout.upload_key(young_job))]
    for bucket, key in kept + orphans + young:
        await storage.put(bucket, key, b"x" * 10, content_type="application/octet-stream")
    old = time.time() - 2 * DAY
    for bucket, key in kept + orphans:
        os.utime(settings.storage_root / bucket / key, (old, old))

    listed = gc(settings, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert sorted(line.split("\t")[1] for line in lines[:-1]) == sorted(
        [
            f"{videos}/{gone_scene}/{gone_seg}/",
            f"{videos}/{scene}/{gone_seg}/",
            f"{exports}/{gone_scene}/",
            f"{assets}/scenes/{gone_scene}/",
            f"{assets}/avatars/{gone_user}.jpg",
            f"{internal}/jobs/{gone_job}/",
        ]
    )
    assert lines[-1] == "would remove 7 objects (70 bytes) of 6 orphaned owners"
    for bucket, key in kept + orphans + young:  # a dry run changes nothing
        assert (settings.storage_root / bucket / key).exists(), key

    applied = gc(settings, "--apply")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip().splitlines()[-1] == (
        "removed 7 objects (70 bytes) of 6 orphaned owners"
    )
    for bucket, key in orphans:
        assert await keys_under(storage, bucket, key) == [], key
    for bucket, key in kept + young:
        assert await keys_under(storage, bucket, key) == [key], key
    # a younger orphan goes once it is old enough (here: any age)
    assert "removed 1 objects" in gc(settings, "--apply", "--min-age", "0").stdout
    assert await keys_under(storage, internal, layout.job_prefix(young_job)) == []
    await storage.aclose()

    refused = gc(settings)
    assert refused.returncode == 2 and "one of the arguments --dry-run --apply" in refused.stderr


async def test_gc_apply_prunes_history_then_its_objects(settings, pool):
    """A job finished longer ago than JOB_RETENTION goes, and its internal objects
    with it (orphans once the row is gone); a recent one and its objects stay."""
    storage = await open_configured_storage(settings)
    await storage.ensure_buckets(settings.buckets)
    internal = settings.internal_bucket
    jobs = [await queue.enqueue(pool, "export", {}) for _ in range(2)]
    for job, age in zip(jobs, (8 * DAY, DAY), strict=True):
        await pool.execute(
            "UPDATE jobs SET status = 'succeeded', "
            "finished_at = now() - make_interval(secs => $2) WHERE id = $1",
            job.id,
            age,
        )
        key = layout.job_export_log_key(job.id)
        await storage.put(internal, key, b"log", content_type="text/plain")
        old = time.time() - 2 * DAY
        os.utime(settings.storage_root / internal / key, (old, old))

    applied = gc(settings, "--apply")
    assert applied.returncode == 0, applied.stderr
    pruned = applied.stdout.splitlines()[0].split("\t")
    assert pruned[0] == "pruned" and int(pruned[1].split()[0]) >= 1, applied.stdout
    assert await queue.get_job(pool, jobs[0].id) is None
    assert await queue.get_job(pool, jobs[1].id) is not None
    assert await keys_under(storage, internal, layout.job_prefix(jobs[0].id)) == []
    assert await keys_under(storage, internal, layout.job_prefix(jobs[1].id)) != []
    await storage.aclose()
