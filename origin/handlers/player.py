"""The demo player page (`/player/{sceneId}`) and the static files it loads,
hls.js included from the npm install (never committed)."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import hdrs, web

from origin import catalog, keys, layout
from origin.errors import ApiError, not_found

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
NODE_MODULES = Path(__file__).resolve().parent.parent.parent / "node_modules"
_STATIC = {
    "player.js": (STATIC_DIR / "player.js", "text/javascript; charset=utf-8"),
    "hls.min.js": (
        NODE_MODULES / "hls.js" / "dist" / "hls.min.js",
        "text/javascript; charset=utf-8",
    ),
}


def player_config(scene_id: str, title: str, cdn_base: str) -> dict[str, str]:
    return {
        "sceneId": scene_id,
        "title": title,
        "masterUrl": layout.cdn_url(cdn_base, layout.cdn_path(scene_id, name="master.m3u8")),
        "storyboardUrl": layout.cdn_url(cdn_base, layout.cdn_path(scene_id, name="storyboard.vtt")),
        "playlistUrl": f"/api/v1/scenes/{scene_id}/playlist",
    }


def render_player(config: dict[str, str]) -> str:
    # JSON inside <script>: escape '<' so no value can close the element
    blob = json.dumps(config).replace("<", "\\u003c")
    return (STATIC_DIR / "player.html").read_text().replace("{{CONFIG}}", blob)


async def player(request: web.Request) -> web.Response:
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    async with request.app[keys.POOL].acquire() as conn:
        scene = await catalog.get_live_scene(conn, scene_id)
    if scene is None:
        raise not_found(f"no such scene: {scene_id}")
    config = player_config(scene_id, scene.title, request.app[keys.SETTINGS].cdn_base_url)
    return web.Response(
        text=render_player(config),
        content_type="text/html",
        headers={hdrs.CACHE_CONTROL: "no-cache"},
    )


async def static(request: web.Request) -> web.StreamResponse:
    entry = _STATIC.get(request.match_info["name"])
    if entry is None:
        raise not_found("no such file")
    path, content_type = entry
    if not path.is_file():
        raise ApiError(
            503, "not_installed", f"{path.name} is missing: run scripts/setup (npm packages)"
        )
    return web.FileResponse(
        path, headers={hdrs.CONTENT_TYPE: content_type, hdrs.CACHE_CONTROL: "public, max-age=300"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/player/{scene_id}", player)
    app.router.add_get("/static/{name}", static)
