"""Waiting for jobs, running workers with chosen handlers, and reading what storage
holds: for tests of the jobs that end things (delete_scene, remove_segment)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping

import asyncpg

from core import queue
from core.storage import Storage
from workers.runtime.loop import Handler, run_worker


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


@contextlib.asynccontextmanager
async def workers(
    pool: asyncpg.Pool, handlers: Mapping[str, Handler], *, lease_seconds: float = 10.0
) -> AsyncIterator[None]:
    """One in-process worker (the real job loop) with `handlers` while the block runs."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            pool,
            handlers,
            lease_seconds=lease_seconds,
            poll_interval=0.2,
            grace_seconds=5,
            stop=stop,
            name="test-lifecycle-worker",
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def keys_under(storage: Storage, bucket: str, prefix: str = "") -> list[str]:
    return [info.key async for info in storage.list(bucket, prefix)]


async def scene_objects(storage: Storage, settings, scene_id: str, job_ids=()) -> list[str]:
    """`bucket/key` of every object under a scene's prefixes (videos and exports
    `{sceneId}/`, assets `scenes/{sceneId}/`) and its jobs' internal ones, sorted. A
    `{sceneId}/{segmentId}` as `scene_id` lists one clip's objects."""
    found = []
    for bucket, prefix in [
        (settings.videos_bucket, f"{scene_id}/"),
        (settings.exports_bucket, f"{scene_id}/"),
        (settings.assets_bucket, f"scenes/{scene_id}/"),
        *((settings.internal_bucket, f"jobs/{j}/") for j in job_ids),
    ]:
        found += [f"{bucket}/{k}" for k in await keys_under(storage, bucket, prefix)]
    return sorted(found)
