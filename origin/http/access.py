"""The access log and the request counts of `/metrics`, written once an answer has
been sent completely. Both hang on aiohttp's documented access-logger hook
(`AppRunner(access_log_class=...)`, `aiohttp.abc.AbstractAccessLogger`), which
aiohttp calls after the last byte of each answer it makes, so a log line's duration
covers sending the body too. The fast path logs and counts its own answers with the
same `log_request` and counters (origin/http/connection.py). A request whose client went away
before its answer was logged and counted by the middleware already (CLIENT_CLOSED)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from core.logs import log_request
from origin import keys
from origin.http.fields import REQUEST_ID

log = logging.getLogger("storyforge.origin")
SLOW_SECONDS = 1.0  # ACCESS_LOG=errors also logs answers slower than this
CLIENT_CLOSED = web.RequestKey("client_closed", bool)


def route_of(request: web.BaseRequest) -> str:
    """The route template a request matched ("unmatched" when none, e.g. a request
    aiohttp refused before routing)."""
    try:
        resource = request.match_info.route.resource  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):  # a BaseRequest, or routing never ran
        return "unmatched"
    return resource.canonical if resource is not None else "unmatched"


def should_log(mode: str, status: int, seconds: float) -> bool:
    """ACCESS_LOG: `all`, `errors` (status >= 400 or slower than SLOW_SECONDS), `off`."""
    if mode == "all":
        return True
    return mode == "errors" and (status >= 400 or seconds > SLOW_SECONDS)


def access_log_class(app: web.Application) -> type[AbstractAccessLogger]:
    """The access-logger class for a runner of `app` (aiohttp makes one per
    connection with its own arguments, so the app's settings are bound here)."""
    mode = app[keys.SETTINGS].access_log
    stats = app[keys.HTTP_STATS]
    draining = app[keys.DRAINING]

    class AccessLog(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            draining.end(request)
            if request.get(CLIENT_CLOSED):
                return
            status = response.status
            stats.answered(route_of(request), status, time, response.body_length)
            if should_log(mode, status, time):
                rid = request.get(REQUEST_ID, "-")
                log_request(log, rid, request.method, request.path, status, time)

    return AccessLog
