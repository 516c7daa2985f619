"""The worker process: opens the pool and storage, registers the job handlers and
runs the job loop until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from origin import db
from origin.settings import Settings
from origin.storage import open_configured_storage
from workers import export, transcode
from workers.worker import Handler, run_worker


def handlers(settings: Settings, storage) -> dict[str, Handler]:
    """Job kind -> handler. Kinds without a handler stay queued for a worker that has one."""
    return {
        "transcode": transcode.make_handler(settings, storage),
        "export": export.make_handler(settings, storage),
    }


async def run(settings: Settings, *, concurrency: int, grace: float) -> None:
    # jobs, claims and the reaper share the pool; one more connection LISTENs for jobs
    pool = await db.connect_pool(settings.database_url, size=concurrency + 3)
    storage = await open_configured_storage(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_worker(
            pool,
            handlers(settings, storage),
            concurrency=concurrency,
            lease_seconds=settings.job_lease_seconds,
            grace_seconds=grace,
            stop=stop,
            name=f"{socket.gethostname()}:{os.getpid()}",
        )
    finally:
        await storage.aclose()
        await pool.close()
