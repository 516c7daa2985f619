"""Scenes and segments as the read path sees them: a scene's live version and a
segment's readiness (read caches, revalidated against Postgres), the stitched scene
documents (`master.m3u8`, `{profile}.m3u8`, `storyboard.vtt`, `chapters.vtt`) and a
segment's own playlists and storyboard built from rows once per version (or
generation) and kept, the clips a thumbnail is placed on, and the scene JSON of seed
§5.1. With signing on, built documents are templates (core/signing.py `marking`)
filled in per request. The routes (origin/playback/routes.py) answer with these."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from core import captions, catalog, layout, playlists, signing, subtitles
from core.playlists import Clip
from origin import keys
from origin.http.errors import not_found
from origin.playback.caches import Built
from origin.playback.chapters import chapter_title, chapters_vtt
from origin.playback.cookies import iso_time
from origin.playback.documents import revalidated

# besides the stitched variants, `{profile}.m3u8`
SCENE_DOCUMENTS = ("master.m3u8", "storyboard.vtt", "chapters.vtt")
# besides the clip's variants, `{profile}.m3u8`, and its subtitles
SEGMENT_DOCUMENTS = ("master.m3u8", "storyboard.vtt")


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
    if name == "master.m3u8":
        profiles = playlists.scene_profiles(clips)
        return playlists.stitched_master(clips, profiles, uri_for=uri_for)
    if name == "storyboard.vtt":
        return playlists.stitched_storyboard_vtt(clips, uri_for=uri_for)
    if name == "chapters.vtt":
        titles = [chapter_title(c.sequence, c.contributor.username) for c in view.clips]
        return chapters_vtt(clips, titles)
    target = playlists.scene_target_duration(clips)
    language = layout.subtitles_playlist_language(name)
    if language is not None:
        if language not in playlists.scene_languages(clips):
            raise not_found(f"scene {view.scene.id} has no {language} subtitles")
        return playlists.stitched_subtitles(clips, language, target=target, uri_for=uri_for)
    profile = name.removesuffix(".m3u8")
    if not any(profile in c.renditions for c in clips):  # the profiles some clip has
        raise not_found(f"scene {view.scene.id} has no variant {profile}")
    return playlists.stitched_media(clips, profile, target=target, uri_for=uri_for)


def is_scene_file(name: str) -> bool:
    """`name` is one of a scene's stitched documents."""
    return name in SCENE_DOCUMENTS or (
        name.endswith(".m3u8")
        and (
            layout.is_profile(name.removesuffix(".m3u8"))
            or layout.subtitles_playlist_language(name) is not None
        )
    )


async def scene_document(request: web.Request, scene_id: str, name: str) -> Built:
    """The scene's document `name` (is_scene_file) at its current version: built from
    Postgres once per (scene version, file) and kept. 404 for no such live scene."""
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
    return built


def is_segment_document(name: str) -> bool:
    """`name` is one of a segment's documents built from its rows, not a stored file."""
    return (
        name in SEGMENT_DOCUMENTS
        or name.endswith(".m3u8")
        or layout.subtitles_segment(name) is not None
    )


def follows_captions(name: str) -> bool:
    """A segment document that lists its captions (its master, its subtitles
    playlists): it changes with them, not only with its generation."""
    return name == "master.m3u8" or layout.subtitles_playlist_language(name) is not None


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


def segment_document_text(clip: playlists.Clip, name: str, uri_for: Callable[[str], str]) -> str:
    """The text of a segment's `master.m3u8`, `{profile}.m3u8` or `storyboard.vtt`
    (URIs relative to the segment's directory, passed through `uri_for`). Raises
    ApiError 404 for a profile the segment does not have."""
    renditions = sorted(clip.renditions.values(), key=lambda r: r.height)
    languages = [lang for lang in clip.captions if clip.subtitles_revision(lang)]
    if name == "master.m3u8":
        return playlists.clip_master_playlist(renditions, uri_for=uri_for, languages=languages)
    language = layout.subtitles_playlist_language(name)
    if language is not None:
        if language not in languages:
            raise not_found("no such file")
        return playlists.clip_subtitles(clip, language, uri_for=uri_for)
    if name == "storyboard.vtt":
        return playlists.clip_storyboard_vtt(clip, uri_for=uri_for)
    rendition = clip.renditions.get(name.removesuffix(".m3u8"))
    if rendition is None:
        raise not_found("no such file")
    # every variant of the clip shares one target duration (RFC 8216 §6.2.4)
    target = playlists.target_duration(r.durations for r in renditions)
    return playlists.clip_media_playlist(rendition, target=target, uri_for=uri_for)


def subtitles_segment_text(
    clip: playlists.Clip, wanted: layout.SubtitlesSegment, stored: tuple[str, int] | None
) -> str:
    """One WebVTT segment of the clip's subtitles (`wanted`, named in a playlist), from
    its stored captions (`stored`: WebVTT and revision): the cues shown during that
    media segment, clamped to the clip's length on the timeline. Revision 0 is always
    an empty segment. 404 for a generation or revision that is not the current one
    (unless this process still holds it: one name is one content), or a segment the
    clip does not have."""
    bounds = playlists.subtitles_bounds_ms(clip)
    first_pts = clip.first_pts
    if (
        wanted.generation != clip.generation
        or not 1 <= wanted.index < len(bounds)
        or (wanted.revision and (stored is None or stored[1] != wanted.revision))
    ):
        raise not_found("no such file")
    if stored is None or first_pts is None:
        return captions.EMPTY_VTT
    cues = captions.clamp(captions.stored_cues(stored[0]), bounds[-1])
    start, end = bounds[wanted.index - 1], bounds[wanted.index]
    return captions.segment_vtt(cues, start, end, first_pts)


async def segment_document(
    request: web.Request, scene_id: str, segment_id: str, name: str, generation: int
) -> Built:
    """A ready segment's playlist or storyboard VTT, built from its rows once per
    generation (a ready segment's rows change only when a refinement publishes the next
    one) and kept; a template when signing is on."""
    caches = request.app[keys.READ_CACHES]
    cache_key: tuple[object, ...] = (segment_id, generation, name)
    if follows_captions(name):  # a caption change is a new scene version
        cache_key += (await scene_version(request, scene_id),)
    built = caches.segment_docs.get(cache_key)
    if built is None:
        async with request.app[keys.POOL].acquire() as conn:
            clip = await catalog.segment_clip(conn, scene_id, segment_id)
            wanted = layout.subtitles_segment(name)
            stored = None
            if clip is not None and wanted is not None and wanted.revision:
                stored = await subtitles.text(conn, segment_id, wanted.language)
        if clip is None:
            caches.ready.discard((scene_id, segment_id))
            raise not_found("no such file: the segment is not published")
        uri_for: Callable[[str], str] = str
        if request.app[keys.SETTINGS].signing != "none":
            uri_for = signing.marking(uri_for)  # a template: filled in per request
        if wanted is not None:
            body = subtitles_segment_text(clip, wanted, stored).encode()
        else:
            body = segment_document_text(clip, name, uri_for).encode()
        built = Built(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        caches.segment_docs.put(cache_key, built)
    return built


async def scene_clips(request: web.Request, scene_id: str) -> tuple[Clip, ...]:
    """The live scene's ready clips in order, kept per scene version (thumbnails at a
    moment are placed on them)."""
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


async def segment_clip(request: web.Request, scene_id: str, segment_id: str) -> Clip:
    """A ready segment's clip, kept per generation; 404 when it is not published."""
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
    return clip


async def scene_view(request: web.Request, scene_id: str) -> catalog.SceneView:
    """The scene's rows for its JSON, read every time; while Postgres is unreachable,
    the rows last read (within STALE_IF_DB_DOWN). 404 for no such live scene."""
    caches = request.app[keys.READ_CACHES]
    view = await revalidated(
        request, caches.views, scene_id, lambda conn: catalog.scene_view(conn, scene_id)
    )
    if view is None:
        raise not_found(f"no such scene: {scene_id}")
    return view


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
                "captions": sorted(sc.clip.captions),
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
        "subtitles": [
            {"language": lang, "url": url(None, layout.subtitles_playlist_name(lang))}
            for lang in playlists.scene_languages([c.clip for c in view.clips])
        ],
    }
    if grant.expires is not None:
        body["expiresAt"] = iso_time(grant.expires)
    return body
