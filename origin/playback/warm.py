"""What the fast path answers: a stitched scene document (`/v/{sceneId}/master.m3u8`,
`/{profile}.m3u8`, `/storyboard.vtt`, `/chapters.vtt`) whose scene version and bytes are
already in the read caches (while Postgres is unreachable, the last known version: the
stale-read rule of `ReadCaches.known`, as the app answers), admitted by the same signing
guard and answered by the same `document_answer` as the app's `scene_document` handler.
Anything else is None, and the app answers it (and fills the caches). origin/server.py
hands `warm_scene_documents` to the connections (origin/http/connection.py)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from core import layout, signing
from origin import keys
from origin.http.auth import admit, count_admitted
from origin.http.fastpath import Answer, WarmAnswer
from origin.playback.documents import M3U8, VTT, document_answer
from origin.playback.scenes import is_scene_file

# scene document paths already found to be one (`_document`), at most this many
KNOWN_PATHS = 4096


def _document(path: str) -> tuple[str, str, str] | None:
    """(scene id, file name, Content-Type) of a scene document's path, else None."""
    parts = path.split("/")
    if len(parts) != 4 or parts[1] != "v" or "%" in path:
        return None
    scene_id, name = parts[2], parts[3]
    if not (layout.is_id(scene_id, "scn") and is_scene_file(name)):
        return None
    return scene_id, name, VTT if name.endswith(".vtt") else M3U8


def warm_scene_documents(app: web.Application) -> WarmAnswer:
    """The fast path's answers for `app` (called once the app has started)."""
    settings = app[keys.SETTINGS]
    caches = app[keys.READ_CACHES]
    reach = app[keys.DB_REACHABILITY]
    state = app[keys.SIGNING]
    secret_field = state.origin_secret_header.lower()
    signing_on = settings.signing != "none"
    guarded = state.guarded
    versions, playlists = caches.versions, caches.playlists
    known_paths: dict[str, tuple[str, str, str]] = {}

    def answer(
        method: str, path: str, query: str, headers: Mapping[str, str], remote: str | None
    ) -> Answer | None:
        document = known_paths.get(path)
        if document is None:
            document = _document(path)
            if document is None:
                return None
            if len(known_paths) >= KNOWN_PATHS:
                known_paths.clear()
            known_paths[path] = document
        scene_id, name, content_type = document
        version = caches.known(versions, scene_id, reach.waiting)
        if version is None or version < 0:
            return None
        built = playlists.get((scene_id, version, name))
        if built is None:
            return None
        auth: str | None = None
        if guarded:
            verdict = admit(state, path, query, remote, headers.get(secret_field), scene_id)
            if isinstance(verdict, signing.Denied):
                return None  # the app's guard answers 403 and counts it
            count_admitted(state, path)
            auth = verdict if signing_on else None
        status, fields, body = document_answer(
            built, content_type, layout.SCENE_PLAYLIST_CACHE, headers.get("if-none-match"), auth
        )
        return status, list(fields.items()), body

    return answer
