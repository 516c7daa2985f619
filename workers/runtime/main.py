"""The worker process: opens the pool, storage and CDN invalidations, registers the
job handlers, serves its /metrics (WORKER_METRICS_PORT) and runs the job loop until
SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from core import db, memory
from core.cdn import Invalidations, NoInvalidator, open_invalidations
from core.lifecycle import lost_for_good
from core.retention import Retention
from core.settings import Settings
from core.storage import open_configured_storage
from workers.jobs import expire, export, lifecycle, refine, transcode, webhook
from workers.runtime.loop import Handler, run_worker
from workers.runtime.metrics import JobStats, metrics_server


def handlers(
    settings: Settings, storage, invalidations: Invalidations | None = None
) -> dict[str, Handler]:
    """Job kind -> handler. Kinds without a handler stay queued for a worker that has
    one. Without `invalidations`, nothing is invalidated (no CDN)."""
    if invalidations is None:
        invalidations = Invalidations(NoInvalidator(), window=settings.cdn_invalidation_window)
    return {
        "transcode": transcode.make_handler(settings, storage, invalidations),
        "delete_scene": lifecycle.make_delete_scene(settings, storage, invalidations),
        "remove_segment": lifecycle.make_remove_segment(settings, storage, invalidations),
        "webhook": webhook.make_handler(settings),
        "expire_upload": expire.make_handler(settings, storage),
        "export": export.make_handler(settings, storage),
        "refine": refine.make_handler(settings, storage, invalidations),
    }


async def run(settings: Settings, *, concurrency: int, grace: float) -> None:
    memory.fix_mmap_threshold()  # or the RSS creeps with every export (core/memory.py)
    # jobs, claims and the reaper share the pool; one more connection LISTENs for jobs
    pool = await db.connect_pool(settings.database_url, size=concurrency + 3)
    storage = await open_configured_storage(settings)
    invalidations = await open_invalidations(settings, pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = JobStats()
    registered = handlers(settings, storage, invalidations)
    try:
        async with metrics_server(
            stats, sorted(registered), settings.host, settings.worker_metrics_port
        ):
            await run_worker(
                pool,
                registered,
                concurrency=concurrency,
                lease_seconds=settings.job_lease_seconds,
                grace_seconds=grace,
                stop=stop,
                name=f"{socket.gethostname()}:{os.getpid()}",
                stats=stats,
                retention=Retention.of(settings),
                on_dead=lambda conn, job: lost_for_good(conn, job, webhooks=settings.webhook_urls),
            )
    finally:
        await invalidations.aclose()
        await storage.aclose()
        await pool.close()
