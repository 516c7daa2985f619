"""The read path CDNs and players hit: a segment's own files, the stitched scene
playlists and storyboard, the scene playlist JSON, assets, and CORS for all of it;
with signing on, the guard that checks every `/v/` and `/e/` request and the
per-request propagation of the viewer's authorisation into every URI emitted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import hdrs, web

from origin import catalog, keys, layout, playlists, signing
from origin.edge import Answer, WarmAnswer
from origin.errors import error_response, not_found
from origin.handlers.api import require_token
from origin.handlers.objects import serve_object
from origin.handlers.signed import (
    AUTH_QUERY,
    SIGNING,
    admit,
    count_admitted,
    iso_time,
    mint_scene_grant,
    viewer_ip,
)
from origin.scenecache import Built
from origin.storage import ObjectNotFound

M3U8 = "application/vnd.apple.mpegurl"
SCENE_DOCUMENT_ROUTE = "/v/{scene_id}/{name}"
VTT = "text/vtt; charset=utf-8"
_CORS_PREFIXES = ("/v/", "/a/", "/e/")
_EXPOSE = "Content-Length, Content-Range, ETag, Accept-Ranges"


# --- CORS (Fetch standard; players on other origins) --------------------------------


def cors_allow(origin: str | None, allowed: tuple[str, ...]) -> str | None:
    """The Access-Control-Allow-Origin value for a request's Origin, or None."""
    if not origin:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


def cors_fields(allow: str) -> list[tuple[str, str]]:
    """The CORS fields of a media answer to an allowed origin."""
    fields = [
        ("Access-Control-Allow-Origin", allow),
        ("Access-Control-Expose-Headers", _EXPOSE),
    ]
    return fields if allow == "*" else [*fields, ("Vary", "Origin")]


def _allowed_origin(request: web.Request) -> str | None:
    return cors_allow(request.headers.get("Origin"), request.app[keys.SETTINGS].cors_origins)


def cors_preflight(request: web.Request) -> web.Response | None:
    """The answer to a CORS preflight for a media path, or None if this is not one."""
    if not (
        request.method == "OPTIONS"
        and request.path.startswith(_CORS_PREFIXES)
        and "Access-Control-Request-Method" in request.headers
    ):
        return None
    origin = _allowed_origin(request)
    if origin is None:
        return error_response(403, "cors_forbidden", "this origin may not fetch media here")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": "Range, If-None-Match, If-Modified-Since",
            "Access-Control-Max-Age": "86400",
            "Vary": "Origin",
        },
    )


async def cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: CORS headers on every media answer, streamed ones too."""
    if not request.path.startswith(_CORS_PREFIXES):
        return
    origin = _allowed_origin(request)  # type: ignore[arg-type]
    if origin is None or "Access-Control-Allow-Origin" in response.headers:
        return
    for name, value in cors_fields(origin):
        response.headers.add(name, value)


# --- a segment's own files ----------------------------------------------------------


async def _segment_ready(request: web.Request, scene_id: str, segment_id: str) -> bool:
    caches = request.app[keys.READ_CACHES]
    ready = caches.ready.get((scene_id, segment_id))
    if ready is None:
        async with request.app[keys.POOL].acquire() as conn:
            ready = await catalog.ready_segment_exists(conn, scene_id, segment_id)
        caches.ready.put((scene_id, segment_id), ready)
    return ready


async def segment_file(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/{segmentId}/{file}` (seed §3.2 mapping), streamed."""
    scene_id = request.match_info["scene_id"]
    segment_id = request.match_info["segment_id"]
    name = request.match_info["file"]
    # validate before anything reaches the database or storage
    if not (
        layout.is_id(scene_id, "scn")
        and layout.is_id(segment_id, "seg")
        and layout.is_segment_file(name)
    ):
        raise not_found("no such file")
    if not await _segment_ready(request, scene_id, segment_id):
        raise not_found("no such file: the segment is not published")
    settings = request.app[keys.SETTINGS]
    meta = layout.file_meta(name)
    if settings.signing != "none" and (name.endswith(".m3u8") or name == "storyboard.vtt"):
        return await _signed_segment_document(
            request, layout.segment_key(scene_id, segment_id, name), meta
        )
    return await serve_object(
        request,
        settings.videos_bucket,
        layout.segment_key(scene_id, segment_id, name),
        meta.content_type,
        meta.cache_control,
    )


async def _signed_segment_document(
    request: web.Request, key: str, meta: layout.FileMeta
) -> web.Response:
    """A per-segment playlist or storyboard VTT with the viewer's authorisation on
    every URI: read from storage once (published files never change), kept as a
    template, filled in per request."""
    caches = request.app[keys.READ_CACHES]
    built = caches.segment_docs.get(key)
    if built is None:
        storage = request.app[keys.STORAGE]
        try:
            obj = await storage.get(request.app[keys.SETTINGS].videos_bucket, key)
        except ObjectNotFound:
            raise not_found("no such file") from None
        async with obj:
            text = (await obj.read()).decode("utf-8", "replace")
        if key.endswith(".vtt"):
            template = signing.mark_vtt(text)
        else:
            template = playlists.rewrite_uris(signing.strip_marks(text), signing.mark_uri)
        built = Built(template.encode(), obj.info.etag)
        caches.segment_docs.put(key, built)
    return _document(request, built, meta.content_type, meta.cache_control)


def document_answer(
    built: Built,
    content_type: str,
    cache_control: str,
    if_none_match: str | None,
    auth_query: str | None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, fields and body for a cached document (a template to fill in with
    `auth_query` when signing is on, None when it is off)."""
    fields: dict[str, str] = {
        hdrs.CONTENT_TYPE: content_type,
        hdrs.CACHE_CONTROL: cache_control,
        hdrs.ETAG: built.etag,
    }
    if if_none_match is not None and any(
        t.strip().removeprefix("W/") in (built.etag, "*") for t in if_none_match.split(",")
    ):
        return 304, fields, b""  # RFC 9110 §13.1.2
    body = built.body if auth_query is None else signing.render(built.body, auth_query)
    return 200, fields, body


def _document(
    request: web.Request, built: Built, content_type: str, cache_control: str
) -> web.Response:
    """A cached document (a template when signing is on) for this request."""
    auth = request.get(AUTH_QUERY, "") if request.app[keys.SETTINGS].signing != "none" else None
    status, fields, body = document_answer(
        built, content_type, cache_control, request.headers.get(hdrs.IF_NONE_MATCH), auth
    )
    return web.Response(status=status, headers=fields, body=body if status == 200 else None)


# --- stitched scene documents -------------------------------------------------------


async def _scene_version(request: web.Request, scene_id: str) -> int:
    caches = request.app[keys.READ_CACHES]
    version = caches.versions.get(scene_id)
    if version is None:
        async with request.app[keys.POOL].acquire() as conn:
            found = await catalog.live_scene_version(conn, scene_id)
        version = -1 if found is None else found
        caches.versions.put(scene_id, version)
    if version < 0:
        raise not_found(f"no such scene: {scene_id}")
    return version


def _scene_uri_for(request: web.Request, scene_id: str) -> Callable[[str], str]:
    base = request.app[keys.SETTINGS].cdn_base_url
    if not base:
        return lambda rel: rel  # relative to /v/{sceneId}/
    prefix = f"{base}/v/{scene_id}/"
    return lambda rel: prefix + rel


def build_scene_document(view: catalog.SceneView, name: str, uri_for: Callable[[str], str]) -> str:
    """The text of `master.m3u8`, `{profile}.m3u8` or `storyboard.vtt` for a scene.
    Raises ApiError 404 when the scene has nothing to play or no such variant."""
    with catalog.cyclic_gc_paused():
        return _scene_document_text(view, name, uri_for)


def _scene_document_text(view: catalog.SceneView, name: str, uri_for: Callable[[str], str]) -> str:
    clips = [c.clip for c in view.clips]
    if not clips:
        raise not_found(f"scene {view.scene.id} has no ready clip yet")
    profiles = _common_profiles(clips)
    if name == "master.m3u8":
        return playlists.stitched_master(clips, profiles, uri_for=uri_for)
    if name == "storyboard.vtt":
        return playlists.stitched_storyboard_vtt(clips, uri_for=uri_for)
    profile = name.removesuffix(".m3u8")
    if profile not in profiles:
        raise not_found(f"scene {view.scene.id} has no variant {profile}")
    target = playlists.scene_target_duration(clips)
    return playlists.stitched_media(clips, profile, target=target, uri_for=uri_for)


def _common_profiles(clips: list[playlists.Clip]) -> list[str]:
    common = set(clips[0].renditions)
    for clip in clips[1:]:
        common &= set(clip.renditions)
    return sorted(common, key=lambda p: clips[0].renditions[p].height)


def _is_scene_file(name: str) -> bool:
    return name in ("master.m3u8", "storyboard.vtt") or (
        name.endswith(".m3u8") and layout.is_profile(name.removesuffix(".m3u8"))
    )


async def scene_document(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/master.m3u8`, `/{profile}.m3u8`, `/storyboard.vtt`: built
    from Postgres alone, once per (scene version, file), served from memory."""
    scene_id = request.match_info["scene_id"]
    name = request.match_info["name"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    if not _is_scene_file(name):
        raise not_found("no such scene file")
    version = await _scene_version(request, scene_id)
    caches = request.app[keys.READ_CACHES]
    cache_key = (scene_id, version, name)
    built = caches.playlists.get(cache_key)
    if built is None:
        async with request.app[keys.POOL].acquire() as conn:
            view = await catalog.scene_view(conn, scene_id, storyboard=name == "storyboard.vtt")
        if view is None:
            caches.versions.discard(scene_id)
            raise not_found(f"no such scene: {scene_id}")
        uri_for = _scene_uri_for(request, scene_id)
        if request.app[keys.SETTINGS].signing != "none":
            uri_for = signing.marking(uri_for)  # a template: filled in per request
        text = build_scene_document(view, name, uri_for)
        # the version read with the rows is the one the document reflects
        built = Built(text.encode(), f'"{scene_id}-{view.scene.version}"')
        caches.playlists.put((scene_id, view.scene.version, name), built)
    content_type = VTT if name.endswith(".vtt") else M3U8
    return _document(request, built, content_type, layout.SCENE_PLAYLIST_CACHE)


def warm_answers(app: web.Application) -> WarmAnswer:
    """The answers an EdgeConnection gives without aiohttp (origin/edge.py): a scene
    document whose version and bytes are in the caches, admitted by the same guard,
    with the same fields `scene_document` and the app's response hooks give. None
    for anything else: aiohttp answers it (and fills the caches)."""
    settings = app[keys.SETTINGS]
    caches = app[keys.READ_CACHES]
    state = app[SIGNING]
    secret_field = state.origin_secret_header.lower()
    signing_on = settings.signing != "none"
    answered = app[keys.CONNECTION_ANSWERS]

    def answer(
        method: str, path: str, query: str, headers: Mapping[str, str], remote: str | None
    ) -> Answer | None:
        parts = path.split("/")
        if len(parts) != 4 or parts[1] != "v" or "%" in path:
            return None
        scene_id, name = parts[2], parts[3]
        if not (layout.is_id(scene_id, "scn") and _is_scene_file(name)):
            return None
        version = caches.versions.get(scene_id)
        if version is None or version < 0:
            return None
        built = caches.playlists.get((scene_id, version, name))
        if built is None:
            return None
        auth: str | None = None
        if state.guarded:
            verdict = admit(state, path, query, remote, headers.get(secret_field), scene_id)
            if isinstance(verdict, signing.Denied):
                return None  # aiohttp's guard answers 403 and counts it
            count_admitted(state, path)
            auth = verdict if signing_on else None
        content_type = VTT if name.endswith(".vtt") else M3U8
        status, fields, body = document_answer(
            built, content_type, layout.SCENE_PLAYLIST_CACHE, headers.get("if-none-match"), auth
        )
        out = list(fields.items())
        allow = cors_allow(headers.get("origin"), settings.cors_origins)
        if allow is not None:
            out.extend(cors_fields(allow))
        if status == 200:
            answered.ok += 1
        else:
            answered.not_modified += 1
        return status, out, body

    return answer


# --- scene playlist JSON (seed §5.1) ------------------------------------------------


def scene_playlist_json(
    view: catalog.SceneView, cdn_base: str, grant: signing.Grant = signing.NO_GRANT
) -> dict[str, Any]:
    """The scene JSON of seed §5.1; every URL carries `grant` (signing on), and then
    `expiresAt` says until when."""
    segments: list[dict[str, Any]] = []
    start = 0.0
    scene_id = view.scene.id

    def url(segment_id: str | None, name: str) -> str:
        return grant.apply(layout.cdn_url(cdn_base, layout.cdn_path(scene_id, segment_id, name)))

    for sc in view.clips:
        seg_id = sc.clip.segment_id
        duration = round(sc.clip.duration, 3)
        segments.append(
            {
                "id": seg_id,
                "sequence": sc.sequence,
                "duration": duration,
                "startTime": round(start, 3),
                "hlsUrl": url(seg_id, "master.m3u8"),
                "thumbnailUrl": url(seg_id, "thumbnail.jpg"),
                "contributor": {"id": sc.contributor.id, "username": sc.contributor.username},
            }
        )
        start += duration
    body: dict[str, Any] = {
        "sceneId": scene_id,
        "title": view.scene.title,
        "totalDuration": round(start, 3),
        "segmentCount": len(segments),
        "segments": segments,
        "updatedAt": view.scene.updated_at.isoformat().replace("+00:00", "Z"),
        "hlsUrl": url(None, "master.m3u8"),
        "storyboardUrl": url(None, "storyboard.vtt"),
    }
    if grant.expires is not None:
        body["expiresAt"] = iso_time(grant.expires)
    return body


async def scene_playlist(request: web.Request) -> web.Response:
    """GET /api/v1/scenes/{sceneId}/playlist. With signing on this is where viewers'
    authorisations are minted, so it takes the bearer token (401 without); the app
    may pass `viewerIp` to bind them to its viewer's address (when binding is on)."""
    scene_id = request.match_info["scene_id"]
    signed = request.app[keys.SETTINGS].signing != "none"
    if signed:
        require_token(request)
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    async with request.app[keys.POOL].acquire() as conn:
        view = await catalog.scene_view(conn, scene_id)
    if view is None:
        raise not_found(f"no such scene: {scene_id}")
    grant = mint_scene_grant(request, scene_id, viewer_ip(request)) if signed else signing.NO_GRANT
    body = scene_playlist_json(view, request.app[keys.SETTINGS].cdn_base_url, grant)
    cache = "private, no-store" if signed else "no-cache"
    return web.json_response(body, headers={hdrs.CACHE_CONTROL: cache})


# --- assets -------------------------------------------------------------------------


async def asset(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/a/{key}` from the assets bucket (avatars, topic icons, posters)."""
    key = request.match_info["key"]
    if not layout.is_asset_key(key):
        raise not_found("no such asset")
    meta = layout.file_meta(key.rsplit("/", 1)[-1])
    settings = request.app[keys.SETTINGS]
    return await serve_object(
        request, settings.assets_bucket, key, meta.content_type, meta.cache_control
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v/{scene_id}/{segment_id}/{file}", segment_file)
    app.router.add_get(SCENE_DOCUMENT_ROUTE, scene_document)
    app.router.add_get("/api/v1/scenes/{scene_id}/playlist", scene_playlist)
    app.router.add_get("/a/{key:.+}", asset)
