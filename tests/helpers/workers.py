"""The one way tests run workers in-process: the real job loop (workers/runtime/loop.py)
with the real handlers of `settings` (or some of them, or handlers of the test's own),
on a pool, storage and CDN invalidations of their own. `running_workers` is the block
form; conftest's `run_workers` fixture starts them on demand for the test's settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

from core import db
from core.cdn import open_invalidations
from core.settings import Settings
from core.storage import open_configured_storage
from workers.runtime.loop import Handler, run_worker
from workers.runtime.main import handlers as real_handlers


class InProcessWorkers:
    """Workers started with `start` share one pool, storage and invalidations;
    `aclose` stops them (each finishes its job within a 5 s grace), sends what they
    invalidated and closes what they used."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tasks: list[tuple[asyncio.Task[None], asyncio.Event]] = []

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        kinds: Iterable[str] | None = None,
        handlers: Mapping[str, Handler] | None = None,
    ) -> InProcessWorkers:
        """Workers for `settings` running every job kind, only `kinds`, or only the
        given `handlers`."""
        self = cls(settings)
        self.pool = await db.connect_pool(settings.database_url, size=12)
        try:
            self.storage = await open_configured_storage(settings)
            try:
                self.invalidations = await open_invalidations(settings, self.pool)
            except BaseException:
                await self.storage.aclose()
                raise
        except BaseException:
            await self.pool.close()
            raise
        if handlers is None:
            every = real_handlers(settings, self.storage, self.invalidations)
            handlers = every if kinds is None else {k: every[k] for k in kinds}
        self.handlers = handlers
        return self

    def start(
        self, concurrency: int = 1, lease_seconds: float = 10.0, name: str | None = None
    ) -> None:
        """One more worker (`concurrency` jobs at a time) on the running loop."""
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(
                self.pool,
                self.handlers,
                concurrency=concurrency,
                lease_seconds=lease_seconds,
                poll_interval=0.2,
                grace_seconds=5,
                stop=stop,
                name=name or f"test-worker-{len(self._tasks)}",
            )
        )
        self._tasks.append((task, stop))

    async def aclose(self) -> None:
        for _task, stop in self._tasks:
            stop.set()
        try:
            for task, _stop in self._tasks:
                await asyncio.wait_for(task, 60)
        finally:
            await self.invalidations.aclose()
            await self.storage.aclose()
            await self.pool.close()


@asynccontextmanager
async def running_workers(
    settings: Settings,
    *,
    concurrency: int = 1,
    lease_seconds: float = 10.0,
    name: str = "test-worker",
    kinds: Iterable[str] | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> AsyncIterator[InProcessWorkers]:
    """A worker for `settings` (every job kind, only `kinds`, or only `handlers`)
    while the block runs; at its end it finishes its jobs (5 s grace) and what it
    invalidated is sent."""
    workers = await InProcessWorkers.open(settings, kinds=kinds, handlers=handlers)
    try:
        workers.start(concurrency, lease_seconds, name)
        yield workers
    finally:
        await workers.aclose()
