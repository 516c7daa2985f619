"""A ready segment's own files under `/v/{sceneId}/{segmentId}/{file}` (seed §3.2
mapping) and assets under `/a/{key}`. Media, thumbnails and sprite sheets are sent
from storage as stored (origin/http/objects.py); the segment's playlists and
storyboard VTT are built from its Postgres rows, exactly as the stitched ones are,
and served from memory. Assets go out with the fields stored with them (issue 13 §5)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from aiohttp import web

from core import catalog, layout, playlists, signing
from origin import keys
from origin.http.auth import AUTH_QUERY
from origin.http.errors import ApiError, not_found
from origin.http.objects import serve_object
from origin.playback.caches import Built
from origin.playback.documents import document_response, revalidated
from origin.playback.routes import require_live_scene

_DOCUMENTS = ("master.m3u8", "storyboard.vtt")
# what users upload is never sniffed into something else (Fetch, "X-Content-Type-Options")
_ASSET_FIELDS = {"X-Content-Type-Options": "nosniff"}


async def segment_ready(request: web.Request, scene_id: str, segment_id: str) -> int:
    """The generation of the segment's renditions when its own files are served, else
    0 (false). Cached for the readiness TTL: what is built from its rows is keyed by it,
    so a refined generation (issue 17) is answered within that TTL."""
    caches = request.app[keys.READ_CACHES]
    generation = caches.ready.get((scene_id, segment_id))
    if generation is None:
        generation = await revalidated(
            request,
            caches.ready,
            (scene_id, segment_id),
            lambda conn: catalog.ready_segment_generation(conn, scene_id, segment_id),
        )
    return generation


def _is_document(name: str) -> bool:
    return name in _DOCUMENTS or name.endswith(".m3u8")


def segment_document_text(clip: playlists.Clip, name: str, uri_for: Callable[[str], str]) -> str:
    """The text of a segment's `master.m3u8`, `{profile}.m3u8` or `storyboard.vtt`
    (URIs relative to the segment's directory, passed through `uri_for`). Raises
    ApiError 404 for a profile the segment does not have."""
    renditions = sorted(clip.renditions.values(), key=lambda r: r.height)
    if name == "master.m3u8":
        return playlists.clip_master_playlist(renditions, uri_for=uri_for)
    if name == "storyboard.vtt":
        return playlists.clip_storyboard_vtt(clip, uri_for=uri_for)
    rendition = clip.renditions.get(name.removesuffix(".m3u8"))
    if rendition is None:
        raise not_found("no such file")
    # every variant of the clip shares one target duration (RFC 8216 §6.2.4)
    target = playlists.target_duration(r.durations for r in renditions)
    return playlists.clip_media_playlist(rendition, target=target, uri_for=uri_for)


async def _segment_document(
    request: web.Request, scene_id: str, segment_id: str, name: str, generation: int
) -> web.Response:
    """A segment's playlist or storyboard VTT, built from its rows once per generation
    (a ready segment's rows change only when a refinement publishes the next one) and
    kept; a template when signing is on."""
    caches = request.app[keys.READ_CACHES]
    cache_key = (segment_id, generation, name)
    built = caches.segment_docs.get(cache_key)
    if built is None:
        async with request.app[keys.POOL].acquire() as conn:
            clip = await catalog.segment_clip(conn, scene_id, segment_id)
        if clip is None:
            caches.ready.discard((scene_id, segment_id))
            raise not_found("no such file: the segment is not published")
        uri_for: Callable[[str], str] = str
        if request.app[keys.SETTINGS].signing != "none":
            uri_for = signing.marking(uri_for)  # a template: filled in per request
        body = segment_document_text(clip, name, uri_for).encode()
        built = Built(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        caches.segment_docs.put(cache_key, built)
    meta = layout.file_meta(name)
    return document_response(request, built, meta.content_type, meta.cache_control)


async def segment_file(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/{segmentId}/{file}`."""
    info = request.match_info
    return await serve_segment_file(request, info["scene_id"], info["segment_id"], info["file"])


async def serve_segment_file(
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
    generation = await segment_ready(request, scene_id, segment_id)
    if not generation:
        raise not_found("no such file: the segment is not published")
    if _is_document(name):
        return await _segment_document(request, scene_id, segment_id, name, generation)
    meta = layout.file_meta(name)
    return await serve_object(
        request,
        request.app[keys.SETTINGS].videos_bucket,
        layout.segment_key(scene_id, segment_id, name),
        meta.content_type,
        meta.cache_control,
    )


async def asset(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/a/{key}` from the assets bucket (avatars, topic icons, posters, scene
    references), with the Content-Type and Cache-Control stored with each object. A
    scene reference is answered only once the signing guard has admitted it."""
    key = request.match_info["key"]
    if not layout.is_asset_key(key):
        raise not_found("no such asset")
    if key.startswith("scenes/"):  # a deleted scene's assets are gone at once
        await require_live_scene(request, key.split("/", 2)[1])
    if (
        layout.is_reference_key(key)
        and request.app[keys.SIGNING].guarded
        and AUTH_QUERY not in request
    ):
        raise ApiError(403, "forbidden", "a scene reference needs the scene's authorisation")
    meta = layout.asset_meta(key)
    settings = request.app[keys.SETTINGS]
    return await serve_object(
        request,
        settings.assets_bucket,
        key,
        meta.content_type,
        meta.cache_control,
        stored=True,
        headers=_ASSET_FIELDS,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v/{scene_id}/{segment_id}/{file}", segment_file)
    app.router.add_get("/a/{key:.+}", asset)
