"""The aiohttp application: factory, resources (one cleanup_ctx each), the edge
middleware (request id, JSON errors, access log) and the route table."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from origin import db, keys
from origin.errors import ApiError, error_response
from origin.handlers import api, health, playback, player, signed
from origin.logs import request_id
from origin.scenecache import new_read_caches
from origin.settings import Settings
from origin.storage import Storage, open_configured_storage

log = logging.getLogger("storyforge.origin")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _edge(access_log: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The one outer middleware: request id, CORS preflight, every error as JSON
    `{"error": {"code", "message"}}` without tracebacks, and the access log
    (`all`, or `errors`: status >= 400 and requests slower than 1 s)."""
    log_all = access_log == "all"
    log_errors = access_log != "off"

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-Id")
        rid = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        request[REQUEST_ID] = rid
        token = request_id.set(rid)
        started = time.perf_counter()
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
                raise
            code = exc.reason.lower().replace(" ", "_")
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Content-Range")}
            response = error_response(exc.status, code, exc.reason, headers)
        except Exception:
            log.exception("unhandled error")
            response = error_response(500, "internal", f"internal error (request id {rid})")
        finally:
            request_id.reset(token)
        elapsed = time.perf_counter() - started
        if log_all or (log_errors and (response.status >= 400 or elapsed > 1.0)):
            request_id.set(rid)
            log.info(
                "%s %s %d",
                request.method,
                request.path,
                response.status,
                extra={"sf_ms": round(elapsed * 1000, 2)},
            )
            request_id.set("-")
        return response

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
    middlewares = [_edge(settings.access_log)]
    if signing_state.guarded:
        middlewares.append(signed.signing_guard)
    app = web.Application(middlewares=middlewares, client_max_size=1024**2)
    app[keys.SETTINGS] = settings
    app[signed.SIGNING] = signing_state
    app[keys.READ_CACHES] = new_read_caches(settings.playlist_cache_entries)
    app.on_response_prepare.append(_stamp)
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    api.add_routes(app)
    playback.add_routes(app)
    player.add_routes(app)
    signed.add_routes(app)
    return app
