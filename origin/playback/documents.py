"""Documents built from Postgres and served from memory (stitched and per-segment
playlists, storyboard VTTs): the conditional answer to a cached document, with the
viewer's authorisation filled into its URIs when signing is on. Used by the scene
and segment handlers and by the fast path, so both paths answer alike. `revalidated`
re-reads what the read caches keep for a short time (a scene's version, a segment's
readiness, the scene JSON's rows) and answers the last known value while Postgres is
unreachable or hung."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

import asyncpg
from aiohttp import hdrs, web

from core import db, signing
from core.conditional import none_match
from core.lru import LRU
from origin import keys
from origin.http.auth import AUTH_QUERY
from origin.playback.caches import Built

V = TypeVar("V")
# a hung database (not refusing, not answering) delays an answer the caches have by this
REVALIDATE_SECONDS = 2.0

M3U8 = "application/vnd.apple.mpegurl"
VTT = "text/vtt; charset=utf-8"


def document_answer(
    built: Built,
    content_type: str,
    cache_control: str,
    if_none_match: str | None,
    auth_query: str | None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, fields and body for a cached document (a template to fill in with
    `auth_query` when signing is on, None when it is off)."""
    fields: dict[str, str] = {
        hdrs.CONTENT_TYPE: content_type,
        hdrs.CACHE_CONTROL: cache_control,
        hdrs.ETAG: built.etag,
    }
    if not none_match(if_none_match, built.etag):
        return 304, fields, b""  # RFC 9110 §13.1.2: GET/HEAD with a matching tag
    body = built.body if auth_query is None else signing.render(built.body, auth_query)
    return 200, fields, body


def document_response(
    request: web.Request, built: Built, content_type: str, cache_control: str
) -> web.Response:
    """A cached document (a template when signing is on) for this request."""
    auth = request.get(AUTH_QUERY, "") if request.app[keys.SETTINGS].signing != "none" else None
    status, fields, body = document_answer(
        built, content_type, cache_control, request.headers.get(hdrs.IF_NONE_MATCH), auth
    )
    return web.Response(status=status, headers=fields, body=body if status == 200 else None)


def _failed() -> bool:
    return True  # the read just failed: Postgres cannot be asked


async def revalidated(
    request: web.Request,
    cache: LRU[V],
    key: Hashable,
    read: Callable[[asyncpg.Connection], Awaitable[V]],
) -> V:
    """`read` from Postgres and kept in `cache`; while Postgres is unreachable, or
    takes over REVALIDATE_SECONDS to answer where `cache` has something to answer with,
    what the stale-read rule gives (`ReadCaches.known`; else db.Unavailable: 503)."""
    caches = request.app[keys.READ_CACHES]
    bound = REVALIDATE_SECONDS if cache.stale(key, caches.stale_seconds) is not None else None
    try:
        async with asyncio.timeout(bound), request.app[keys.POOL].acquire() as conn:
            value = await read(conn)
    except (db.Unavailable, TimeoutError) as exc:
        known = caches.known(cache, key, _failed)
        if known is None:
            raise db.Unavailable(f"no answer from the database ({exc})") from exc
        return known
    cache.put(key, value)
    return value
