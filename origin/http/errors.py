"""The API's error type and its JSON shape `{"error": {"code", "message"}}`, and
`without_paths` for error texts that come from tools (ffmpeg) and go to clients."""

from __future__ import annotations

import re

from aiohttp import web

# an absolute filesystem path (optionally a file: URL, or after another protocol
# prefix such as ffmpeg's `concat:`): two or more components; a URL's `//host/path`
# never matches (its path follows the host name)
_PATH = re.compile(
    r"(?:\bfile:|(?<![\w./~]))/(?:[^\s/'\"`:;,|()\[\]<>]+/)+([^\s/'\"`:;,|()\[\]<>]*)"
)


def without_paths(text: str) -> str:
    """`text` with every absolute server path cut to its last component: error texts
    from ffmpeg and ffprobe name the files they read, and clients must not learn the
    server's directory layout. URLs (`scheme://host/path`) are left alone."""
    return _PATH.sub(lambda m: m.group(1) or "(path)", text)


class ApiError(Exception):
    """An error a client caused or must know about, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not_found", message)


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
