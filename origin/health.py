"""Liveness and readiness probes, and the Prometheus metrics endpoint."""

from __future__ import annotations

import asyncio

from aiohttp import web

from core import cdn, metrics, outbox, queue
from origin import keys
from origin.http import stats
from origin.playback.caches import cache_families


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


async def metrics_endpoint(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text format (core/metrics.py). The job table is
    read with a 2 s limit; when it cannot be, `storyforge_jobs_scrape_ok` is 0."""
    app = request.app
    counts: dict[tuple[str, str], int] | None = None
    ages: dict[str, float] | None = None
    invalidations: dict[tuple[str, str], tuple[int, int]] | None = None
    deliveries: dict[str, int] | None = None
    pending: float | None = None
    try:
        async with asyncio.timeout(2):
            async with app[keys.POOL].acquire() as conn:
                counts = await queue.counts(conn)
                ages = await queue.oldest_due(conn)
                invalidations = await cdn.request_counts(conn)
                deliveries = await outbox.delivery_counts(conn)
                pending = await outbox.oldest_pending(conn)
    except Exception:  # the scrape still shows what the process knows
        counts = ages = invalidations = None
    signing = app[keys.SIGNING].stats
    thumbnails = app[keys.STILLS].stills
    body = metrics.exposition(
        [
            *stats.http_families(app[keys.HTTP_STATS], app[keys.FAST_PATH_ANSWERS]),
            *stats.signing_families(
                {"verified": signing.verified, "denied": signing.denied}, signing.reasons
            ),
            *cache_families(app[keys.READ_CACHES]),
            *stats.outage_families(
                app[keys.DB_REACHABILITY].reachable,
                app[keys.DB_REACHABILITY].outages,
                app[keys.READ_CACHES].stale_answers,
            ),
            *metrics.job_families(counts, ages, queue.JOB_KINDS, queue.STATUSES),
            *metrics.invalidation_families(invalidations),
            *metrics.delivery_families(deliveries, pending),
            *thumbnails.stats.families(thumbnails.cache.bytes),
        ]
    )
    return web.Response(
        body=body,
        headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
