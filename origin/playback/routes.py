"""Every playback route, in one table: under `/v/{sceneId}/` the stitched scene's
documents (`master.m3u8`, `{profile}.m3u8`, `storyboard.vtt`, `chapters.vtt`: built from
Postgres, served from memory) and its thumbnail at a moment; under
`/v/{sceneId}/{segmentId}/` a ready segment's own files (playlists and storyboard VTT
built from its rows, media and images from storage) and its thumbnail at a moment;
the scene JSON of seed §5.1, the CloudFront signed cookies, and the player page with
its static files. Thin handlers: parse, call origin/playback/scenes.py, stills.py,
cookies.py or player.py, answer. The fast path (origin/playback/warm.py) answers warm
scene documents alike."""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from core import catalog, layout, signing
from core.conditional import none_match
from origin import keys
from origin.http.auth import require_token
from origin.http.errors import ApiError, bad_request, not_found
from origin.http.objects import SendfileResponse, serve_object
from origin.playback import moments, scenes
from origin.playback.cookies import cookies_response, mint_scene_grant, viewer_ip
from origin.playback.documents import M3U8, VTT, document_response
from origin.playback.player import player_config, render_player, static_file
from origin.playback.stills import Busy, GrabFailed

log = logging.getLogger("storyforge.stills")

# Route templates (the same names label /metrics). aiohttp tries them in this order, so
# the thumbnails' fixed names come before the catch-alls that would take their paths.
SCENE_THUMBNAIL_ROUTE = "/v/{scene_id}/thumbnail.jpg"
SCENE_DOCUMENT_ROUTE = "/v/{scene_id}/{name}"
SEGMENT_THUMBNAIL_ROUTE = "/v/{scene_id}/{segment_id}/thumbnail.jpg"
SEGMENT_FILE_ROUTE = "/v/{scene_id}/{segment_id}/{file}"
JPEG = "image/jpeg"


async def scene_document(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/master.m3u8`, `/{profile}.m3u8`, `/storyboard.vtt`,
    `/chapters.vtt`."""
    scene_id = request.match_info["scene_id"]
    name = request.match_info["name"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    if not scenes.is_scene_file(name):
        raise not_found("no such scene file")
    built = await scenes.scene_document(request, scene_id, name)
    content_type = VTT if name.endswith(".vtt") else M3U8
    return document_response(request, built, content_type, layout.SCENE_PLAYLIST_CACHE)


async def segment_file(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/{segmentId}/{file}`."""
    info = request.match_info
    return await _segment_file(request, info["scene_id"], info["segment_id"], info["file"])


async def _segment_file(
    request: web.Request, scene_id: str, segment_id: str, name: str
) -> web.StreamResponse:
    """A ready segment's own file `name`: a document built from its rows, or the stored
    object."""
    # validate before anything reaches the database or storage
    if not (
        layout.is_id(scene_id, "scn")
        and layout.is_id(segment_id, "seg")
        and layout.is_segment_file(name)
    ):
        raise not_found("no such file")
    generation = await scenes.segment_ready(request, scene_id, segment_id)
    if not generation:
        raise not_found("no such file: the segment is not published")
    meta = layout.file_meta(name)
    if scenes.is_segment_document(name):
        built = await scenes.segment_document(request, scene_id, segment_id, name, generation)
        # what lists the clip's captions changes with them: cached like a scene document
        cache = layout.SCENE_PLAYLIST_CACHE if scenes.follows_captions(name) else meta.cache_control
        return document_response(request, built, meta.content_type, cache)
    return await serve_object(
        request,
        request.app[keys.SETTINGS].videos_bucket,
        layout.segment_key(scene_id, segment_id, name),
        meta.content_type,
        meta.cache_control,
    )


def _moment_query(request: web.Request) -> tuple[int, int]:
    try:
        counts = {name: len(request.query.getall(name, ())) for name in ("time", "width")}
        return moments.parse_request(request.query, counts)
    except moments.BadMoment as exc:
        raise bad_request(str(exc)) from None


async def scene_thumbnail(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/thumbnail.jpg?time=T[&width=W]`: T on the stitched scene's
    timeline (origin/playback/moments.py; 400 when malformed, 404 outside it)."""
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    micros, width = _moment_query(request)
    clips = await scenes.scene_clips(request, scene_id)
    try:
        still = moments.locate(clips, micros, width)
    except moments.OutsideTimeline as exc:
        raise not_found(str(exc)) from None
    # which frame a time shows changes with the scene: cached like its playlists
    return await _thumbnail(request, scene_id, still, layout.SCENE_PLAYLIST_CACHE)


async def segment_thumbnail(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/{segmentId}/thumbnail.jpg[?time=T[&width=W]]`: T on the
    clip's timeline; without `time`, the clip's stored thumbnail."""
    scene_id = request.match_info["scene_id"]
    segment_id = request.match_info["segment_id"]
    if "time" not in request.query:
        return await _segment_file(request, scene_id, segment_id, "thumbnail.jpg")
    if not (layout.is_id(scene_id, "scn") and layout.is_id(segment_id, "seg")):
        raise not_found("no such file")
    micros, width = _moment_query(request)
    clip = await scenes.segment_clip(request, scene_id, segment_id)
    try:
        still = moments.locate_in_clip(clip, micros, width)
    except moments.OutsideTimeline as exc:
        raise not_found(str(exc)) from None
    return await _thumbnail(
        request, scene_id, still, layout.file_meta("thumbnail.jpg").cache_control
    )


async def _thumbnail(
    request: web.Request, scene_id: str, still: moments.Still, cache_control: str
) -> web.Response:
    """The JPEG of `still` (origin/playback/stills.py); a client holding its ETag gets
    304 without any frame being grabbed; 503 + Retry-After when the ffmpeg slots are
    busy."""
    fields = {hdrs.CONTENT_TYPE: JPEG, hdrs.CACHE_CONTROL: cache_control, hdrs.ETAG: still.etag}
    if not none_match(request.headers.get(hdrs.IF_NONE_MATCH), still.etag):
        return web.Response(status=304, headers=fields)  # RFC 9110 §13.1.2
    try:
        body = await request.app[keys.STILLS].stills.jpeg(scene_id, still)
    except Busy as exc:
        raise ApiError(  # RFC 9110 §15.6.4, §10.2.3
            503, "busy", str(exc), {hdrs.RETRY_AFTER: str(exc.retry_after)}
        ) from None
    except GrabFailed as exc:
        log.warning("thumbnail of %s failed: %s", still, exc)
        raise ApiError(500, "thumbnail_failed", str(exc)) from None
    return web.Response(body=body, headers=fields)


async def scene_playlist(request: web.Request) -> web.Response:
    """GET /api/v1/scenes/{sceneId}/playlist. With signing on this is where viewers'
    authorisations are minted, so it takes the bearer token (401 without); the app
    may pass `viewerIp` to bind them to its viewer's address (when binding is on).
    While Postgres is unreachable, the rows last read (within STALE_IF_DB_DOWN)."""
    scene_id = request.match_info["scene_id"]
    signed = request.app[keys.SETTINGS].signing != "none"
    if signed:
        require_token(request)
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    view = await scenes.scene_view(request, scene_id)
    grant = mint_scene_grant(request, scene_id, viewer_ip(request)) if signed else signing.NO_GRANT
    body = scenes.scene_playlist_json(view, request.app[keys.SETTINGS].cdn_base_url, grant)
    cache = "private, no-store" if signed else "no-cache"
    return web.json_response(body, headers={hdrs.CACHE_CONTROL: cache})


async def scene_cookies(request: web.Request) -> web.Response:
    """GET /api/v1/scenes/{sceneId}/cookies (SIGNING=cloudfront): the three CloudFront
    signed cookies for the scene prefix, as Set-Cookie and in the JSON body."""
    require_token(request)
    state = request.app[keys.SIGNING]
    if state.config.mode != "cloudfront":
        raise not_found("signed cookies are issued only when SIGNING=cloudfront")
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    async with request.app[keys.POOL].acquire() as conn:
        scene = await catalog.get_live_scene(conn, scene_id)
    if scene is None:
        raise not_found(f"no such scene: {scene_id}")
    return cookies_response(state, scene_id, viewer_ip(request))


async def player(request: web.Request) -> web.Response:
    """GET /player/{sceneId}: the demo player page (with signing on, carrying an
    authorisation minted for its viewer and the scene JSON inline)."""
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    settings = request.app[keys.SETTINGS]
    if settings.signing == "none":
        async with request.app[keys.POOL].acquire() as conn:
            scene = await catalog.get_live_scene(conn, scene_id)
        if scene is None:
            raise not_found(f"no such scene: {scene_id}")
        config = player_config(scene_id, scene.title, settings.cdn_base_url)
        cache = "no-cache"
    else:
        async with request.app[keys.POOL].acquire() as conn:
            view = await catalog.scene_view(conn, scene_id)
        if view is None:
            raise not_found(f"no such scene: {scene_id}")
        grant = mint_scene_grant(request, scene_id, request.remote)
        scene_json = scenes.scene_playlist_json(view, settings.cdn_base_url, grant)
        config = player_config(scene_id, view.scene.title, settings.cdn_base_url, grant, scene_json)
        cache = "private, no-store"  # carries a viewer's authorisation
    return web.Response(
        text=render_player(config), content_type="text/html", headers={hdrs.CACHE_CONTROL: cache}
    )


async def static(request: web.Request) -> web.StreamResponse:
    """GET /static/{name}: the player page's script and hls.js."""
    path, content_type = static_file(request.match_info["name"])
    return SendfileResponse(
        path, headers={hdrs.CONTENT_TYPE: content_type, hdrs.CACHE_CONTROL: "public, max-age=300"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(SCENE_THUMBNAIL_ROUTE, scene_thumbnail)
    app.router.add_get(SCENE_DOCUMENT_ROUTE, scene_document)
    app.router.add_get(SEGMENT_THUMBNAIL_ROUTE, segment_thumbnail)
    app.router.add_get(SEGMENT_FILE_ROUTE, segment_file)
    app.router.add_get("/api/v1/scenes/{scene_id}/playlist", scene_playlist)
    app.router.add_get("/api/v1/scenes/{scene_id}/cookies", scene_cookies)
    app.router.add_get("/player/{scene_id}", player)
    app.router.add_get("/static/{name}", static)
