"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from origin import keys


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Database and storage reachable within 2 s each, else 503 naming what failed."""
    app = request.app
    problems: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with app[keys.POOL].acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:  # any failure means "not ready"; say which
        problems["database"] = f"{type(exc).__name__}: {exc}" or "unreachable"
    try:
        async with asyncio.timeout(2):
            await app[keys.STORAGE].ping()
    except Exception as exc:
        problems["storage"] = f"{type(exc).__name__}: {exc}"
    if problems:
        return web.json_response(
            {"status": "unavailable", "problems": problems},
            status=503,
            headers={"Cache-Control": "no-store"},
        )
    return web.json_response({"status": "ready"}, headers={"Cache-Control": "no-store"})
