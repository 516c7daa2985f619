"""Waiting for jobs and reading what storage holds: for tests of the jobs that end
things (delete_scene, remove_segment). Workers in-process: tests/helpers/workers.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import asyncpg

from core import queue
from core.storage import Storage


async def wait_job(
    pool: asyncpg.Pool, job_id: str, statuses: Iterable[str] = ("succeeded",), timeout=60.0
) -> queue.Job:
    """The job once its status is one of `statuses` (AssertionError after `timeout`)."""
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        job = await queue.get_job(pool, job_id)
        assert job is not None, job_id
        if job.status in wanted:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job.status}, not {wanted}: {job.errors}")
        await asyncio.sleep(0.1)


async def keys_under(storage: Storage, bucket: str, prefix: str = "") -> list[str]:
    return [info.key async for info in storage.list(bucket, prefix)]


async def scene_objects(storage: Storage, settings, scene_id: str, job_ids=()) -> list[str]:
    """`bucket/key` of every object under a scene's prefixes (videos and exports
    `{sceneId}/`, assets `scenes/{sceneId}/`) and its jobs' internal ones, sorted. A
    `{sceneId}/{segmentId}` as `scene_id` lists one clip's objects. The jobs' objects
    come from one listing of `jobs/`, not one per job (hundreds of calls on moto)."""
    found = []
    for bucket, prefix in [
        (settings.videos_bucket, f"{scene_id}/"),
        (settings.exports_bucket, f"{scene_id}/"),
        (settings.assets_bucket, f"scenes/{scene_id}/"),
    ]:
        found += [f"{bucket}/{k}" for k in await keys_under(storage, bucket, prefix)]
    job_prefixes = tuple(f"jobs/{j}/" for j in job_ids)
    if job_prefixes:
        found += [
            f"{settings.internal_bucket}/{k}"
            for k in await keys_under(storage, settings.internal_bucket, "jobs/")
            if k.startswith(job_prefixes)
        ]
    return sorted(found)
