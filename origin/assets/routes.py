"""The JSON API that writes the assets bucket (issue 15): a user's avatar, a topic's
icon, a scene's references (character portraits, style frame, voice anchor), and the
list of a scene's references with URLs (signed like the scene's media when signing is
on). Bearer token for all of it; an upload is the raw request body, read up to
ASSET_MAX_BYTES (413 beyond), and is refused with 415/422 and a reason when it is not
what its kind must be (origin/assets/rules.py). Serving is `GET /a/{key}`, with the
fields stored with each object (issue 13 §5)."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

from core import catalog, invalidation, layout, signing
from origin import keys
from origin.assets import service
from origin.assets.rules import Refused, Target, avatar_target, reference_target, topic_icon_target
from origin.http.auth import AUTH_QUERY, require_token
from origin.http.errors import ApiError, bad_request, not_found
from origin.http.objects import serve_object
from origin.playback.cookies import iso_time, mint_scene_grant, viewer_ip
from origin.playback.scenes import scene_version

_READ_CHUNK = 64 * 1024
# what users upload is never sniffed into something else (Fetch, "X-Content-Type-Options")
_ASSET_FIELDS = {"X-Content-Type-Options": "nosniff"}


def _target(request: web.Request) -> Target:
    """The asset the path names; 400 for a malformed id or name (before anything
    reaches the database or storage)."""
    info = request.match_info
    try:
        if "user_id" in info:
            return avatar_target(info["user_id"])
        if "topic_id" in info:
            return topic_icon_target(info["topic_id"])
        return reference_target(info["scene_id"], info["name"])
    except ValueError as exc:
        raise bad_request(str(exc)) from None


async def _owner(request: web.Request, target: Target) -> None:
    async with request.app[keys.POOL].acquire() as conn:
        if not await service.owner_exists(conn, target):
            owner = "user" if target.user_id else "scene"
            raise not_found(f"no such {owner}: {target.user_id or target.scene_id}")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload is larger than {limit} bytes")


async def _body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (whatever
    Content-Length said)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    data = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise _too_large(limit)
    if not data:
        raise bad_request("the upload is empty", "empty_upload")
    return bytes(data)


def _url(request: web.Request, key: str, grant: signing.Grant = signing.NO_GRANT) -> str:
    base = request.app[keys.SETTINGS].cdn_base_url
    return grant.apply(layout.cdn_url(base, layout.asset_path(key)))


def _describe(asset: service.Asset, url: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": asset.name,
        "kind": asset.kind,
        "url": url,
        "contentType": asset.content_type,
        "size": asset.size,
        "etag": asset.etag,
        "updatedAt": asset.updated_at.isoformat().replace("+00:00", "Z"),
    }
    if asset.width is not None:
        body["width"], body["height"] = asset.width, asset.height
    if asset.duration is not None:
        body["duration"] = asset.duration
    if asset.entity_id is not None:
        body["entityId"] = asset.entity_id
    return body


def _purge(request: web.Request, key: str, *, deleted: bool) -> None:
    """A tag-purging CDN drops its copies of a replaced (or deleted) asset now, not
    after ASSET_CACHE's max-age (core/cdn.py; coalesced per key)."""
    purges = request.app[keys.PURGES]
    if purges is not None:
        purges.request(key, invalidation.asset_changed(key, deleted=deleted))


async def put_asset(request: web.Request) -> web.Response:
    """PUT an avatar, topic icon or scene reference: 201 when new, 200 when replaced,
    with what was stored."""
    require_token(request)
    target = _target(request)
    settings = request.app[keys.SETTINGS]
    await _owner(request, target)
    data = await _body(request, settings.asset_max_bytes)
    try:
        processed = await request.app[keys.ASSET_PROCESSOR].process(target, data)
    except Refused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    del data
    try:
        asset, created = await service.store(
            request.app[keys.POOL],
            request.app[keys.STORAGE],
            settings.assets_bucket,
            target,
            processed,
        )
    except service.OwnerMissing:
        raise not_found("the asset's owner was deleted meanwhile") from None
    _purge(request, asset.key, deleted=False)
    return web.json_response(
        _describe(asset, _url(request, asset.key)),
        status=201 if created else 200,
        headers={hdrs.CACHE_CONTROL: "no-store", hdrs.LOCATION: layout.asset_path(asset.key)},
    )


async def delete_asset(request: web.Request) -> web.Response:
    """DELETE an avatar, topic icon or scene reference: 204, or 404 if there was none."""
    require_token(request)
    target = _target(request)
    settings = request.app[keys.SETTINGS]
    found = await service.remove(
        request.app[keys.POOL], request.app[keys.STORAGE], settings.assets_bucket, target
    )
    if not found:
        raise not_found(f"no such asset: {target.key}")
    _purge(request, target.key, deleted=True)
    return web.Response(status=204, headers={hdrs.CACHE_CONTROL: "no-store"})


async def scene_references(request: web.Request) -> web.Response:
    """GET /api/v1/scenes/{sceneId}/references: every reference of a live scene with its
    URL; signed for the viewer (as the scene JSON is) when signing is on, with
    `expiresAt`. The bearer token is required either way: references are the app's
    material, not a player's."""
    require_token(request)
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise bad_request("a scene id is scn_ and 12-32 characters [0-9a-z]")
    async with request.app[keys.POOL].acquire() as conn:
        if await catalog.get_live_scene(conn, scene_id) is None:
            raise not_found(f"no such scene: {scene_id}")
        found = await service.scene_references(conn, scene_id)
    grant = signing.NO_GRANT
    if request.app[keys.SETTINGS].signing != "none":
        grant = mint_scene_grant(request, scene_id, viewer_ip(request), signing.mint_references)
    body: dict[str, Any] = {
        "sceneId": scene_id,
        "references": [_describe(a, _url(request, a.key, grant)) for a in found],
    }
    if grant.expires is not None:
        body["expiresAt"] = iso_time(grant.expires)
    return web.json_response(body, headers={hdrs.CACHE_CONTROL: "private, no-store"})


async def asset(request: web.Request) -> web.StreamResponse:
    """GET/HEAD `/a/{key}` from the assets bucket (avatars, topic icons, posters, scene
    references), with the Content-Type and Cache-Control stored with each object. A
    scene reference is answered only once the signing guard has admitted it."""
    key = request.match_info["key"]
    if not layout.is_asset_key(key):
        raise not_found("no such asset")
    if key.startswith("scenes/"):  # a deleted scene's assets are gone at once
        await scene_version(request, key.split("/", 2)[1])
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
    for path in (
        "/api/v1/users/{user_id}/avatar",
        "/api/v1/topics/{topic_id}/icon",
        "/api/v1/scenes/{scene_id}/references/{name}",
    ):
        app.router.add_put(path, put_asset)
        app.router.add_delete(path, delete_asset)
    app.router.add_get("/api/v1/scenes/{scene_id}/references", scene_references)
    app.router.add_get("/a/{key:.+}", asset)
