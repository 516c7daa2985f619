"""Ending things (bearer token): `DELETE /api/v1/scenes/{sceneId}` (hidden at once,
then a `delete_scene` job), `DELETE /api/v1/segments/{segmentId}` (the clip leaves
its scene at once; a `remove_segment` job refreshes the poster, invalidates the CDN
and deletes its objects after the grace period, or at once if it never played) and
`POST /api/v1/segments/{segmentId}/retry` (a failed clip's transcode queued again,
by the same rules and row locks as `storyforge jobs retry`).
The rules are core/lifecycle.py's; this process forgets the scene in its own read
caches before answering, the others when the change's NOTIFY reaches them. Storage
writes and CDN invalidations are the workers' (infra/iam.tf: the origin never writes
or deletes published media), but for one: with a tag-purging CDN (CDN=varnish) a
deleted scene's tag is purged from here at once, so the cache answers 404 within a
second whatever the workers are busy with (its job purges again once the objects are
gone)."""

from __future__ import annotations

import logging

from aiohttp import web

from core import invalidation, layout, lifecycle
from core.storage import ObjectNotFound
from origin import keys
from origin.http.auth import require_token
from origin.http.errors import ApiError, not_found
from origin.playback.caches import forget_scene

log = logging.getLogger("storyforge.api")


def path_id(request: web.Request, name: str, prefix: str) -> str:
    value = request.match_info[name]
    if not layout.is_id(value, prefix):
        raise not_found(f"no such {'scene' if prefix == 'scn' else 'segment'}: malformed id")
    return value


def _accepted(body: dict[str, object]) -> web.Response:
    return web.json_response(body, status=202, headers={"Cache-Control": "no-store"})


async def delete_scene(request: web.Request) -> web.Response:
    require_token(request)
    scene_id = path_id(request, "scene_id", "scn")
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.POOL].acquire() as conn:
        job = await lifecycle.delete_scene(
            conn,
            scene_id,
            max_attempts=settings.job_max_attempts,
            webhooks=settings.webhook_urls,
        )
    if job is None:
        raise not_found(f"no such scene: {scene_id}")
    forget_scene(request.app[keys.READ_CACHES], scene_id)
    purges = request.app[keys.PURGES]
    if purges is not None:
        purges.request(scene_id, invalidation.scene_deleted(scene_id))
    log.info("scene deleted", extra={"sf_scene": scene_id, "job_id": job.id})
    return _accepted({"sceneId": scene_id, "jobId": job.id, "status": job.status})


async def remove_segment(request: web.Request) -> web.Response:
    require_token(request)
    segment_id = path_id(request, "segment_id", "seg")
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.POOL].acquire() as conn:
        removal = await lifecycle.remove_segment(
            conn,
            segment_id,
            grace=settings.segment_removal_grace,
            max_attempts=settings.job_max_attempts,
        )
    if removal is None:
        raise not_found(f"no such segment: {segment_id}")
    forget_scene(request.app[keys.READ_CACHES], removal.scene_id)
    log.info("segment removed", extra={"sf_segment": segment_id, "job_id": removal.job.id})
    after = removal.purge_after
    return _accepted(
        {
            "segmentId": segment_id,
            "sceneId": removal.scene_id,
            "jobId": removal.job.id,
            "status": "removed",
            # until then players holding the previous playlist can still fetch its files
            "filesRemovedAfter": after.isoformat().replace("+00:00", "Z") if after else None,
        }
    )


async def retry_segment(request: web.Request) -> web.Response:
    require_token(request)
    segment_id = path_id(request, "segment_id", "seg")
    settings = request.app[keys.SETTINGS]
    storage = request.app[keys.STORAGE]

    async def upload_exists(key: str) -> bool:
        try:
            await storage.head(settings.internal_bucket, key)
        except ObjectNotFound:
            return False
        return True

    async with request.app[keys.POOL].acquire() as conn:
        try:
            job = await lifecycle.retry_segment(conn, segment_id, upload_exists)
        except lifecycle.Declined as exc:
            raise ApiError(409, "conflict", str(exc)) from None
    if job is None:
        raise not_found(f"no such segment: {segment_id}")
    return _accepted(
        {
            "segmentId": segment_id,
            "jobId": job.id,
            "status": "processing",
            "statusUrl": f"/api/v1/segments/{segment_id}",
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_delete("/api/v1/scenes/{scene_id}", delete_scene)
    app.router.add_delete("/api/v1/segments/{segment_id}", remove_segment)
    app.router.add_post("/api/v1/segments/{segment_id}/retry", retry_segment)
