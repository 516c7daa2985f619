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

from core import db, listen
from core.settings import Settings
from core.storage import Storage, open_configured_storage
from core.uploads import ParkedLeases
from origin import health, keys
from origin.assets import routes as asset_api
from origin.assets import service
from origin.assets.rules import AssetLimits
from origin.exports import routes as exports
from origin.http import auth, body, drain, fields, middleware
from origin.http.stats import FastPathAnswers, HttpStats
from origin.ingest import routes as api
from origin.ingest import tus_routes
from origin.lifecycle import routes as lifecycle
from origin.playback import cookies, files, player, still_routes
from origin.playback import routes as scenes
from origin.playback.caches import forget_scene, new_read_caches


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool: asyncpg.Pool = await db.connect_pool(
        settings.database_url, size=settings.db_pool_size, reachability=app[keys.DB_REACHABILITY]
    )
    app[keys.POOL] = pool
    yield
    await pool.close()


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
    task = asyncio.create_task(
        listen.follow(
            app[keys.SETTINGS].database_url, lambda scene: forget_scene(caches, scene), stop
        ),
        name="scene changes",
    )
    yield
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, 10)


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
        settings.playlist_cache_entries, clock=clock, stale_seconds=settings.stale_if_db_down
    )
    app[keys.HTTP_STATS] = HttpStats()
    app[keys.FAST_PATH_ANSWERS] = FastPathAnswers(scenes.SCENE_DOCUMENT_ROUTE)
    app[keys.DRAINING] = drain.Draining()
    app[keys.UPLOAD_SLOTS] = body.UploadSlots(settings.max_concurrent_uploads)
    app[keys.PARKED_LEASES] = ParkedLeases(settings.upload_lock_seconds)
    app[keys.ASSET_PROCESSOR] = service.Processor(AssetLimits.of(settings))
    app.on_response_prepare.append(fields.stamp)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_scene_changes_ctx)
    app.cleanup_ctx.append(still_routes.stills_ctx)  # after storage: it reads media from there
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics_endpoint)
    still_routes.add_routes(app)  # before files' and scenes' catch-all routes take its paths
    api.add_routes(app)
    files.add_routes(app)
    scenes.add_routes(app)
    player.add_routes(app)
    cookies.add_routes(app)
    lifecycle.add_routes(app)
    asset_api.add_routes(app)
    tus_routes.add_routes(app)
    exports.add_routes(app)
    return app
