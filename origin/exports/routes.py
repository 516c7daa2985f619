"""Scene exports over HTTP (seed §8.2, issues 12 and 24): `POST
/api/v1/scenes/{sceneId}/export` (a ready export of the current version, the one that
failed for good for it, the one in flight, or a new `export` job), `GET
/api/v1/exports/{exportId}` (its status), `POST /api/v1/exports/{exportId}/retry` (a
failed export's job queued again: core/lifecycle.py's retry, as `storyforge jobs
retry`), and the files under `/e/{sceneId}/{exportId}/` (the MP4, with ranges,
conditional GET and Content-Disposition, its WebVTT captions sidecars and its
manifest). `progress` is the job's
fraction done, in [0, 1] (`core.queue.progress_shown`). URLs are signed like the
scene's media when signing is on; the signing guard checks every `/e/` request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import hdrs, web

from core import catalog, exportplan, exports, layout, lifecycle, queue, signing
from core.exportplan import BadRequest
from origin import keys
from origin.http.auth import require_token
from origin.http.body import json_body
from origin.http.errors import ApiError, bad_request, not_found, without_paths
from origin.http.objects import serve_object
from origin.playback.cookies import iso_time, viewer_ip

_NO_STORE = {hdrs.CACHE_CONTROL: "no-store"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _export_url(request: web.Request, export: exports.Export) -> dict[str, Any]:
    """`url` of a ready export and of each of its captions sidecars (`captions`:
    `[{"lang", "url"}]`), signed when signing is on, with `expiresAt`."""
    settings = request.app[keys.SETTINGS]
    files = [("", export.file_name), *export.captions_files()]
    urls = [
        layout.cdn_url(settings.cdn_base_url, layout.export_path(export.scene_id, export.id, name))
        for _, name in files
    ]
    expires: dict[str, str] = {}
    if settings.signing != "none":
        state = request.app[keys.SIGNING]
        now = state.clock()
        try:
            urls = [
                signing.mint_export(
                    state.config, export.scene_id, url, now=now, client_ip=viewer_ip(request)
                )
                for url in urls
            ]
        except ValueError as exc:  # binding on, but the address is unknown
            raise ApiError(400, "bad_request", f"cannot sign for this client: {exc}") from None
        expires["expiresAt"] = iso_time(int(now) + state.config.ttl)
    captions = [
        {"lang": lang, "url": url} for (lang, _), url in zip(files[1:], urls[1:], strict=True)
    ]
    return {"url": urls[0], **expires, "captions": captions}


def _status_url(export_id: str) -> str:
    return f"/api/v1/exports/{export_id}"


def _range(export: exports.Export) -> dict[str, Any]:
    m = export.moment
    return {"start": m.start if m else None, "end": m.end if m else None}


def _ready_body(request: web.Request, export: exports.Export) -> dict[str, Any]:
    return {
        "status": "ready",
        "exportId": export.id,
        **_export_url(request, export),
        "createdAt": _iso(export.ready_at),
        "size": export.size,
        "duration": export.duration,
        "sceneVersion": export.scene_version,
        "quality": export.quality,
        **_range(export),
    }


def _failed_body(export: exports.Export) -> dict[str, Any]:
    """A request answered with the export that failed for good for it (no new job)."""
    return {
        "status": "failed",
        "exportId": export.id,
        "jobId": export.job_id,
        "error": without_paths(export.error or "the export failed"),
        "statusUrl": _status_url(export.id),
        "retryUrl": f"{_status_url(export.id)}/retry",
        "sceneVersion": export.scene_version,
        "quality": export.quality,
        **_range(export),
    }


def _processing(export: exports.Export, job: queue.Job, *, estimate: int | None) -> web.Response:
    """202: the export is being made by `job` (its status URL in Location)."""
    status_url = _status_url(export.id)
    body: dict[str, Any] = {
        "status": "processing",
        "exportId": export.id,
        "jobId": job.id,
        "progress": queue.progress_shown("processing", job.progress),
        **({"estimatedTime": estimate} if estimate is not None else {}),
        "statusUrl": status_url,
        "sceneVersion": export.scene_version,
        "quality": export.quality,
        **_range(export),
    }
    return web.json_response(body, status=202, headers={**_NO_STORE, hdrs.LOCATION: status_url})


async def request_export(request: web.Request) -> web.Response:
    """POST /api/v1/scenes/{sceneId}/export `{"quality"[, "start", "end"]}`."""
    require_token(request)
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene: malformed id")
    try:
        ask = exportplan.parse_request(await json_body(request))
    except BadRequest as exc:
        raise bad_request(str(exc)) from None
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.POOL].acquire() as conn:
        view = await catalog.scene_view(conn, scene_id)
        if view is None:
            raise not_found(f"no such scene: {scene_id}")
        if not view.clips:
            raise not_found(f"scene {scene_id} has no ready clip to export yet")
        try:
            clips = exports.source_clips(view, ask.quality, settings.ladder)
            moment = None
            if ask.start is not None and ask.end is not None:
                moment = exportplan.round_moment(clips, ask.start, ask.end)
            plan = exportplan.plan_export(clips, ask.quality, moment)
        except BadRequest as exc:
            raise bad_request(str(exc)) from None
        version = view.scene.version
        settled = await exports.find_settled(
            conn, scene_id, ask.quality, version, moment, max_age=settings.export_max_age
        )
        if settled is not None and settled.status == "ready":
            return web.json_response(_ready_body(request, settled), headers=_NO_STORE)
        if settled is not None:
            return web.json_response(_failed_body(settled), headers=_NO_STORE)
        export, job = await exports.start_export(
            conn,
            scene_id,
            ask.quality,
            version,
            moment,
            dedupe_key=exportplan.dedupe_key(scene_id, ask.quality, version, moment),
            max_attempts=settings.job_max_attempts,
        )
        speed = (await exports.speeds(conn))[plan.kind]
    left = 1 - queue.progress_fraction(job.progress)
    rung = next((r for r in settings.ladder if r.name == plan.quality), None)
    estimate = exportplan.estimate_seconds(
        plan.duration * left,
        speed,
        refit=plan.refit_duration * left,
        frame=(rung.width, rung.height) if rung else (1280, 720),
    )
    return _processing(export, job, estimate=estimate)


async def retry_export(request: web.Request) -> web.Response:
    """POST /api/v1/exports/{exportId}/retry: a failed export of the scene as it is
    now has its job queued again (a fresh attempt budget, core/lifecycle.py's retry
    under the job's row lock): 202 as a new export's. 409 when it has not failed, its
    scene has changed since (ask for the export again) or its job was cancelled."""
    require_token(request)
    export_id = request.match_info["export_id"]
    if not layout.is_id(export_id, "exp"):
        raise not_found("no such export: malformed id")
    async with request.app[keys.POOL].acquire() as conn:
        found = await exports.status(conn, export_id)
        if found is None or not found.scene_live:
            raise not_found(f"no such export: {export_id}")
        if found.status != "failed":
            raise ApiError(409, "conflict", f"the export is {found.status}, not failed")
        if not found.current:
            raise ApiError(
                409,
                "conflict",
                f"the scene changed since this export was asked for (version "
                f"{found.export.scene_version} -> {found.current_version}): ask for the "
                "export again",
            )
        if found.job_status == "cancelled" or found.export.job_id is None:
            raise ApiError(
                409, "conflict", "the export's job was cancelled: ask for the export again"
            )

        async def no_upload(key: str) -> bool:  # an export has no upload to look for
            return False

        try:
            job = await lifecycle.retry_job(conn, found.export.job_id, no_upload)
        except lifecycle.Declined as exc:
            raise ApiError(409, "conflict", str(exc)) from None
    if job is None:
        raise ApiError(409, "conflict", "the export's job is gone: ask for the export again")
    return _processing(found.export, job, estimate=None)


async def export_status(request: web.Request) -> web.Response:
    """GET /api/v1/exports/{exportId}: status, progress (a fraction in [0, 1]), the
    URL once ready, the reason once failed; `current` says whether it still shows the
    scene as it is."""
    require_token(request)
    export_id = request.match_info["export_id"]
    if not layout.is_id(export_id, "exp"):
        raise not_found("no such export: malformed id")
    async with request.app[keys.POOL].acquire() as conn:
        found = await exports.status(conn, export_id)
    if found is None or not found.scene_live:
        raise not_found(f"no such export: {export_id}")
    export, status = found.export, found.status
    progress = queue.progress_shown(status, found.job_progress)
    body: dict[str, Any] = {
        "exportId": export.id,
        "sceneId": export.scene_id,
        "status": status,
        "progress": progress,
        "jobId": export.job_id,
        "quality": export.quality,
        "sceneVersion": export.scene_version,
        "current": found.current,
        **_range(export),
        "requestedAt": _iso(export.created_at),
        "createdAt": _iso(export.ready_at),
        "size": export.size,
        "duration": export.duration,
        "error": without_paths(found.error) if found.error else None,
    }
    if status == "ready":
        body.update(_export_url(request, export))
    return web.json_response(body, headers=_NO_STORE)


async def export_file(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/e/{sceneId}/{exportId}/{file}`: a ready export's MP4 (as a download
    named after the scene), its captions sidecars or its manifest, from the exports
    bucket."""
    scene_id = request.match_info["scene_id"]
    export_id = request.match_info["export_id"]
    name = request.match_info["file"]
    if not (
        layout.is_id(scene_id, "scn")
        and layout.is_id(export_id, "exp")
        and layout.is_export_file(name)
    ):
        raise not_found("no such file")
    async with request.app[keys.POOL].acquire() as conn:
        found = await exports.served(conn, scene_id, export_id)
    if found is None:
        raise not_found("no such file")
    mp4 = layout.export_file_name(found.quality, moment=found.moment is not None)
    sidecars = {layout.export_captions_name(mp4, lang) for lang in found.captions}
    if name not in (mp4, layout.EXPORT_MANIFEST) and name not in sidecars:
        raise not_found("no such file")
    bucket = request.app[keys.SETTINGS].exports_bucket
    key = layout.export_key(scene_id, export_id, name)
    if name != mp4:
        meta = layout.EXPORT_CAPTIONS_META if name in sidecars else layout.EXPORT_MANIFEST_META
        return await serve_object(request, bucket, key, meta.content_type, meta.cache_control)
    filename = exportplan.download_name(found.title, found.moment)
    return await serve_object(
        request,
        bucket,
        key,
        layout.EXPORT_META.content_type,
        layout.EXPORT_META.cache_control,
        headers={hdrs.CONTENT_DISPOSITION: exportplan.content_disposition(filename)},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/scenes/{scene_id}/export", request_export)
    app.router.add_get("/api/v1/exports/{export_id}", export_status)
    app.router.add_post("/api/v1/exports/{export_id}/retry", retry_export)
    app.router.add_get("/e/{scene_id}/{export_id}/{file}", export_file)
