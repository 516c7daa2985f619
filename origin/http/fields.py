"""The fields every answer carries, whichever path made it (the aiohttp app or the
fast path): `X-Request-Id`; on media paths (`/v/`, `/e/`, `/a/`) the cache tags of
what the answer depends on (core/cachetags.py, in the CACHE_TAG_HEADER field, which
the CDN strips) and the CORS fields of the Fetch standard
(`Access-Control-Allow-Origin`, `Access-Control-Expose-Headers`, `Vary: Origin`);
on tus upload paths the same CORS fields with the tus fields exposed. Also the CORS
preflight answer for both."""

from __future__ import annotations

from aiohttp import web

from core import cachetags
from origin import keys
from origin.http.errors import error_response

# the paths media is served under: players on other origins fetch them
CORS_PREFIXES = ("/v/", "/a/", "/e/")
_EXPOSE = "Content-Length, Content-Range, ETag, Accept-Ranges"
# tus uploads from browsers (origin/ingest/routes.py): the protocol's fields both ways
UPLOADS_PREFIX = "/api/v1/uploads"
_TUS_EXPOSE = (
    "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, "
    "Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, "
    "X-Request-Id"
)
_TUS_ALLOW_HEADERS = (
    "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, "
    "Upload-Offset, Upload-Checksum, Upload-Defer-Length, Upload-Concat, "
    "X-HTTP-Method-Override, X-Request-Id"
)


def _cors_path(path: str) -> bool:
    return path.startswith(CORS_PREFIXES) or path.startswith(UPLOADS_PREFIX)


REQUEST_ID = web.RequestKey("request_id", str)


def cors_allow(origin: str | None, allowed: tuple[str, ...]) -> str | None:
    """The Access-Control-Allow-Origin value for a request's Origin, or None."""
    if not origin:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


def cors_fields(allow: str, expose: str = _EXPOSE) -> list[tuple[str, str]]:
    """The CORS fields of a media answer to an allowed origin. A value that depends
    on the request's Origin makes the answer vary by it (Fetch §3.2.6, RFC 9110 §12.5.5)."""
    fields = [
        ("Access-Control-Allow-Origin", allow),
        ("Access-Control-Expose-Headers", expose),
    ]
    return fields if allow == "*" else [*fields, ("Vary", "Origin")]


def answer_fields(
    request_id: str,
    path: str,
    origin: str | None,
    allowed: tuple[str, ...],
    tag_header: str = "",
    tag_separator: str = " ",
) -> list[tuple[str, str]]:
    """What every answer to a request for `path` carries beside its own fields
    (`tag_header` "": no cache tags)."""
    fields = [("X-Request-Id", request_id)]
    if tag_header and path.startswith(CORS_PREFIXES):
        tags = cachetags.of_path(path)
        if tags:
            fields.append((tag_header, cachetags.header_value(tags, tag_separator)))
    if _cors_path(path):
        allow = cors_allow(origin, allowed)
        if allow is not None:
            tus = path.startswith(UPLOADS_PREFIX)
            fields.extend(cors_fields(allow, _TUS_EXPOSE if tus else _EXPOSE))
    return fields


async def stamp(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: `answer_fields` on every answer the app makes, streamed
    ones included (the fast path adds the same fields to its own answers)."""
    rid = request.get(REQUEST_ID)
    if rid is None:  # a request aiohttp refused before the middlewares ran
        return
    settings = request.app[keys.SETTINGS]  # type: ignore[attr-defined]
    for name, value in answer_fields(
        rid,
        request.path,
        request.headers.get("Origin"),
        settings.cors_origins,
        settings.cache_tag_header,
        settings.cache_tag_separator,
    ):
        response.headers.add(name, value)


def cors_preflight(request: web.Request) -> web.Response | None:
    """The answer to a CORS preflight for a media path (Fetch §4.8), or None if this
    request is not one."""
    if not (
        request.method == "OPTIONS"
        and _cors_path(request.path)
        and "Access-Control-Request-Method" in request.headers
    ):
        return None
    allow = cors_allow(request.headers.get("Origin"), request.app[keys.SETTINGS].cors_origins)
    if allow is None:
        return error_response(
            403, "cors_forbidden", "this origin may not fetch media here", {"Vary": "Origin"}
        )
    if request.path.startswith(UPLOADS_PREFIX):
        methods, headers = "POST, HEAD, PATCH, DELETE, OPTIONS", _TUS_ALLOW_HEADERS
    else:
        methods, headers = "GET, HEAD, OPTIONS", "Range, If-None-Match, If-Modified-Since"
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": headers,
            "Access-Control-Max-Age": "86400",
        },
    )
