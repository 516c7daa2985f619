"""The ingest API (bearer token unless said): users and scenes, a clip's upload in one
request (`POST /api/v1/scenes/{sceneId}/segments`, the body streamed to the internal
bucket) or resumable (tus 1.0.0 under `/api/v1/uploads`: OPTIONS discovery, POST
creation and creation-with-upload, HEAD, PATCH, DELETE termination and
X-HTTP-Method-Override; the upload URL is the capability, so HEAD, PATCH and DELETE
need no token, and every tus answer, errors included, carries Tus-Resumable), and a
clip's status (`GET /api/v1/segments/{segmentId}`, no token). Bodies are read within
origin/http/body.py's bounds (upload slots, 100 Continue after the checks, idle
timeout); a tus body cut short by the client or the timeout keeps what arrived. The
checks an upload passes are intake.py's, the tus protocol tus.py's, its work
tus_service.py's, its state core/uploads.py's."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core import captions, catalog, layout, queue, uploads
from origin import keys
from origin.http.auth import require_token
from origin.http.body import BodyTimeout, ClientClosed, chunks, defer_continue, json_body
from origin.http.errors import ApiError, bad_request, not_found, without_paths
from origin.ingest import intake, tus, tus_service
from origin.ingest.tus import TusError

log = logging.getLogger("storyforge.api")
UPLOAD_CHUNK = 256 * 1024  # bytes read at a time: the raw POST
TUS_CHUNK = 1024 * 1024  # ... and a tus body (as written)
UPLOADS_PATH = "/api/v1/uploads"
# a tus body that ends early (client gone, idle timeout): what arrived is kept (§PATCH)
_CUT_SHORT = (ClientClosed, BodyTimeout)


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
    progress = queue.progress_shown(status, row["progress"])
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


# --------------------------------------------------------------------------- tus 1.0.0


def _location(upload: uploads.Upload) -> dict[str, str]:
    """A completed upload points at its segment's status (GET /api/v1/segments/{id})."""
    if upload.status == "completed":
        return {"Location": f"/api/v1/segments/{upload.segment_id}"}
    return {}


def _refused(exc: TusError) -> ApiError:
    headers = tus.answer_fields()
    if exc.status == 412:
        headers["Tus-Version"] = tus.VERSION
    return ApiError(exc.status, exc.code, exc.message, headers)


async def options(request: web.Request) -> web.Response:
    """OPTIONS (§OPTIONS): what this server speaks; needs no Tus-Resumable."""
    max_size = request.app[keys.SETTINGS].max_upload_bytes
    return web.Response(status=204, headers=tus.discovery_fields(max_size))


def _has_body(request: web.Request) -> bool:
    return bool(request.content_length) or (
        request.content_length is None and request.headers.get("Transfer-Encoding") is not None
    )


async def create(request: web.Request) -> web.Response:
    """POST: a new upload (201, Location); with a body (creation-with-upload) its
    first bytes are stored at once and Upload-Offset tells how many."""
    if request.headers.get("X-HTTP-Method-Override"):
        raise _refused(TusError(405, "method_not_allowed", "override the method on an upload URL"))
    try:
        require_token(request)
    except ApiError as exc:
        exc.headers |= tus.answer_fields()
        raise
    app = request.app
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        settings = app[keys.SETTINGS]
        limits = captions.Limits(settings.captions_max_bytes, settings.captions_max_cues)
        new = tus_service.new_upload(request.headers, settings.max_upload_bytes, limits)
        with_body = _has_body(request)
        if with_body and request.content_type != tus.OFFSET_TYPE:
            raise TusError(415, "unsupported_media_type", f"a body must be {tus.OFFSET_TYPE}")
        checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
        upload = await tus_service.create(
            app[keys.POOL], app[keys.STORAGE], app[keys.SETTINGS], new
        )
        headers = {"Location": f"{UPLOADS_PATH}/{upload.id}"}
        if with_body:
            with app[keys.UPLOAD_SLOTS].take():
                upload = await _store(request, upload.id, 0, checksum)
            headers["Upload-Offset"] = str(upload.received)
    except TusError as exc:
        raise _refused(exc) from None
    expires = upload.expires_at if upload.status == "open" else None
    headers |= tus.answer_fields(expires) | _location(upload)
    return web.Response(status=201, headers=headers)


async def _store(
    request: web.Request, upload_id: str, offset: int, checksum: tus.Checksum | None
) -> uploads.Upload:
    """The request's body stored at `offset` (tus_service.store); a body cut short
    is committed as far as it came, then its cause is raised (client gone, 408)."""
    app = request.app
    cut: list[Exception] = []

    async def read() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks(request, TUS_CHUNK, app[keys.SETTINGS].body_idle_timeout):
                yield chunk
        except _CUT_SHORT as exc:
            cut.append(exc)
            raise

    upload = await tus_service.store(
        app[keys.POOL],
        app[keys.STORAGE],
        app[keys.SETTINGS],
        app[keys.PARKED_LEASES],
        upload_id,
        offset,
        read(),
        content_length=request.content_length,
        checksum=checksum,
        cut_short=_CUT_SHORT,
    )
    if cut:
        if isinstance(cut[0], ApiError):
            cut[0].headers |= tus.answer_fields() | {"Upload-Offset": str(upload.received)}
        raise cut[0]
    return upload


def _upload_id(request: web.Request) -> str:
    return request.match_info["upload_id"]


async def head(request: web.Request) -> web.Response:
    """HEAD (§HEAD): the offset, length and metadata; never cached. An upload whose
    bytes all arrived but whose completion was cut short is completed here."""
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        app = request.app
        pool = app[keys.POOL]
        upload = await uploads.get(pool, _upload_id(request))
        if upload is None or upload.status not in ("open", "completed"):
            raise await tus_service.refusal(pool, _upload_id(request), None)
        if upload.status == "open" and upload.whole:
            upload = await tus_service.finish_interrupted(
                pool, app[keys.STORAGE], app[keys.SETTINGS], upload
            )
        elif upload.status == "open" and await uploads.expired(pool, upload.id):
            raise await tus_service.refusal(pool, upload.id, None)  # 410: it expired
    except TusError as exc:
        raise _refused(exc) from None
    headers = {"Upload-Offset": str(upload.received), "Upload-Length": str(upload.length)}
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    expires = upload.expires_at if upload.status == "open" else None
    return web.Response(
        status=200, headers=headers | tus.answer_fields(expires) | _location(upload)
    )


async def patch(request: web.Request) -> web.Response:
    """PATCH (§PATCH): bytes at Upload-Offset (409 elsewhere), 204 with the new offset;
    the final one also points at the segment (Location)."""
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        if request.content_type != tus.OFFSET_TYPE:
            raise TusError(415, "unsupported_media_type", f"PATCH bodies must be {tus.OFFSET_TYPE}")
        offset = tus.parse_int("Upload-Offset", request.headers.get("Upload-Offset"))
        checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
        with request.app[keys.UPLOAD_SLOTS].take():
            upload = await _store(request, _upload_id(request), offset, checksum)
    except TusError as exc:
        raise _refused(exc) from None
    expires = upload.expires_at if upload.status == "open" else None
    headers = {"Upload-Offset": str(upload.received)} | tus.answer_fields(expires)
    return web.Response(status=204, headers=headers | _location(upload))


async def delete(request: web.Request) -> web.Response:
    """DELETE (Termination): the upload and its stored bytes are gone (204); later
    requests get 404. A completed upload is a clip now (DELETE its segment)."""
    app = request.app
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        await tus_service.terminate(
            app[keys.POOL],
            app[keys.STORAGE],
            app[keys.SETTINGS],
            app[keys.PARKED_LEASES],
            _upload_id(request),
        )
    except TusError as exc:
        raise _refused(exc) from None
    return web.Response(status=204, headers=tus.answer_fields())


async def overridden(request: web.Request) -> web.StreamResponse:
    """POST on an upload URL with X-HTTP-Method-Override (§Headers)."""
    method = tus.effective_method(request.method, request.headers.get("X-HTTP-Method-Override"))
    handler = {"PATCH": patch, "DELETE": delete, "HEAD": head}.get(method)
    if handler is None:
        raise _refused(TusError(405, "method_not_allowed", f"{method} is not an upload method"))
    return await handler(request)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/users", create_user)
    app.router.add_post("/api/v1/scenes", create_scene)
    app.router.add_post(
        "/api/v1/scenes/{scene_id}/segments", upload_segment, expect_handler=defer_continue
    )
    app.router.add_get("/api/v1/segments/{segment_id}", segment_status)
    app.router.add_route("OPTIONS", UPLOADS_PATH, options)
    app.router.add_post(UPLOADS_PATH, create, expect_handler=defer_continue)
    item = f"{UPLOADS_PATH}/{{upload_id}}"
    app.router.add_route("OPTIONS", item, options)
    app.router.add_route("HEAD", item, head)
    app.router.add_route("PATCH", item, patch, expect_handler=defer_continue)
    app.router.add_route("DELETE", item, delete)
    app.router.add_post(item, overridden, expect_handler=defer_continue)
