"""The JSON API the StoryForge app calls: users, scenes, clip uploads and their status."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core import catalog, intake, layout
from origin import keys
from origin.http.auth import require_token
from origin.http.body import chunks, defer_continue, json_body
from origin.http.errors import ApiError, bad_request, not_found, without_paths

log = logging.getLogger("storyforge.api")
UPLOAD_CHUNK = 256 * 1024


def _text_field(body: dict[str, Any], name: str, max_len: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"'{name}' must be a non-empty string")
    value = value.strip()
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise bad_request(f"'{name}' must not contain NUL characters")
    if len(value) > max_len:
        raise bad_request(f"'{name}' is longer than {max_len} characters")
    return value


def _path_id(request: web.Request, name: str, prefix: str) -> str:
    value = request.match_info[name]
    if not layout.is_id(value, prefix):
        raise not_found(f"no such {'scene' if prefix == 'scn' else 'segment'}: malformed id")
    return value


async def create_user(request: web.Request) -> web.Response:
    require_token(request)
    username = _text_field(await json_body(request), "username", 64)
    async with request.app[keys.POOL].acquire() as conn:
        try:
            user = await catalog.create_user(conn, username)
        except catalog.Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response({"id": user.id, "username": user.username}, status=201)


async def create_scene(request: web.Request) -> web.Response:
    require_token(request)
    title = _text_field(await json_body(request), "title", 300)
    async with request.app[keys.POOL].acquire() as conn:
        scene = await catalog.create_scene(conn, title)
    return web.json_response({"id": scene.id, "title": scene.title}, status=201)


async def upload_segment(request: web.Request) -> web.Response:
    """Stream a clip into the internal bucket, then create the segment and its
    transcode job in one transaction (202). The body is never held in memory, and is
    read only once the token, query, type and size checks passed and an upload slot
    was free (origin/http/body.py: 100 Continue, idle timeout, 503 past the cap)."""
    require_token(request)
    settings = request.app[keys.SETTINGS]
    scene_id = _path_id(request, "scene_id", "scn")
    contributor = request.query.get("contributor", "")
    if not intake.contributor_ok(contributor):
        raise bad_request("query parameter 'contributor' must be a user id (usr_...)")
    sequence: int | None = None
    if "sequence" in request.query:
        try:
            sequence = intake.parse_sequence(request.query["sequence"])
        except ValueError as exc:
            raise bad_request(str(exc)) from None
    if not intake.upload_type_ok(request.content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"uploads must be a video (video/*), not {request.content_type!r}",
        )
    length = request.content_length
    if length is not None and length > settings.max_upload_bytes:
        raise ApiError(
            413, "too_large", f"the upload is larger than {settings.max_upload_bytes} bytes"
        )
    if length == 0:
        raise bad_request("the upload is empty", "empty_upload")
    with request.app[keys.UPLOAD_SLOTS].take():
        return await _receive(request, scene_id, contributor, sequence)


async def _receive(
    request: web.Request, scene_id: str, contributor: str, sequence: int | None
) -> web.Response:
    settings = request.app[keys.SETTINGS]
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn:
        missing = await intake.missing_target(conn, scene_id, contributor)
    if missing is not None:
        raise not_found(missing)

    segment_id = layout.new_id("seg")
    job_id = layout.new_id("job")
    upload_key = layout.upload_key(job_id)
    storage = request.app[keys.STORAGE]
    received = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal received
        async for chunk in chunks(request, UPLOAD_CHUNK, settings.body_idle_timeout):
            received += len(chunk)
            if received > settings.max_upload_bytes:
                raise _TooLarge()
            yield chunk

    try:
        await storage.put(
            settings.internal_bucket,
            upload_key,
            body(),
            content_type="application/octet-stream",
            cache_control="private, no-store",
            tags={"type": layout.INTERNAL_TAG},
        )
    except _TooLarge:
        await storage.delete_prefix(settings.internal_bucket, layout.job_prefix(job_id))
        raise ApiError(
            413, "too_large", f"the upload is larger than {settings.max_upload_bytes} bytes"
        ) from None
    if received == 0:
        await storage.delete_prefix(settings.internal_bucket, layout.job_prefix(job_id))
        raise bad_request("the upload is empty", "empty_upload")

    try:
        async with pool.acquire() as conn, conn.transaction():
            seq = await intake.segment_and_transcode(
                conn,
                scene_id=scene_id,
                segment_id=segment_id,
                job_id=job_id,
                sequence=sequence,
                contributor=contributor,
                max_attempts=settings.job_max_attempts,
            )
    except catalog.Conflict as exc:
        await storage.delete_prefix(settings.internal_bucket, layout.job_prefix(job_id))
        raise ApiError(409, "conflict", str(exc)) from None
    except catalog.SceneGone as exc:  # deleted while the body streamed in
        await storage.delete_prefix(settings.internal_bucket, layout.job_prefix(job_id))
        raise not_found(str(exc)) from None
    except BaseException:
        await storage.delete_prefix(settings.internal_bucket, layout.job_prefix(job_id))
        raise
    log.info("upload accepted", extra={"sf_segment": segment_id, "sf_bytes": received})
    return web.json_response(
        {
            "segmentId": segment_id,
            "jobId": job_id,
            "sequence": seq,
            "statusUrl": f"/api/v1/segments/{segment_id}",
        },
        status=202,
        headers={"Location": f"/api/v1/segments/{segment_id}"},
    )


class _TooLarge(Exception):
    pass


async def segment_status(request: web.Request) -> web.Response:
    segment_id = _path_id(request, "segment_id", "seg")
    async with request.app[keys.POOL].acquire() as conn:
        row = await catalog.segment_status(conn, segment_id)
    if row is None:
        raise not_found(f"no such segment: {segment_id}")
    status = row["status"]
    progress = 100 if status == "ready" else int(row["progress"] or 0)
    if status == "processing":
        progress = min(progress, 99)
    error = without_paths(row["error"]) if status == "failed" and row["error"] else None
    settings = request.app[keys.SETTINGS]
    body: dict[str, Any] = {
        "id": row["id"],
        "sceneId": row["scene_id"],
        "sequence": row["sequence"],
        "contributorId": row["contributor_id"],
        "status": status,
        "progress": progress,
        "error": error,
        "duration": row["duration"],
        "jobId": row["job_id"],
        "attempts": row["attempts"],
        "createdAt": row["created_at"].isoformat(),
        "readyAt": row["ready_at"].isoformat() if row["ready_at"] else None,
    }
    if status == "ready":
        path = layout.cdn_path(row["scene_id"], row["id"], "master.m3u8")
        body["hlsUrl"] = layout.cdn_url(settings.cdn_base_url, path)
        # issue 17: playable as the fast ladder, then `final` once refined
        body["quality"] = row["quality"]
        body["generation"] = row["generation"]
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/users", create_user)
    app.router.add_post("/api/v1/scenes", create_scene)
    app.router.add_post(
        "/api/v1/scenes/{scene_id}/segments", upload_segment, expect_handler=defer_continue
    )
    app.router.add_get("/api/v1/segments/{segment_id}", segment_status)
