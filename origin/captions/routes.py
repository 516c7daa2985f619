"""The captions API (issue 27): `PUT /api/v1/segments/{segmentId}/captions/{lang}`
(bearer token; a `text/vtt` or `application/x-subrip` body of at most
CAPTIONS_MAX_BYTES, parsed and normalised to WebVTT by core/captions.py, refused
whole with 413/415/422 and the line at fault), `GET .../captions` (the clip's
languages), `GET .../captions/{lang}` (the stored WebVTT) and `DELETE
.../captions/{lang}` (bearer token). `lang` is a BCP 47 tag (400 otherwise), stored in
its canonical case. A change is a new scene version (core/subtitles.py): this
process forgets the scene's version at once, the others within their 1 s recheck,
and a tag-purging CDN drops the scene's documents now."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

from core import captions, catalog, invalidation, layout, subtitles
from origin import keys
from origin.http.auth import require_token
from origin.http.body import defer_continue, read_all
from origin.http.errors import ApiError, bad_request, not_found
from origin.playback.caches import forget_scene

_NO_STORE: dict[str, str] = {hdrs.CACHE_CONTROL: "no-store"}


def _segment_id(request: web.Request) -> str:
    value = request.match_info["segment_id"]
    if not layout.is_id(value, "seg"):
        raise not_found("no such segment: malformed id")
    return value


def _language(request: web.Request) -> str:
    raw = request.match_info["lang"]
    tag = captions.language_tag(raw)
    if tag is None:
        raise bad_request(f"{raw[:40]!r} is not a BCP 47 language tag (en, pt-BR)", "bad_language")
    return tag


def _path(segment_id: str, language: str) -> str:
    return f"/api/v1/segments/{segment_id}/captions/{language}"


def _describe(segment_id: str, found: subtitles.Language) -> dict[str, Any]:
    return {
        "language": found.language,
        "cues": found.cues,
        "revision": found.revision,
        "updatedAt": found.updated_at.isoformat().replace("+00:00", "Z"),
        "url": _path(segment_id, found.language),
    }


def _changed(request: web.Request, scene_id: str, segment_id: str) -> None:
    """The scene's documents changed: this process rebuilds them at once; a
    tag-purging CDN drops its copies now (the others expire within max-age=5)."""
    forget_scene(request.app[keys.READ_CACHES], scene_id)
    purges = request.app[keys.PURGES]
    if purges is not None:
        purges.request(scene_id, invalidation.captions_changed(scene_id, segment_id))


async def put_captions(request: web.Request) -> web.Response:
    """201 new language / 200 replaced, with what was stored (`dropped`: cues that
    started after the end of a ready clip; cues running past it are clamped)."""
    require_token(request)
    segment_id, language = _segment_id(request), _language(request)
    settings = request.app[keys.SETTINGS]
    if request.content_type not in (*captions.VTT_TYPES, *captions.SRT_TYPES):
        raise ApiError(415, "unsupported_media_type", "send text/vtt or application/x-subrip")
    with request.app[keys.UPLOAD_SLOTS].take():
        data = await read_all(request, settings.captions_max_bytes, settings.body_idle_timeout)
    limits = captions.Limits(settings.captions_max_bytes, settings.captions_max_cues)
    try:
        cues = captions.parse(data, request.content_type, limits)
    except captions.CaptionError as exc:
        code = {413: "too_large", 415: "unsupported_media_type"}.get(exc.status, "bad_captions")
        raise ApiError(exc.status, code, str(exc)) from None
    async with request.app[keys.POOL].acquire() as conn:
        try:
            written = await subtitles.put(
                conn, segment_id, language, cues, webhooks=settings.webhook_urls
            )
        except subtitles.NoClip:
            raise not_found(f"no such segment: {segment_id}") from None
    _changed(request, written.scene_id, segment_id)
    body = {
        "segmentId": segment_id,
        "sceneId": written.scene_id,
        **_describe(segment_id, written.language),
        "dropped": written.dropped,
    }
    return web.json_response(
        body,
        status=201 if written.created else 200,
        headers={**_NO_STORE, hdrs.LOCATION: _path(segment_id, language)},
    )


async def list_captions(request: web.Request) -> web.Response:
    segment_id = _segment_id(request)
    async with request.app[keys.POOL].acquire() as conn:
        found = await subtitles.languages(conn, segment_id)
        if not found and await catalog.segment_status(conn, segment_id) is None:
            raise not_found(f"no such segment: {segment_id}")
    body = {"segmentId": segment_id, "captions": [_describe(segment_id, f) for f in found]}
    return web.json_response(body, headers=_NO_STORE)


async def get_captions(request: web.Request) -> web.Response:
    segment_id, language = _segment_id(request), _language(request)
    async with request.app[keys.POOL].acquire() as conn:
        stored = await subtitles.text(conn, segment_id, language)
    if stored is None:
        raise not_found(f"no {language} captions for segment {segment_id}")
    return web.Response(
        text=stored[0],
        content_type="text/vtt",
        charset="utf-8",
        headers={**_NO_STORE, "X-Content-Type-Options": "nosniff"},
    )


async def delete_captions(request: web.Request) -> web.Response:
    require_token(request)
    segment_id, language = _segment_id(request), _language(request)
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.POOL].acquire() as conn:
        try:
            scene_id = await subtitles.delete(
                conn, segment_id, language, webhooks=settings.webhook_urls
            )
        except subtitles.NoClip:
            raise not_found(f"no such segment: {segment_id}") from None
    if scene_id is None:
        raise not_found(f"no {language} captions for segment {segment_id}")
    _changed(request, scene_id, segment_id)
    return web.Response(status=204, headers=_NO_STORE)


def add_routes(app: web.Application) -> None:
    base = "/api/v1/segments/{segment_id}/captions"
    app.router.add_put(base + "/{lang}", put_captions, expect_handler=defer_continue)
    app.router.add_get(base + "/{lang}", get_captions)
    app.router.add_delete(base + "/{lang}", delete_captions)
    app.router.add_get(base, list_captions)
