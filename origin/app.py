"""The aiohttp application factory: settings and caches as typed AppKeys, one
cleanup_ctx per resource (database pool, storage, the scene changes it follows), the
HTTP layer's middlewares and response hook, and the route table. How the app is run
(fast path or not) is origin/server.py's business."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware

from core import cdn, db, listen
from core.settings import Settings
from core.storage import Storage, open_configured_storage
from origin import assets, captions, exports, health, ingest, keys, lifecycle, playback
from origin.assets.rules import AssetLimits
from origin.assets.service import Processor
from origin.http import auth, body, drain, fields, middleware
from origin.http.stats import FastPathAnswers, HttpStats
from origin.ingest.tus_service import ParkedLeases
from origin.playback.caches import forget_scene, new_read_caches
from origin.playback.stills import stills_state


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool: asyncpg.Pool = await db.connect_pool(
        settings.database_url, size=settings.db_pool_size, reachability=app[keys.DB_REACHABILITY]
    )
    app[keys.POOL] = pool
    yield
    await pool.close()


async def _purges_ctx(app: web.Application) -> AsyncIterator[None]:
    """Tag purges of the origin's own changes (a deleted scene, an asset) when the CDN
    purges by tag (core/cdn.py `open_tag_purges`); what is pending is sent on the way
    out."""
    purges = await cdn.open_tag_purges(app[keys.SETTINGS], app[keys.POOL])
    app[keys.PURGES] = purges
    yield
    if purges is not None:
        await purges.aclose()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[keys.SETTINGS]
    storage: Storage = await open_configured_storage(s)
    app[keys.STORAGE] = storage
    try:
        await storage.ensure_buckets(s.buckets)
        yield
    finally:
        await storage.aclose()


async def _scene_changes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Follow scene deletions and clip removals of every process (core/listen.py)."""
    caches = app[keys.READ_CACHES]
    stop = asyncio.Event()
    dsn = app[keys.SETTINGS].database_url
    task = asyncio.create_task(
        listen.follow(
            lambda: listen.connection(dsn),
            listen.CHANNEL,
            lambda scene: forget_scene(caches, scene),
            stop,
            # notifications may have been missed: every scene's version and readiness
            on_connect=lambda: forget_scene(caches, None),
            what="origin: scene changes",
        ),
        name="scene changes",
    )
    yield
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, 10)


async def _stills_ctx(app: web.Application) -> AsyncIterator[None]:
    """Thumbnails at a moment (after storage: they read media from there)."""
    async with stills_state(app[keys.SETTINGS], app[keys.STORAGE]) as state:
        app[keys.STILLS] = state
        yield


def create_app(
    settings: Settings, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """Build the origin application for `settings`; resources open on startup. `clock`
    (monotonic seconds) ages the read caches' entries."""
    signing_state = auth.signing_state(settings)
    middlewares: list[Middleware] = [
        middleware.request_ids,
        middleware.in_flight,
        middleware.json_errors,
        middleware.unavailable,
        middleware.preflight,
    ]
    if signing_state.guarded:
        middlewares.append(auth.signing_guard)
    app = web.Application(middlewares=middlewares, client_max_size=1024**2)
    app[keys.SETTINGS] = settings
    app[keys.SIGNING] = signing_state
    app[keys.DB_REACHABILITY] = db.Reachability()
    app[keys.READ_CACHES] = new_read_caches(
        settings.playlist_cache_entries,
        clock=clock,
        stale_seconds=settings.stale_if_db_down,
        max_bytes=settings.read_cache_mb * 1024 * 1024,
    )
    app[keys.HTTP_STATS] = HttpStats()
    app[keys.FAST_PATH_ANSWERS] = FastPathAnswers(playback.routes.SCENE_DOCUMENT_ROUTE)
    app[keys.DRAINING] = drain.Draining()
    app[keys.UPLOAD_SLOTS] = body.UploadSlots(settings.max_concurrent_uploads)
    app[keys.PARKED_LEASES] = ParkedLeases(settings.upload_lock_seconds)
    app[keys.ASSET_PROCESSOR] = Processor(AssetLimits.of(settings))
    app.on_response_prepare.append(fields.stamp)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_purges_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_scene_changes_ctx)
    app.cleanup_ctx.append(_stills_ctx)
    for domain in (health, playback, ingest, exports, assets, lifecycle, captions):
        domain.add_routes(app)
    return app
