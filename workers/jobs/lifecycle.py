"""The `delete_scene` and `remove_segment` jobs (DESIGN.md "Jobs"): what is left of a
deleted scene or a removed clip, removed from storage, the CDN and the database.

Both run the same steps, each harmless to repeat, so a job killed at any point is
finished by its next attempt: wait until no cancelled job of the scene (clip) may
still have a worker writing under it; delete every object under its prefixes in the
four buckets (core/lifecycle.py); invalidate its CDN paths; delete its rows in a
transaction fenced by the job's lease (rows last: while they exist, a rerun knows
what to delete).

A published clip's job first announces the removal (poster refreshed, the scene's
documents and poster invalidated), then defers itself to the end of the grace period
(`purge_after`): players holding the previous playlist keep fetching its files.
"""

from __future__ import annotations

import time

from core import invalidation, layout, lifecycle, queue
from core.cdn import Invalidations
from core.settings import Settings
from core.storage import Storage
from workers.runtime.loop import Deferred, Handler, JobContext, PermanentError

# progress (fractions of the job): waiting for cancelled workers (STARTED while it
# waits), then deleting prefix after prefix (to DELETED), invalidating, purging the rows
STARTED, WAITED, DELETED = 0.01, 0.05, 0.9


def _payload_id(ctx: JobContext, name: str, prefix: str) -> str:
    value = str(ctx.job.payload.get(name, ""))
    if not layout.is_id(value, prefix):
        raise PermanentError(f"malformed {ctx.job.kind} job payload: {name}")
    return value


async def _delete_objects(
    ctx: JobContext, storage: Storage, prefixes: list[tuple[str, str]]
) -> None:
    async def progress(done: int, total: int) -> None:
        await ctx.progress(WAITED + (DELETED - WAITED) * done / total)

    await lifecycle.delete_prefixes(storage, prefixes, progress)


def make_delete_scene(
    settings: Settings, storage: Storage, invalidations: Invalidations
) -> Handler:
    async def delete_scene(ctx: JobContext) -> None:
        scene_id = _payload_id(ctx, "scene_id", "scn")
        async with ctx.pool.acquire() as conn:
            state = await lifecycle.scene_deleted(conn, scene_id)
        if state is None:
            return  # its rows are gone: an earlier attempt finished everything
        if not state:
            raise PermanentError(f"scene {scene_id} is not deleted")
        await lifecycle.wait_for_holders(
            ctx.pool, scene_id=scene_id, tick=lambda: ctx.progress(STARTED)
        )
        await ctx.progress(WAITED)
        async with ctx.pool.acquire() as conn:
            job_ids = await queue.job_ids_of(conn, scene_id=scene_id, but=ctx.job_id)
        await _delete_objects(ctx, storage, lifecycle.scene_prefixes(settings, scene_id, job_ids))
        await invalidations.invalidate(scene_id, invalidation.scene_deleted(scene_id))
        async with ctx.pool.acquire() as conn, conn.transaction():
            await ctx.fence(conn)
            await lifecycle.purge_scene(conn, scene_id)

    return delete_scene


def make_remove_segment(
    settings: Settings, storage: Storage, invalidations: Invalidations
) -> Handler:
    async def remove_segment(ctx: JobContext) -> None:
        scene_id = _payload_id(ctx, "scene_id", "scn")
        segment_id = _payload_id(ctx, "segment_id", "seg")
        payload = ctx.job.payload
        if payload.get("published") and not payload.get("announced"):
            await _announce(ctx, scene_id, segment_id)
        left = float(payload.get("purge_after") or 0) - time.time()
        if left > 0:
            raise Deferred(left, {"announced": True}, "the clip's files outlive it a while")
        await lifecycle.wait_for_holders(
            ctx.pool, segment_id=segment_id, tick=lambda: ctx.progress(STARTED)
        )
        await ctx.progress(WAITED)
        async with ctx.pool.acquire() as conn:
            job_ids = await queue.job_ids_of(conn, segment_id=segment_id, but=ctx.job_id)
        prefixes = lifecycle.segment_prefixes(settings, scene_id, segment_id, job_ids)
        await _delete_objects(ctx, storage, prefixes)
        if payload.get("published"):
            await invalidations.invalidate(
                scene_id, invalidation.segment_removed(scene_id, segment_id)
            )
        async with ctx.pool.acquire() as conn, conn.transaction():
            await ctx.fence(conn)
            await lifecycle.purge_removed_segment(conn, segment_id)

    async def _announce(ctx: JobContext, scene_id: str, segment_id: str) -> None:
        """A published clip just left its scene: the poster may change (it was the
        first clip), and the scene's documents and poster are stale on the CDN."""
        await lifecycle.refresh_poster(ctx.pool, storage, settings, scene_id)
        async with ctx.pool.acquire() as conn:
            profiles = await lifecycle.segment_profiles(conn, segment_id)
        await invalidations.invalidate(
            scene_id,
            invalidation.scene_documents(
                scene_id, profiles, query_variants=settings.invalidate_query_variants
            )
            | invalidation.poster(scene_id),
        )

    return remove_segment
