"""CDN invalidation, the I/O part: the `Invalidator` protocol with its CloudFront
implementation (aiobotocore `CreateInvalidation`, one client per process) and a no-op
for the embedded default, and `Invalidations`, which every caller goes through.

`Invalidations` coalesces per scene: a scene's paths are sent at most once per
`window` seconds (what arrives meanwhile waits and goes out together, with any other
scene's due paths, in as few requests as core/invalidation.py plans). A caller may
fire and forget (`request`: failures are logged) or wait for the send (`invalidate`:
failures raise, e.g. to retry a job). Every request is counted, by backend and
outcome, in Postgres (`sql/cdn.sql`), so /metrics shows those of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import asyncpg
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from core import db
from core.backoff import backoff_seconds
from core.invalidation import RETRYABLE_CODES, caller_reference, plan
from core.settings import Settings

log = logging.getLogger("storyforge.cdn")

SEND_ATTEMPTS = 6  # per request: throttled or too many in progress, then given up
SEND_BACKOFF = 1.0  # seconds, base of the jittered exponential backoff between them
SEND_BACKOFF_CAP = 60.0

Count = Callable[[str, str, int, int], Awaitable[None]]  # backend, outcome, requests, paths


class InvalidationFailed(Exception):
    """The CDN refused an invalidation, or kept throttling it."""


class Invalidator(Protocol):
    """Sends one invalidation request (paths within CloudFront's per-request limits)."""

    backend: str

    async def send(self, paths: Sequence[str]) -> None: ...

    async def aclose(self) -> None: ...


class NoInvalidator:
    """No CDN in front (the embedded default): nothing to invalidate."""

    backend = "none"

    async def send(self, paths: Sequence[str]) -> None:
        return None

    async def aclose(self) -> None:
        return None


class CloudFrontInvalidator:
    """`CreateInvalidation` on one distribution through one aiobotocore client.

    Each request gets a unique CallerReference, kept across its own retries so that a
    request CloudFront did receive is not created twice. Throttling, too many
    invalidations in progress and transient failures are retried with backoff."""

    backend = "cloudfront"

    def __init__(
        self,
        client: Any,
        stack: contextlib.AsyncExitStack,
        distribution_id: str,
        *,
        attempts: int = SEND_ATTEMPTS,
        backoff: float = SEND_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._stack = stack
        self.distribution_id = distribution_id
        self.attempts = attempts
        self.backoff = backoff
        self._sleep = sleep

    @property
    def client(self) -> Any:
        """The aiobotocore CloudFront client (tests observe its calls)."""
        return self._client

    async def send(self, paths: Sequence[str]) -> None:
        reference = caller_reference()
        batch = {"Paths": {"Quantity": len(paths), "Items": list(paths)}}
        for attempt in range(1, self.attempts + 1):
            try:
                await self._client.create_invalidation(
                    DistributionId=self.distribution_id,
                    InvalidationBatch={**batch, "CallerReference": reference},
                )
                return
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                reason = f"{code}: {exc.response.get('Error', {}).get('Message', '')}"
                if code not in RETRYABLE_CODES:
                    raise InvalidationFailed(
                        f"CloudFront refused the invalidation ({reason})"
                    ) from exc
            except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt == self.attempts:
                raise InvalidationFailed(
                    f"CloudFront invalidation failed after {attempt} attempts ({reason})"
                )
            delay = backoff_seconds(attempt, base=self.backoff, cap=SEND_BACKOFF_CAP)
            log.warning("CloudFront invalidation: %s; retrying in %.1fs", reason, delay)
            await self._sleep(delay)

    async def aclose(self) -> None:
        await self._stack.aclose()


async def open_invalidator(settings: Settings) -> Invalidator:
    """CloudFront when CDN_DISTRIBUTION_ID is set, else the no-op. Credentials come
    from botocore's chain (the task role in production)."""
    if not settings.cdn_distribution_id:
        return NoInvalidator()
    config = AioConfig(
        region_name="us-east-1",  # CloudFront is a global service
        retries={"mode": "standard", "max_attempts": 1},  # retried above, with backoff
        connect_timeout=5,
        read_timeout=30,
    )
    stack = contextlib.AsyncExitStack()
    try:
        client = await stack.enter_async_context(
            get_session().create_client(
                "cloudfront",
                region_name="us-east-1",
                endpoint_url=settings.cloudfront_endpoint_url or None,
                config=config,
            )
        )
    except BaseException:
        await stack.aclose()
        raise
    return CloudFrontInvalidator(client, stack, settings.cdn_distribution_id)


async def count_requests(
    pool: asyncpg.Pool, backend: str, outcome: str, requests: int, paths: int
) -> None:
    await pool.execute(db.q("cdn_count"), backend, outcome, requests, paths)


async def request_counts(
    conn: asyncpg.Pool | asyncpg.Connection,
) -> dict[tuple[str, str], tuple[int, int]]:
    """(backend, outcome) -> (requests, paths) sent by every process, for /metrics."""
    rows = await conn.fetch(db.q("cdn_counts"))
    return {(r["backend"], r["outcome"]): (r["requests"], r["paths"]) for r in rows}


@dataclass
class _Pending:
    due: float
    paths: set[str] = field(default_factory=set)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class Invalidations:
    """What callers ask to invalidate, coalesced per scene and sent in the
    background by one task, running in the caller's loop while anything is pending."""

    def __init__(
        self,
        invalidator: Invalidator,
        *,
        window: float,
        count: Count | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._invalidator = invalidator
        self._window = window
        self._count = count
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._last: dict[str, float] = {}  # scene -> when its last request went out
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def backend(self) -> str:
        return self._invalidator.backend

    @property
    def invalidator(self) -> Invalidator:
        return self._invalidator

    def request(self, scene_id: str, paths: Iterable[str]) -> None:
        """Invalidate `paths` of a scene soon; failures are logged, not raised."""
        self._add(scene_id, paths, None)

    async def invalidate(self, scene_id: str, paths: Iterable[str]) -> None:
        """Invalidate `paths` of a scene and wait until sent; InvalidationFailed if
        the CDN refused them. The scene's window still applies."""
        done = asyncio.get_running_loop().create_future()
        self._add(scene_id, paths, done)
        await done

    def _add(
        self, scene_id: str, paths: Iterable[str], waiter: asyncio.Future[None] | None
    ) -> None:
        pending = self._pending.get(scene_id)
        if pending is None:
            due = max(self._clock(), self._last.get(scene_id, -math.inf) + self._window)
            pending = self._pending[scene_id] = _Pending(due)
        pending.paths.update(paths)
        if waiter is not None:
            pending.waiters.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="cdn invalidations")
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            if self._closing:
                if self._pending:
                    await self._flush(list(self._pending))
                return
            if not self._pending:
                return  # idle: `_add` starts the next task, none outlives its work
            now = self._clock()
            due = min(p.due for p in self._pending.values())
            if due > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due - now)
                continue
            await self._flush([s for s, p in self._pending.items() if p.due <= now])

    async def _flush(self, scenes: Sequence[str]) -> None:
        now = self._clock()
        batch = [self._pending.pop(s) for s in scenes]
        for scene in scenes:
            self._last[scene] = now
        for scene, sent in list(self._last.items()):  # forget windows that are over
            if sent + self._window < now and scene not in self._pending:
                del self._last[scene]
        error: BaseException | None = InvalidationFailed("stopped before it was sent")
        try:
            await self._send(set().union(*(p.paths for p in batch)))
            error = None
        except Exception as exc:
            error = exc
            if not any(p.waiters for p in batch):
                log.error("CDN invalidation of %s failed: %s", ", ".join(scenes), exc)
        finally:
            self._settle(batch, error)

    @staticmethod
    def _settle(batch: Sequence[_Pending], error: BaseException | None) -> None:
        for pending in batch:
            for waiter in pending.waiters:
                if waiter.done():
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    async def _send(self, paths: Iterable[str]) -> None:
        backend = self._invalidator.backend
        for request in plan(paths):
            try:
                await self._invalidator.send(request)
            except Exception:
                await self._counted(backend, "failed", len(request))
                raise
            await self._counted(backend, "sent" if backend != "none" else "skipped", len(request))

    async def _counted(self, backend: str, outcome: str, paths: int) -> None:
        if self._count is None:
            return
        try:
            await self._count(backend, outcome, 1, paths)
        except Exception as exc:  # counting must never stop an invalidation
            log.warning("CDN invalidation not counted: %s", exc)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Send what is pending now (windows or not) within `timeout` seconds, then
        close the invalidator; what could not be sent is logged."""
        self._closing = True
        self._wake.set()
        try:
            if (self._task is None or self._task.done()) and self._pending:
                self._task = asyncio.create_task(self._run(), name="cdn invalidations")
            if self._task is not None:
                try:
                    await asyncio.wait_for(self._task, timeout)
                except TimeoutError:
                    log.error("CDN invalidations still unsent after %.0fs at shutdown", timeout)
            left = list(self._pending.values())
            self._pending.clear()
            self._settle(left, InvalidationFailed("shutting down"))
        finally:
            await self._invalidator.aclose()


async def open_invalidations(settings: Settings, pool: asyncpg.Pool | None) -> Invalidations:
    """The process's invalidations: its invalidator, coalesced over
    CDN_INVALIDATION_WINDOW, counted through `pool` (None: not counted)."""
    invalidator = await open_invalidator(settings)
    count: Count | None = None
    if pool is not None:

        async def count(backend: str, outcome: str, requests: int, paths: int) -> None:
            await count_requests(pool, backend, outcome, requests, paths)

    return Invalidations(invalidator, window=settings.cdn_invalidation_window, count=count)
