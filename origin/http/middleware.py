"""The app's middlewares, outermost first: `request_ids` (every request gets an id,
the client's own when it sends a sane one, attached to every log record made while
it is handled), `in_flight` (a gauge of /metrics, and the requests a stopping process
still owes, drain.py), `json_errors` (every error becomes `{"error": {"code",
"message"}}` without a traceback; a client gone mid-request is one log line and a
count of its own, not an error), and `preflight` (CORS preflights for media paths).
The access log and request metrics are written once an answer has been sent
(access.py); the signing guard is in auth.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from core import db
from core.logs import new_request_id, request_id
from core.queue import QueueUnavailable
from core.storage import BadGateway, ObjectNotFound, RangeNotSatisfiable, StorageError
from origin import keys
from origin.http.access import CLIENT_CLOSED, route_of
from origin.http.body import ClientClosed
from origin.http.errors import ApiError, error_response
from origin.http.fields import REQUEST_ID, cors_preflight

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
    """Counts the requests the app is handling (a gauge of /metrics) and keeps them
    until their answer is sent (the access log ends them) for a graceful stop; while
    the process stops, every answer closes its connection."""
    stats = request.app[keys.HTTP_STATS]
    draining = request.app[keys.DRAINING]
    stats.in_flight += 1
    draining.begin(request)
    try:
        response = await handler(request)
    except asyncio.CancelledError:
        draining.end(request)
        if request.transport is None or request.transport.is_closing():
            _note_client_closed(request)  # a runner with handler_cancellation=True
        raise
    except BaseException:
        draining.end(request)
        raise
    finally:
        stats.in_flight -= 1
    if draining.stopping and not response.prepared:
        response.force_close()
    return response


def _note_client_closed(request: web.Request) -> None:
    """One line, no traceback, a count of its own: the client went away before its
    answer (an abandoned upload, say)."""
    route = route_of(request)
    request[CLIENT_CLOSED] = True
    request.app[keys.HTTP_STATS].client_closed[route] += 1
    log.info("client closed the connection before the answer: %s %s", request.method, route)


def _client_closed(request: web.Request) -> web.Response:
    """Nothing can be sent to a client that went away; the access log skips it."""
    _note_client_closed(request)
    response = web.Response(status=499)
    response.force_close()
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (ClientClosed, ConnectionResetError):
        return _client_closed(request)
    except ApiError as exc:
        headers = dict(exc.headers)
        close = headers.pop("Connection", "").lower() == "close"
        response = error_response(exc.status, exc.code, exc.message, headers)
        if close:
            response.force_close()
        return response
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
