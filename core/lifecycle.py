"""A scene's life after publication: deleting a scene, removing a clip, retrying or
cancelling a job (the queries of `sql/lifecycle.sql`), and what the `delete_scene`
and `remove_segment` jobs do with storage.

The request side is one transaction each. It locks the jobs first, then the segment
(or export, or delivery), then the scene: the order a publish takes them (job lease,
segment, scene version), so the two serialise instead of deadlocking, and a retry or
a cancel racing a worker's publish, or each other, is decided once, on the locked
rows. A change readers must see at once notifies core.listen.CHANNEL in that
transaction.

- Deleting a scene hides it (every read wants `deleted_at IS NULL`), cancels its
  jobs and queues one `delete_scene` job (deduplicated per scene).
- Removing a ready clip marks it `removed` (out of the stitched scene, version
  bumped, its sequence free), cancels its refinement and queues `remove_segment`,
  which refreshes the poster and invalidates the scene's documents at once and
  deletes the clip's objects after the grace period; a processing or failed clip has
  its job cancelled and its row deleted at once, and its objects go with its
  `remove_segment` job right away.
- Retrying (the API's `POST /api/v1/segments/{id}/retry` for a clip, `storyforge
  jobs retry` for any job) queues a failed or dead job again with a fresh attempt
  budget, its clip or export processing again; cancelling (`storyforge jobs
  cancel`) ends a queued, running or failed job, fails its clip or export and lets a
  webhook delivery die, and fences a running job's worker out (core/queue.py). Both
  share one rule set; only the words of a refusal (`Declined`) differ by who asks.

The job side waits until no cancelled worker may still write under the scene or
clip (`queue.holders`), then deletes objects prefix by prefix
(`Storage.delete_prefix`: paginated listing, batches of at most 1,000, per-key
errors retried), and leaves the rows for last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from core import catalog, db, exports, layout, outbox, queue
from core.listen import CHANNEL
from core.settings import Settings
from core.storage import ObjectNotFound, Storage, StorageError

log = logging.getLogger("storyforge.lifecycle")

HOLDERS_POLL = 0.5  # seconds between looks at cancelled jobs whose worker may still write


RETRYABLE = ("failed", "dead")  # a job queued again by hand must have ended so
#: A job a repeated request answers instead of queuing a new one (issue 24): its
#: failure was deterministic (bad input, an impossible state), so running it again
#: would fail the same way; a retry is asked for explicitly. One that gave up after
#: its attempts (`dead`: storage or the database out of reach) is queued anew.
FAILED_FOR_GOOD = ("failed",)
CANCELLABLE = ("queued", "running", "failed")


class Declined(Exception):
    """The job or clip is not in a state that allows the retry or the cancel (why: the
    message, worded for whoever asked: the API about a clip, an operator about a job)."""


@dataclass(frozen=True)
class Removal:
    job: queue.Job
    scene_id: str
    published: bool  # it was playing: its CDN paths and the scene's documents change
    purge_after: datetime | None  # its objects outlive it until then (published only)


# --------------------------------------------------------------------------- requests


async def delete_scene(
    conn: asyncpg.Connection, scene_id: str, *, max_attempts: int, webhooks: Sequence[str]
) -> queue.Job | None:
    """Hide the scene, cancel its jobs, queue its `delete_scene` job and write its
    `scene.deleted` event (to `webhooks`); for a scene already deleted, its job in
    flight, the one that failed for good (`FAILED_FOR_GOOD`: answered until a retry),
    or a new one if the last one gave up. None: no such scene (or it is gone
    already)."""
    async with conn.transaction():
        await queue.lock_in_flight(conn, scene_id=scene_id)
        last = await queue.lock_latest_of_scene(conn, scene_id, "delete_scene")
        row = await conn.fetchrow(db.q("scene_lock"), scene_id)
        if row is None:
            return None
        newly = row["deleted_at"] is None
        if not newly and last is not None and last.status in FAILED_FOR_GOOD:
            return last
        if newly:
            await conn.fetchval(db.q("scene_hide"), scene_id, CHANNEL)
            await queue.cancel(conn, scene_id=scene_id, reason="the scene was deleted")
        job = await queue.enqueue(
            conn,
            "delete_scene",
            {"scene_id": scene_id},
            dedupe_key=f"delete_scene:{scene_id}",
            scene_id=scene_id,
            max_attempts=max_attempts,
        )
        if newly:
            data = {"sceneId": scene_id, "jobId": job.id}
            await outbox.emit(conn, webhooks, "scene.deleted", scene_id=scene_id, data=data)
        return job


async def remove_segment(
    conn: asyncpg.Connection, segment_id: str, *, grace: float, max_attempts: int
) -> Removal | None:
    """Take a clip out of its scene and queue its `remove_segment` job (see the
    module docstring), due now: for a published clip it refreshes the poster and
    invalidates the scene's documents at once, then waits out the grace period
    (`purge_after`) before deleting the clip's objects. None: no such clip in a live
    scene."""
    async with conn.transaction():
        await queue.lock_in_flight(conn, segment_id=segment_id)
        last = await queue.lock_latest(conn, segment_id, "remove_segment")
        row = await conn.fetchrow(db.q("segment_lock"), segment_id)
        if row is None or not row["scene_live"]:
            return None
        scene_id, status = row["scene_id"], row["status"]
        removed_at = row["removed_at"]
        if status == "removed" and last is not None and last.status in FAILED_FOR_GOOD:
            purge_after = removed_at + timedelta(seconds=grace) if removed_at else None
            return Removal(last, scene_id, True, purge_after)
        if status == "ready":
            # its refinement (issue 17) never publishes: cancelled with the clip
            await queue.cancel(conn, segment_id=segment_id, reason="the clip was removed")
            removed_at = await conn.fetchval(db.q("segment_unpublish"), segment_id, CHANNEL)
        elif status != "removed":  # never played: gone at once
            await queue.cancel(conn, segment_id=segment_id, reason="the clip was removed")
            await conn.fetchval(db.q("segment_drop_unpublished"), segment_id)
        published = status in ("ready", "removed")
        purge_after = removed_at + timedelta(seconds=grace) if published else None
        job = await queue.enqueue(
            conn,
            "remove_segment",
            {
                "scene_id": scene_id,
                "segment_id": segment_id,
                "published": published,
                "purge_after": purge_after.timestamp() if purge_after else None,
            },
            dedupe_key=f"remove_segment:{segment_id}",
            scene_id=scene_id,
            segment_id=segment_id,
            max_attempts=max_attempts,
        )
    return Removal(job, scene_id, published, purge_after)


def segment_retry_refusal(status: str, job: queue.Job | None) -> str | None:
    """Why a clip in `status` whose newest transcode is `job` is not retried (the
    API's words); None: it may be."""
    if status == "ready":
        return "the clip is published; remove it and upload again to replace it"
    if job is None or job.in_flight:
        return "the clip's transcode has not failed (it is queued or running)"
    if job.status == "cancelled":
        return (
            f"the clip's transcode was cancelled ({job.last_error or 'no reason given'}); "
            "upload the clip again"
        )
    if job.status not in RETRYABLE:
        return f"the clip's transcode is {job.status}; it cannot be queued again"
    return None


def job_retry_refusal(job: queue.Job) -> str | None:
    """Why a job is not retried (the operator's words); None: it may be."""
    if job.status not in RETRYABLE:
        return f"job {job.id} is {job.status}: only failed or dead jobs are retried"
    if job.kind == "webhook":
        return (
            f"job {job.id} is a webhook delivery that gave up: later events of its scene "
            "went out after it, so it is not re-sent"
        )
    return None


def job_cancel_refusal(job: queue.Job) -> str | None:
    """Why a job is not cancelled (the operator's words); None: it may be."""
    if job.status not in CANCELLABLE:
        return f"job {job.id} is {job.status}: only queued, running or failed jobs are cancelled"
    if job.kind == "delete_scene":
        return f"job {job.id} deletes a scene: it is not cancelled (its objects must still go)"
    return None


async def retry_segment(
    conn: asyncpg.Connection, segment_id: str, upload_exists: Callable[[str], Awaitable[bool]]
) -> queue.Job | None:
    """Queue a failed or dead clip's transcode again from its kept upload (a fresh
    attempt budget; the clip is `processing` again): `POST .../segments/{id}/retry`.
    None: no such clip in a live scene; Declined: it cannot be (published, in flight,
    cancelled, upload gone)."""
    async with conn.transaction():
        job = await queue.lock_latest(conn, segment_id, "transcode")
        row = await conn.fetchrow(db.q("segment_lock"), segment_id)
        if row is None or not row["scene_live"] or row["status"] == "removed":
            return None
        why = segment_retry_refusal(row["status"], job)
        if why is not None:
            raise Declined(why)
        assert job is not None  # a clip without a transcode was refused
        return await _requeue(
            conn,
            job,
            upload_exists,
            upload_gone="the clip's upload is no longer kept; upload it again",
            key_held="the clip's transcode is already queued again",
        )


async def retry_job(
    conn: asyncpg.Connection, job_id: str, upload_exists: Callable[[str], Awaitable[bool]]
) -> queue.Job | None:
    """Queue a failed or dead job again with a fresh attempt budget (its errors kept):
    `storyforge jobs retry`. Its clip or export is processing again. None: no such
    job; Declined: why not (not failed or dead, a webhook delivery, a transcode whose
    upload is gone, its dedupe key held by another job in flight)."""
    async with conn.transaction():
        job = await _lock_unless_refused(conn, job_id, job_retry_refusal)
        if job is None:
            return None
        return await _requeue(
            conn,
            job,
            upload_exists,
            upload_gone=f"job {job.id}: the clip's upload is no longer kept; upload it again",
            key_held=f"job {job.id}: another job in flight holds its dedupe key {job.dedupe_key!r}",
        )


async def _lock_unless_refused(
    conn: asyncpg.Connection, job_id: str, refusal: Callable[[queue.Job], str | None]
) -> queue.Job | None:
    """In the caller's transaction, the job's row locked (the first lock an operator's
    retry or cancel takes) and its status checked by `refusal`: Declined with its
    reason, or the job; None: no such job."""
    job = await queue.lock(conn, job_id)
    if job is not None and (why := refusal(job)) is not None:
        raise Declined(why)
    return job


async def _requeue(
    conn: asyncpg.Connection,
    job: queue.Job,
    upload_exists: Callable[[str], Awaitable[bool]],
    *,
    upload_gone: str,
    key_held: str,
) -> queue.Job:
    """In the transaction holding `job`'s row lock, its status checked: queue it again
    and make what it works for processing again. A transcode needs its kept upload."""
    if job.kind == "transcode" and not await upload_exists(layout.upload_key(job.id)):
        raise Declined(upload_gone)
    requeued = await queue.requeue(conn, job.id)
    if requeued is None:  # locked and failed or dead: another job holds its dedupe key
        raise Declined(key_held)
    if job.kind == "transcode" and job.segment_id:
        await conn.fetchval(db.q("segment_retry"), job.segment_id)
    elif job.kind == "export":
        await conn.fetchval(db.q("export_retry"), job.id)
    return requeued


async def lost_for_good(
    conn: asyncpg.Connection, job: queue.Job, *, webhooks: Sequence[str]
) -> None:
    """A job its lease's expiry made dead (its worker was lost on its last attempt), in
    the reaper's transaction (`queue.requeue_expired`): a transcode's clip fails, with
    its `segment.failed` event to `webhooks`, as its handler fails it after a last
    attempt that raised; otherwise the clip would say `processing` for good. What the
    lost attempt stored under the clip's folder stays until the scene goes, or an
    operator's retry (`storyforge jobs retry`: processing again) writes it anew."""
    if job.kind == "transcode" and job.segment_id:
        reason = f"transcoding failed after {job.attempts} attempts: {job.last_error}"
        await catalog.fail_segment(conn, job.segment_id, reason, webhooks=webhooks)


async def cancel_job(
    conn: asyncpg.Connection, job_id: str, *, reason: str, webhooks: Sequence[str]
) -> queue.Job | None:
    """Cancel a queued, running or failed job (`storyforge jobs cancel`): a running
    job keeps its lease token, so its worker's fenced writes (heartbeat, publish)
    fail from now on; a transcode's clip fails with `reason`, an export likewise (each
    with its event to `webhooks`), and a webhook job's delivery is dead so the scene's
    next one goes out. None: no such job; Declined: why not (finished, or a
    delete_scene job: a deleted scene's objects must still go)."""
    async with conn.transaction():
        job = await _lock_unless_refused(conn, job_id, job_cancel_refusal)
        if job is None:
            return None
        cancelled = await queue.cancel_one(conn, job_id, reason)
        if cancelled is None:  # the row is locked and its status was checked
            raise RuntimeError(f"job {job_id} could not be cancelled under its lock")
        if job.kind == "transcode" and job.segment_id:
            await catalog.fail_segment(conn, job.segment_id, reason, webhooks=webhooks)
        elif job.kind == "export":
            export = await conn.fetchrow(db.q("export_by_job"), job_id)
            if export is not None:
                await exports.fail(conn, export["id"], reason, webhooks=webhooks)
        elif job.kind == "webhook":
            delivery = await outbox.delivery_for_job(conn, job_id)
            if delivery is not None and delivery.status == "queued":
                await outbox.finish_delivery(conn, delivery, delivered=False)
    return cancelled


async def segment_profiles(conn: asyncpg.Connection, segment_id: str) -> list[str]:
    return [r["profile"] for r in await conn.fetch(db.q("segment_profiles"), segment_id)]


# --------------------------------------------------------------------------- jobs


async def scene_deleted(conn: asyncpg.Connection, scene_id: str) -> bool | None:
    """True: deleted, rows still there; False: live; None: its rows are gone."""
    return await conn.fetchval(db.q("scene_deleted_state"), scene_id)


async def purge_scene(conn: asyncpg.Connection, scene_id: str) -> bool:
    """Delete a deleted scene's rows (segments, renditions, exports cascade)."""
    return await conn.fetchval(db.q("scene_purge"), scene_id) is not None


async def purge_removed_segment(conn: asyncpg.Connection, segment_id: str) -> bool:
    return await conn.fetchval(db.q("segment_purge_removed"), segment_id) is not None


async def wait_for_holders(
    pool: asyncpg.Pool,
    *,
    scene_id: str | None = None,
    segment_id: str | None = None,
    tick: Callable[[], Awaitable[None]],
) -> None:
    """Until no cancelled job of the scene or clip may still have a worker writing
    (each lets go when its handler stops, or its lease expires); `tick` runs between
    looks (the caller's heartbeat)."""
    while await queue.holders(pool, scene_id=scene_id, segment_id=segment_id):
        await tick()
        await asyncio.sleep(HOLDERS_POLL)


def scene_prefixes(
    settings: Settings, scene_id: str, job_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """(bucket, prefix) of every object of a scene: videos `{sceneId}/`, exports
    `{sceneId}/`, assets `scenes/{sceneId}/`, internal `jobs/{jobId}/` of its jobs."""
    return [
        (settings.videos_bucket, layout.scene_prefix(scene_id)),
        (settings.exports_bucket, layout.scene_prefix(scene_id)),
        (settings.assets_bucket, layout.scene_assets_prefix(scene_id)),
        *((settings.internal_bucket, layout.job_prefix(j)) for j in job_ids),
    ]


def segment_prefixes(
    settings: Settings, scene_id: str, segment_id: str, job_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """(bucket, prefix) of every object of one clip: its videos folder and the
    internal objects of its jobs (upload, log, frames)."""
    return [
        (settings.videos_bucket, layout.segment_prefix(scene_id, segment_id)),
        *((settings.internal_bucket, layout.job_prefix(j)) for j in job_ids),
    ]


async def delete_prefixes(
    storage: Storage,
    prefixes: Sequence[tuple[str, str]],
    on_progress: Callable[[int, int], Awaitable[None]] | None = None,
) -> int:
    """Delete every object under each (bucket, prefix); returns how many. Keys that
    still fail after delete_prefix's retries raise StorageError (naming a few), once
    every prefix has been tried, so a retried job has less left to do."""
    deleted = 0
    failed: list[tuple[str, str]] = []
    for done, (bucket, prefix) in enumerate(prefixes, start=1):
        result = await storage.delete_prefix(bucket, prefix)
        deleted += result.deleted
        failed.extend((f"{bucket}/{key}", error) for key, error in result.errors)
        if on_progress is not None:
            await on_progress(done, len(prefixes))
    if failed:
        sample = "; ".join(f"{key}: {error}" for key, error in failed[:3])
        raise StorageError(f"{len(failed)} objects could not be deleted ({sample})")
    return deleted


async def refresh_poster(
    pool: asyncpg.Pool, storage: Storage, settings: Settings, scene_id: str
) -> None:
    """The scene poster is the large thumbnail of its first ready clip: written again
    from it (after the first clip was removed), or deleted when none is left. Written
    first, then checked: a scene deleted meanwhile loses it again."""
    async with pool.acquire() as conn:
        first = await catalog.first_ready_segment(conn, scene_id)
    key = layout.poster_key(scene_id)
    if first is None:
        await storage.delete(settings.assets_bucket, key)
        return
    source = layout.segment_key(scene_id, first, "thumbnail_large.jpg")
    try:
        async with await storage.get(settings.videos_bucket, source) as obj:
            image = await obj.read()
    except ObjectNotFound:
        log.warning("poster of %s not refreshed: %s is missing", scene_id, source)
        return
    # the poster changes when an earlier clip publishes or the first clip is removed
    meta = layout.asset_meta(key)
    await storage.put(
        settings.assets_bucket,
        key,
        image,
        content_type=meta.content_type,
        cache_control=meta.cache_control,
        tags={"type": meta.tag},
    )
    async with pool.acquire() as conn:  # deleted meanwhile: its job may have run already
        if await catalog.get_live_scene(conn, scene_id) is None:
            await storage.delete(settings.assets_bucket, key)
