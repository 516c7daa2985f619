"""Thumbnails at any moment: `GET /v/{sceneId}/thumbnail.jpg?time=T[&width=W]` (T on
the stitched scene's timeline) and `GET /v/{sceneId}/{segmentId}/thumbnail.jpg?time=T`
(T on the clip's; without `time` it is the clip's stored thumbnail, as before).
Parse (origin/playback/moments.py, 400 when malformed), place T on the timeline from Postgres
rows (cached per scene version; 404 outside it), answer the JPEG from origin/playback/stills.py
(503 + Retry-After when the ffmpeg slots are busy). A client holding the moment's ETag
gets 304 without any frame being grabbed.

These routes must be registered before the segment files' and scene documents'
catch-all routes (`/v/{scene_id}/{segment_id}/{file}`, `/v/{scene_id}/{name}`), which
would otherwise take their paths (origin/app.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import hdrs, web

from core import catalog, layout
from core.conditional import none_match
from core.lru import LRU
from core.playlists import Clip
from origin import keys
from origin.http.errors import ApiError, bad_request, not_found
from origin.playback import moments
from origin.playback.files import segment_ready, serve_segment_file
from origin.playback.routes import scene_version
from origin.playback.stills import Busy, GrabFailed, Stills

log = logging.getLogger("storyforge.stills")
JPEG = "image/jpeg"
SCENE_THUMBNAIL_ROUTE = "/v/{scene_id}/thumbnail.jpg"
SEGMENT_THUMBNAIL_ROUTE = "/v/{scene_id}/{segment_id}/thumbnail.jpg"


@dataclass
class StillsState:
    stills: Stills
    scenes: LRU[tuple[Clip, ...]]  # (scene id, version) -> its ready clips, in order
    segments: LRU[Clip]  # (scene id, segment id, generation) -> a ready clip


async def stills_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx, after storage's: the process's thumbnail grabber and its caches."""
    settings = app[keys.SETTINGS]
    stills = Stills(
        app[keys.STORAGE],
        settings.videos_bucket,
        concurrency=settings.thumbnail_concurrency,
        cache_bytes=settings.thumbnail_cache_mb * 1024 * 1024,
    )
    app[keys.STILLS] = StillsState(stills, LRU(256), LRU(4096))
    yield
    await stills.close()


def _moment_query(request: web.Request) -> tuple[int, int]:
    try:
        counts = {name: len(request.query.getall(name, ())) for name in ("time", "width")}
        return moments.parse_request(request.query, counts)
    except moments.BadMoment as exc:
        raise bad_request(str(exc)) from None


async def _scene_clips(request: web.Request, scene_id: str) -> tuple[Clip, ...]:
    version = await scene_version(request, scene_id)
    state = request.app[keys.STILLS]
    clips = state.scenes.get((scene_id, version))
    if clips is None:
        async with request.app[keys.POOL].acquire() as conn:
            view = await catalog.scene_view(conn, scene_id)
        if view is None:
            request.app[keys.READ_CACHES].versions.discard(scene_id)
            raise not_found(f"no such scene: {scene_id}")
        clips = tuple(c.clip for c in view.clips)
        # the version read with the rows is the one they reflect
        state.scenes.put((scene_id, view.scene.version), clips)
    return clips


async def scene_thumbnail(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/thumbnail.jpg?time=T[&width=W]`."""
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    micros, width = _moment_query(request)
    clips = await _scene_clips(request, scene_id)
    try:
        moment = moments.locate(clips, micros, width)
    except moments.OutsideTimeline as exc:
        raise not_found(str(exc)) from None
    # which frame a time shows changes with the scene: cached like its playlists
    return await _answer(request, scene_id, moment, layout.SCENE_PLAYLIST_CACHE)


async def segment_thumbnail(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/{segmentId}/thumbnail.jpg[?time=T[&width=W]]`."""
    scene_id = request.match_info["scene_id"]
    segment_id = request.match_info["segment_id"]
    if "time" not in request.query:  # the stored thumbnail
        return await serve_segment_file(request, scene_id, segment_id, "thumbnail.jpg")
    if not (layout.is_id(scene_id, "scn") and layout.is_id(segment_id, "seg")):
        raise not_found("no such file")
    micros, width = _moment_query(request)
    generation = await segment_ready(request, scene_id, segment_id)
    if not generation:
        raise not_found("no such file: the segment is not published")
    state = request.app[keys.STILLS]
    clip = state.segments.get((scene_id, segment_id, generation))
    if clip is None:
        async with request.app[keys.POOL].acquire() as conn:
            clip = await catalog.segment_clip(conn, scene_id, segment_id)
        if clip is None:
            request.app[keys.READ_CACHES].ready.discard((scene_id, segment_id))
            raise not_found("no such file: the segment is not published")
        state.segments.put((scene_id, segment_id, generation), clip)
    try:
        moment = moments.locate_in_clip(clip, micros, width)
    except moments.OutsideTimeline as exc:
        raise not_found(str(exc)) from None
    return await _answer(request, scene_id, moment, layout.file_meta("thumbnail.jpg").cache_control)


async def _answer(
    request: web.Request, scene_id: str, moment: moments.Still, cache_control: str
) -> web.Response:
    fields = {hdrs.CONTENT_TYPE: JPEG, hdrs.CACHE_CONTROL: cache_control, hdrs.ETAG: moment.etag}
    if not none_match(request.headers.get(hdrs.IF_NONE_MATCH), moment.etag):
        return web.Response(status=304, headers=fields)  # RFC 9110 §13.1.2
    try:
        body = await request.app[keys.STILLS].stills.jpeg(scene_id, moment)
    except Busy as exc:
        raise ApiError(  # RFC 9110 §15.6.4, §10.2.3
            503, "busy", str(exc), {hdrs.RETRY_AFTER: str(exc.retry_after)}
        ) from None
    except GrabFailed as exc:
        log.warning("thumbnail of %s failed: %s", moment, exc)
        raise ApiError(500, "thumbnail_failed", str(exc)) from None
    return web.Response(body=body, headers=fields)


def add_routes(app: web.Application) -> None:
    """Before files' and scenes' routes (see the module docstring)."""
    app.router.add_get(SCENE_THUMBNAIL_ROUTE, scene_thumbnail)
    app.router.add_get(SEGMENT_THUMBNAIL_ROUTE, segment_thumbnail)
