"""tus 1.0.0 resumable uploads under `/api/v1/uploads` (core/tus.py has the
protocol, core/uploads.py the state and bytes): OPTIONS discovery, POST creation
(bearer token; creation-with-upload), HEAD, PATCH, DELETE (termination), and
X-HTTP-Method-Override. The upload URL is the capability: HEAD, PATCH and DELETE
need no token. Every answer, errors included, carries Tus-Resumable. Bodies are read
within origin/http/body.py's bounds (upload slots, 100 Continue after the checks, idle
timeout); a body cut short by the client or the timeout keeps what arrived."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from core import intake, layout, tus, uploads
from core.storage import StorageError
from core.tus import TusError
from origin import keys
from origin.http.auth import require_token
from origin.http.body import BodyTimeout, ClientClosed, chunks, defer_continue
from origin.http.errors import ApiError

log = logging.getLogger("storyforge.uploads")
BODY_CHUNK = 1024 * 1024  # bytes read (and written) at a time
UPLOADS_PATH = "/api/v1/uploads"
# a body that ends early (client gone, idle timeout): what arrived is kept (tus §PATCH)
_CUT_SHORT = (ClientClosed, BodyTimeout)


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


def _new_upload(request: web.Request) -> uploads.NewUpload:
    """Creation §POST: Upload-Length (Upload-Defer-Length is not offered), and
    Upload-Metadata carrying sceneId, contributor, optional sequence, filename and
    filetype, checked as the raw POST checks its query."""
    settings = request.app[keys.SETTINGS]
    if "Upload-Defer-Length" in request.headers:
        raise TusError(
            400, "bad_request", "Upload-Defer-Length is not supported: send Upload-Length"
        )
    length = tus.parse_int("Upload-Length", request.headers.get("Upload-Length"))
    if length > settings.max_upload_bytes:
        raise TusError(
            413, "too_large", f"the upload is larger than {settings.max_upload_bytes} bytes"
        )
    if length == 0:
        raise TusError(400, "empty_upload", "the upload is empty")
    raw_metadata = request.headers.get("Upload-Metadata", "")
    meta = tus.parse_metadata(raw_metadata)
    scene_id = meta.get("sceneId", "")
    if not layout.is_id(scene_id, "scn"):
        raise TusError(400, "bad_request", "Upload-Metadata 'sceneId' must be a scene id (scn_...)")
    contributor = meta.get("contributor", "")
    if not intake.contributor_ok(contributor):
        raise TusError(
            400, "bad_request", "Upload-Metadata 'contributor' must be a user id (usr_...)"
        )
    sequence = None
    if "sequence" in meta:
        try:
            sequence = intake.parse_sequence(meta["sequence"])
        except ValueError as exc:
            raise TusError(400, "bad_request", str(exc)) from None
    content_type = meta.get("filetype") or "application/octet-stream"
    if not intake.upload_type_ok(content_type):
        raise TusError(
            415, "unsupported_media_type", f"uploads must be a video, not {content_type!r}"
        )
    filename = (meta.get("filename") or "")[:255] or None
    return uploads.NewUpload(
        scene_id, contributor, sequence, filename, content_type, raw_metadata.strip(), length
    )


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
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        new = _new_upload(request)
        with_body = _has_body(request)
        if with_body and request.content_type != tus.OFFSET_TYPE:
            raise TusError(415, "unsupported_media_type", f"a body must be {tus.OFFSET_TYPE}")
        checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
        pool, storage = request.app[keys.POOL], request.app[keys.STORAGE]
        async with pool.acquire() as conn:
            missing = await intake.missing_target(conn, new.scene_id, new.contributor)
        if missing is not None:
            raise TusError(404, "not_found", missing)
        upload = await uploads.create(pool, storage, request.app[keys.SETTINGS], new)
        headers = {"Location": f"{UPLOADS_PATH}/{upload.id}"}
        if with_body:
            with request.app[keys.UPLOAD_SLOTS].take():
                upload = await _store(request, upload.id, 0, checksum)
            headers["Upload-Offset"] = str(upload.received)
    except TusError as exc:
        raise _refused(exc) from None
    log.info("upload created", extra={"sf_upload": upload.id, "sf_bytes": upload.length})
    expires = upload.expires_at if upload.status == "open" else None
    headers |= tus.answer_fields(expires) | _location(upload)
    return web.Response(status=201, headers=headers)


async def _store(
    request: web.Request, upload_id: str, offset: int, checksum: tus.Checksum | None
) -> uploads.Upload:
    """Take the upload's lease at `offset`, store the body, finish the upload when its
    last byte came; the lease is released whatever happens. A body cut short is
    committed as far as it came, then its cause is raised (client gone, 408)."""
    app = request.app
    settings, pool, storage = app[keys.SETTINGS], app[keys.POOL], app[keys.STORAGE]
    parked = app[keys.PARKED_LEASES]
    taken = await uploads.Lease.take(
        pool, upload_id, settings.upload_lock_seconds, offset=offset, parked=parked
    )
    if taken is None:
        raise await uploads.refusal(pool, upload_id, offset)
    lease, upload = taken
    try:
        left = upload.length - upload.received
        if request.content_length is not None and request.content_length > left:
            raise TusError(
                413, "too_large", f"the body goes past Upload-Length ({left} bytes left)"
            )

        cut: list[Exception] = []

        async def read() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks(request, BODY_CHUNK, settings.body_idle_timeout):
                    yield chunk
            except _CUT_SHORT as exc:
                cut.append(exc)
                raise

        body = uploads.Body(read(), left, lease, checksum, _CUT_SHORT)
        upload = await uploads.write(storage, settings, lease, upload, body)
        if cut:
            if isinstance(cut[0], ApiError):
                cut[0].headers |= tus.answer_fields() | {"Upload-Offset": str(upload.received)}
            raise cut[0]
        if upload.whole:
            upload = await uploads.finish(pool, storage, settings, lease, upload)
        else:
            parked.put(lease, upload)
        return upload
    except (uploads.LeaseLost, StorageError) as exc:
        if lease.unconfirmed and not await lease.held():
            # the parked lease was not this request's any more: the upload moved on
            # (another request, termination, expiry) while its bytes were stored
            raise await uploads.refusal(pool, upload_id, offset) from None
        if isinstance(exc, StorageError):
            raise
        raise TusError(
            409, "locked", "this request lost the upload to another one; retry"
        ) from None
    finally:
        await lease.release()


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
        if upload is None or upload.status != "open" and upload.status != "completed":
            raise await uploads.refusal(pool, _upload_id(request), None)
        if upload.status == "open" and upload.whole:
            upload = await _finish_interrupted(request, upload)
        elif upload.status == "open" and upload.expires_at <= await pool.fetchval("SELECT now()"):
            raise TusError(410, "gone", "the upload expired; start a new one")
    except TusError as exc:
        raise _refused(exc) from None
    headers = {"Upload-Offset": str(upload.received), "Upload-Length": str(upload.length)}
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    expires = upload.expires_at if upload.status == "open" else None
    return web.Response(
        status=200, headers=headers | tus.answer_fields(expires) | _location(upload)
    )


async def _finish_interrupted(request: web.Request, upload: uploads.Upload) -> uploads.Upload:
    app = request.app
    settings, pool, storage = app[keys.SETTINGS], app[keys.POOL], app[keys.STORAGE]
    taken = await uploads.Lease.take(pool, upload.id, settings.upload_lock_seconds, offset=None)
    if taken is None:
        return upload  # someone else is at it
    lease, upload = taken
    try:
        return await uploads.finish(pool, storage, settings, lease, upload)
    finally:
        await lease.release()


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
    settings, pool, storage = app[keys.SETTINGS], app[keys.POOL], app[keys.STORAGE]
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        upload_id = _upload_id(request)
        taken = await uploads.Lease.take(
            pool, upload_id, settings.upload_lock_seconds, offset=None, expired_too=True
        )
        if taken is None:
            raise await uploads.refusal(pool, upload_id, None)
        lease, upload = taken
        app[keys.PARKED_LEASES].forget(upload_id)
        try:
            upload = await lease.end(pool, "terminated")
        finally:
            await lease.release()
    except TusError as exc:
        raise _refused(exc) from None
    await uploads.discard(storage, settings, upload)
    return web.Response(status=204, headers=tus.answer_fields())


async def overridden(request: web.Request) -> web.StreamResponse:
    """POST on an upload URL with X-HTTP-Method-Override (§Headers)."""
    method = tus.effective_method(request.method, request.headers.get("X-HTTP-Method-Override"))
    handler = {"PATCH": patch, "DELETE": delete, "HEAD": head}.get(method)
    if handler is None:
        raise _refused(TusError(405, "method_not_allowed", f"{method} is not an upload method"))
    return await handler(request)


def add_routes(app: web.Application) -> None:
    app.router.add_route("OPTIONS", UPLOADS_PATH, options)
    app.router.add_post(UPLOADS_PATH, create, expect_handler=defer_continue)
    item = f"{UPLOADS_PATH}/{{upload_id}}"
    app.router.add_route("OPTIONS", item, options)
    app.router.add_route("HEAD", item, head)
    app.router.add_route("PATCH", item, patch, expect_handler=defer_continue)
    app.router.add_route("DELETE", item, delete)
    app.router.add_post(item, overridden, expect_handler=defer_continue)
