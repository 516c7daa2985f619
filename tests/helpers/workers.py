"""In-process workers (the real job loop and handlers) for settings of a test's own,
e.g. S3 storage, where the `run_workers` fixture follows the shared `settings`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core import db
from core.cdn import open_invalidations
from core.settings import Settings
from core.storage import open_configured_storage
from workers.runtime.loop import run_worker
from workers.runtime.main import handlers


@asynccontextmanager
async def running_workers(
    settings: Settings,
    *,
    concurrency: int = 1,
    lease_seconds: float = 10.0,
    name: str = "test-worker",
) -> AsyncIterator[None]:
    """Workers for `settings` while the block runs; at its end they finish their jobs
    (5 s grace) and what they invalidate is sent."""
    pool = await db.connect_pool(settings.database_url, size=concurrency + 3)
    storage = await open_configured_storage(settings)
    invalidations = await open_invalidations(settings, pool)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            pool,
            handlers(settings, storage, invalidations),
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            poll_interval=0.2,
            grace_seconds=5,
            stop=stop,
            name=name,
        )
    )
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await invalidations.aclose()
            await storage.aclose()
            await pool.close()
