"""The demo player page (`/player/{sceneId}`) and the static files it loads:
`static/` package data, hls.js included (`static/vendor/hls.js/`, copied from the npm
package by the package build, see setup.py; never committed).

With signing on, the page mints an authorisation for its viewer (like the scene
playlist JSON does for the app): the master, storyboard and chapters URLs are signed, and the
scene JSON the page reads is handed over inline as a `data:` URL (its URLs signed too),
so the page needs no bearer token and player.js is the same in every mode."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from aiohttp import hdrs, web

from core import catalog, layout, signing
from origin import keys
from origin.http.errors import ApiError, not_found
from origin.http.objects import SendfileResponse
from origin.playback.cookies import mint_scene_grant
from origin.playback.routes import scene_playlist_json

STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC = {
    "player.js": (STATIC_DIR / "player.js", "text/javascript; charset=utf-8"),
    "hls.min.js": (
        STATIC_DIR / "vendor" / "hls.js" / "hls.min.js",
        "text/javascript; charset=utf-8",
    ),
}


def player_config(
    scene_id: str,
    title: str,
    cdn_base: str,
    grant: signing.Grant = signing.NO_GRANT,
    scene_json: dict[str, object] | None = None,
) -> dict[str, str]:
    """The page's configuration; with a grant, signed URLs and the scene JSON inline."""
    playlist_url = f"/api/v1/scenes/{scene_id}/playlist"
    if scene_json is not None:
        data = base64.b64encode(json.dumps(scene_json).encode()).decode("ascii")
        playlist_url = "data:application/json;base64," + data
    return {
        "sceneId": scene_id,
        "title": title,
        "masterUrl": grant.apply(
            layout.cdn_url(cdn_base, layout.cdn_path(scene_id, name="master.m3u8"))
        ),
        "storyboardUrl": grant.apply(
            layout.cdn_url(cdn_base, layout.cdn_path(scene_id, name="storyboard.vtt"))
        ),
        "chaptersUrl": grant.apply(
            layout.cdn_url(cdn_base, layout.cdn_path(scene_id, name="chapters.vtt"))
        ),
        "playlistUrl": playlist_url,
    }


def render_player(config: dict[str, str]) -> str:
    # JSON inside <script>: escape '<' so no value can close the element
    blob = json.dumps(config).replace("<", "\\u003c")
    return (STATIC_DIR / "player.html").read_text().replace("{{CONFIG}}", blob)


async def player(request: web.Request) -> web.Response:
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
        scene_json = scene_playlist_json(view, settings.cdn_base_url, grant)
        config = player_config(scene_id, view.scene.title, settings.cdn_base_url, grant, scene_json)
        cache = "private, no-store"  # carries a viewer's authorisation
    return web.Response(
        text=render_player(config),
        content_type="text/html",
        headers={hdrs.CACHE_CONTROL: cache},
    )


async def static(request: web.Request) -> web.StreamResponse:
    entry = _STATIC.get(request.match_info["name"])
    if entry is None:
        raise not_found("no such file")
    path, content_type = entry
    if not path.is_file():
        raise ApiError(
            503,
            "not_installed",
            f"{path.name} is missing from {path.parent}: run scripts/setup "
            "(npm ci, then the package build copies it there)",
        )
    return SendfileResponse(
        path, headers={hdrs.CONTENT_TYPE: content_type, hdrs.CACHE_CONTROL: "public, max-age=300"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/player/{scene_id}", player)
    app.router.add_get("/static/{name}", static)
