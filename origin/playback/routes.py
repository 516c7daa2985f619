"""The stitched scene, built from Postgres alone: `/v/{sceneId}/master.m3u8`,
`/{profile}.m3u8`, `/storyboard.vtt` and `/chapters.vtt` (built once per scene version,
served from memory), and the scene JSON of seed §5.1
(`GET /api/v1/scenes/{sceneId}/playlist`), where viewers' authorisations are minted when
signing is on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import hdrs, web

from core import catalog, layout, playlists, signing
from origin import keys
from origin.http.auth import require_token
from origin.http.errors import not_found
from origin.playback.caches import Built
from origin.playback.chapters import chapter_title, chapters_vtt
from origin.playback.cookies import iso_time, mint_scene_grant, viewer_ip
from origin.playback.documents import M3U8, VTT, document_response, revalidated

SCENE_DOCUMENT_ROUTE = "/v/{scene_id}/{name}"
# besides the stitched variants, `{profile}.m3u8`
SCENE_DOCUMENTS = ("master.m3u8", "storyboard.vtt", "chapters.vtt")


async def scene_version(request: web.Request, scene_id: str) -> int:
    caches = request.app[keys.READ_CACHES]
    version = caches.versions.get(scene_id)
    if version is None:
        version = await revalidated(request, caches.versions, scene_id, _live_version(scene_id))
    if version < 0:
        raise not_found(f"no such scene: {scene_id}")
    return version


def _live_version(scene_id: str) -> Callable[[asyncpg.Connection], Awaitable[int]]:
    async def read(conn: asyncpg.Connection) -> int:
        found = await catalog.live_scene_version(conn, scene_id)
        return -1 if found is None else found

    return read


async def require_live_scene(request: web.Request, scene_id: str) -> int:
    """The live scene's version (from the read caches), or ApiError 404: for routes
    that serve a scene's objects without reading its rows (assets)."""
    return await scene_version(request, scene_id)


def _scene_uri_for(request: web.Request, scene_id: str) -> Callable[[str], str]:
    base = request.app[keys.SETTINGS].cdn_base_url
    if not base:
        return lambda rel: rel  # relative to /v/{sceneId}/
    prefix = f"{base}/v/{scene_id}/"
    return lambda rel: prefix + rel


def build_scene_document(view: catalog.SceneView, name: str, uri_for: Callable[[str], str]) -> str:
    """The text of `master.m3u8`, `{profile}.m3u8`, `storyboard.vtt` or `chapters.vtt`
    for a scene.
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
    if name == "chapters.vtt":
        titles = [chapter_title(c.sequence, c.contributor.username) for c in view.clips]
        return chapters_vtt(clips, titles)
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


def is_scene_file(name: str) -> bool:
    return name in SCENE_DOCUMENTS or (
        name.endswith(".m3u8") and layout.is_profile(name.removesuffix(".m3u8"))
    )


async def scene_document(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/v/{sceneId}/master.m3u8`, `/{profile}.m3u8`, `/storyboard.vtt`,
    `/chapters.vtt`: built from Postgres alone, once per (scene version, file), served
    from memory."""
    scene_id = request.match_info["scene_id"]
    name = request.match_info["name"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    if not is_scene_file(name):
        raise not_found("no such scene file")
    version = await scene_version(request, scene_id)
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
        for c in view.clips:  # what the document lists is ready (answered if Postgres goes)
            caches.ready.put((scene_id, c.clip.segment_id), c.clip.generation)
    content_type = VTT if name.endswith(".vtt") else M3U8
    return document_response(request, built, content_type, layout.SCENE_PLAYLIST_CACHE)


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
        "chaptersUrl": url(None, "chapters.vtt"),
    }
    if grant.expires is not None:
        body["expiresAt"] = iso_time(grant.expires)
    return body


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
    caches = request.app[keys.READ_CACHES]
    # read every time; the last one read answers while Postgres is unreachable
    view = await revalidated(
        request, caches.views, scene_id, lambda conn: catalog.scene_view(conn, scene_id)
    )
    if view is None:
        raise not_found(f"no such scene: {scene_id}")
    grant = mint_scene_grant(request, scene_id, viewer_ip(request)) if signed else signing.NO_GRANT
    body = scene_playlist_json(view, request.app[keys.SETTINGS].cdn_base_url, grant)
    cache = "private, no-store" if signed else "no-cache"
    return web.json_response(body, headers={hdrs.CACHE_CONTROL: cache})


def add_routes(app: web.Application) -> None:
    app.router.add_get(SCENE_DOCUMENT_ROUTE, scene_document)
    app.router.add_get("/api/v1/scenes/{scene_id}/playlist", scene_playlist)
