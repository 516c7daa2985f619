"""The aiohttp application: factory, resources (one cleanup_ctx each), the edge
middleware (request id, JSON errors, access log) and the route table."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware

from origin import db, keys
from origin.edge import EdgeConnection, EdgeRunner, WarmAnswer
from origin.errors import ApiError, error_response
from origin.handlers import api, health, playback, player, signed
from origin.logs import log_request, new_request_id, request_id
from origin.metrics import ConnectionAnswers
from origin.scenecache import new_read_caches
from origin.settings import Settings
from origin.storage import Storage, open_configured_storage

log = logging.getLogger("storyforge.origin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _edge(access_log: str) -> Middleware:
    """The one outer middleware: request id, CORS preflight, every error as JSON
    `{"error": {"code", "message"}}` without tracebacks, and the access log
    (`all`, or `errors`: status >= 400 and requests slower than 1 s). On an
    EdgeConnection it also writes the whole answer and then tells the connection,
    which may then answer the next request itself (origin/edge.py)."""
    log_all = access_log == "all"
    log_errors = access_log != "off"

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        counts = request.app[keys.REQUEST_COUNTS]
        transport = request.transport
        conn = transport.get_protocol() if transport is not None else None
        if not isinstance(conn, EdgeConnection):
            conn = None
        rid = new_request_id(request.headers.get("X-Request-Id"))
        request[REQUEST_ID] = rid
        token = request_id.set(rid)
        started = time.perf_counter()
        if conn is not None:
            conn.aiohttp_started()
        try:
            try:
                response = (
                    playback.cors_preflight(request) if request.method == "OPTIONS" else None
                ) or await handler(request)
            except ConnectionResetError:
                raise  # the client went away mid-answer: nothing to send, nothing to log
            except ApiError as exc:
                response = error_response(exc.status, exc.code, exc.message, exc.headers)
            except web.HTTPException as exc:
                if exc.status < 400:
                    response = web.Response(status=exc.status, headers=exc.headers)
                else:
                    code = exc.reason.lower().replace(" ", "_")
                    headers = {
                        k: v for k, v in exc.headers.items() if k in ("Allow", "Content-Range")
                    }
                    response = error_response(exc.status, code, exc.reason, headers)
            except Exception:
                log.exception("unhandled error")
                response = error_response(500, "internal", f"internal error (request id {rid})")
            finally:
                request_id.reset(token)
            elapsed = time.perf_counter() - started
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            counts[(route, response.status, "app")] += 1
            if log_all or (log_errors and (response.status >= 400 or elapsed > 1.0)):
                log_request(log, rid, request.method, request.path, response.status, elapsed)
            if conn is not None:
                # the whole answer leaves before the connection answers anything else
                try:
                    await response.prepare(request)
                    await response.write_eof()
                except ConnectionError:
                    pass  # the client went away mid-answer, as aiohttp's finishing step
            return response
        finally:
            if conn is not None:
                conn.aiohttp_done()

    return edge


REQUEST_ID = web.RequestKey("request_id", str)


async def _stamp(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: headers every answer carries, streamed ones included."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid
    await playback.cors_headers(request, response)


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool: asyncpg.Pool = await db.connect_pool(settings.database_url, size=settings.db_pool_size)
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


def create_app(settings: Settings) -> web.Application:
    """Build the origin application for `settings`; resources open on startup."""
    signing_state = signed.signing_state(settings)
    middlewares: list[Middleware] = [_edge(settings.access_log)]
    if signing_state.guarded:
        middlewares.append(signed.signing_guard)
    app = web.Application(middlewares=middlewares, client_max_size=1024**2)
    app[keys.SETTINGS] = settings
    app[signed.SIGNING] = signing_state
    app[keys.READ_CACHES] = new_read_caches(settings.playlist_cache_entries)
    app[keys.REQUEST_COUNTS] = Counter()
    app[keys.CONNECTION_ANSWERS] = ConnectionAnswers()
    app.on_response_prepare.append(_stamp)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics_endpoint)
    api.add_routes(app)
    playback.add_routes(app)
    player.add_routes(app)
    signed.add_routes(app)
    return app


def edge_runner(
    app: web.Application,
    warm_answer: Callable[[web.Application], WarmAnswer] = playback.warm_answers,
    **kwargs: Any,
) -> EdgeRunner:
    """A runner for `app` whose connections answer warm scene documents themselves
    (origin/edge.py); aiohttp's own access log is off (the edge middleware logs)."""
    return EdgeRunner(
        app,
        warm_answer,
        log_all=app[keys.SETTINGS].access_log == "all",
        access_log=None,
        **kwargs,
    )


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve `app` on host:port until SIGINT or SIGTERM, then shut down gracefully
    (answers in progress may finish, then resources close)."""
    runner = edge_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
