"""The app's middlewares, outermost first: `request_ids` (every request gets an id,
the client's own when it sends a sane one, attached to every log record made while
it is handled), `in_flight` (a gauge of /metrics), `json_errors` (every error becomes `{"error": {"code", "message"}}`
without a traceback), and `preflight` (CORS preflights for media paths). The access
log and request metrics are written once an answer has been sent (access.py); the
signing guard is in auth.py."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from origin import db, keys
from origin.errors import ApiError, error_response
from origin.http.fields import REQUEST_ID, cors_preflight
from origin.logs import new_request_id, request_id
from origin.queue import QueueUnavailable
from origin.storage import BadGateway, ObjectNotFound, RangeNotSatisfiable, StorageError

log = logging.getLogger("storyforge.origin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = new_request_id(request.headers.get("X-Request-Id"))
    request[REQUEST_ID] = rid
    token = request_id.set(rid)
    try:
        return await handler(request)
    finally:
        request_id.reset(token)


@web.middleware
async def in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the requests the app is handling (a gauge of /metrics)."""
    stats = request.app[keys.HTTP_STATS]
    stats.in_flight += 1
    try:
        return await handler(request)
    finally:
        stats.in_flight -= 1


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ConnectionResetError:
        raise  # the client went away mid-answer: nothing to send, nothing to log
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            return web.Response(status=exc.status, headers=exc.headers)
        code = exc.reason.lower().replace(" ", "_")
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Content-Range")}
        return error_response(exc.status, code, exc.reason, headers)
    except Exception:
        log.exception("unhandled error")
        return error_response(
            500, "internal", f"internal error (request id {request.get(REQUEST_ID, '-')})"
        )


# RFC 9110 §10.2.3: how long a client should wait before asking again after a 503
RETRY_AFTER_SECONDS = "2"


@web.middleware
async def unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A dependency out of reach is the server's temporary condition, not a bug: 503
    with `Retry-After` (RFC 9110 §15.6.4), no traceback. The outage itself is logged
    once where it is noticed (db.Reachability), not per request."""
    try:
        return await handler(request)
    except (db.Unavailable, QueueUnavailable) as exc:
        raise ApiError(
            503,
            "database_unavailable",
            "the database is unreachable; try again shortly",
            {"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc
    except (ObjectNotFound, RangeNotSatisfiable):
        raise
    except BadGateway as exc:
        raise ApiError(
            502,
            "bad_gateway",
            "the storage answered with an error; try again shortly",
            {"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc
    except StorageError as exc:  # the access log has the 503s
        raise ApiError(
            503,
            "storage_unavailable",
            "the storage is unreachable; try again shortly",
            {"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc


@web.middleware
async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":
        answer = cors_preflight(request)
        if answer is not None:
            return answer
    return await handler(request)
