"""The API's error type and its JSON shape `{"error": {"code", "message"}}`."""

from __future__ import annotations

from aiohttp import web


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
