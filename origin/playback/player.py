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

from core import layout, signing
from origin.http.errors import ApiError, not_found

STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC = {
    "player.js": (STATIC_DIR / "player.js", "text/javascript; charset=utf-8"),
    "hls-vtt-fix.js": (STATIC_DIR / "hls-vtt-fix.js", "text/javascript; charset=utf-8"),
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


def static_file(name: str) -> tuple[Path, str]:
    """The path and Content-Type of the page's static file `name` (404 for another
    name, 503 when the package build has not copied it in)."""
    entry = _STATIC.get(name)
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
    return path, content_type
