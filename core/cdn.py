"""CDN invalidation, the I/O part: the `Invalidator` protocol with its implementations
(CloudFront's `CreateInvalidation` through aiobotocore, one client per process; a
tag purge on Varnish through HTTP, every purge endpoint alike; a no-op for the
embedded default), and `Invalidations`, which every caller goes through.

A caller says what a change made stale (`core.invalidation.Stale`: paths and cache
tags); each backend sends what it can use: CloudFront the paths, Varnish the tags
(what is gone purged hard, what is only stale purged soft, so Varnish may serve the
stale copy while it fetches the new one).

`Invalidations` coalesces per scene: a scene's changes are sent at most once per
`window` seconds (what arrives meanwhile waits and goes out together, with any other
scene's due changes, in as few requests as core/invalidation.py plans). What is gone
(a deletion) is sent at once, window or not. A tag purge of what is only stale waits
`settle` seconds after the change (the origin's read caches may answer what it
replaced until then: `invalidation.ORIGIN_RECHECK_SECONDS`). A caller may fire and
forget (`request`: failures are logged) or wait for the send (`invalidate`: failures
raise, e.g. to retry a job). Every request is counted, by backend and outcome, in
Postgres (`sql/cdn.sql`), so /metrics shows those of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import asyncpg
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from core import db
from core.backoff import backoff_seconds
from core.invalidation import (
    ORIGIN_RECHECK_SECONDS,
    RETRYABLE_CODES,
    Request,
    Stale,
    caller_reference,
    path_requests,
    tag_requests,
)
from core.settings import Settings

log = logging.getLogger("storyforge.cdn")

SEND_ATTEMPTS = 6  # per request: throttled or too many in progress, then given up
SEND_BACKOFF = 1.0  # seconds, base of the jittered exponential backoff between them
SEND_BACKOFF_CAP = 60.0
PURGE_TIMEOUT = 10.0  # seconds for one purge request to one Varnish

Count = Callable[[str, str, int, int], Awaitable[None]]  # backend, outcome, requests, items


class InvalidationFailed(Exception):
    """The CDN refused an invalidation, or kept throttling it."""


class Invalidator(Protocol):
    """Sends one invalidation request of the kind it plans (`requests`)."""

    backend: str
    by_tag: bool  # purges cache tags (else paths)

    def requests(self, change: Stale) -> list[Request]: ...

    async def send(self, request: Request) -> None: ...

    async def aclose(self) -> None: ...


class NoInvalidator:
    """No CDN in front (the embedded default): nothing to invalidate."""

    backend = "none"
    by_tag = False

    def requests(self, change: Stale) -> list[Request]:
        return path_requests(change)  # counted as skipped, as CloudFront would get them

    async def send(self, request: Request) -> None:
        return None

    async def aclose(self) -> None:
        return None


class CloudFrontInvalidator:
    """`CreateInvalidation` on one distribution through one aiobotocore client.

    Each request gets a unique CallerReference, kept across its own retries so that a
    request CloudFront did receive is not created twice. Throttling, too many
    invalidations in progress and transient failures are retried with backoff."""

    backend = "cloudfront"
    by_tag = False

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

    def requests(self, change: Stale) -> list[Request]:
        return path_requests(change)

    async def send(self, request: Request) -> None:
        paths = request.items
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


class VarnishInvalidator:
    """Tag purges on Varnish (infra/varnish/storyforge.vcl, vmod_xkey): one `PURGE`
    request per purge endpoint (every Varnish in front of the origins), its tags in
    `xkey-purge` (hard) or `xkey-softpurge` (soft: the stale copy kept for grace).
    An endpoint that cannot be reached, times out or answers 5xx/429 is retried with
    backoff; any other answer but 200 (the purge ACL's 403, say) fails at once."""

    backend = "varnish"
    by_tag = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Sequence[str],
        *,
        attempts: int = SEND_ATTEMPTS,
        backoff: float = SEND_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session = session
        self.endpoints = tuple(endpoints)
        self.attempts = attempts
        self.backoff = backoff
        self._sleep = sleep

    def requests(self, change: Stale) -> list[Request]:
        return tag_requests(change)

    async def send(self, request: Request) -> None:
        header = "xkey-softpurge" if request.soft else "xkey-purge"
        value = " ".join(request.items)
        results = await asyncio.gather(
            *(self._purge(url, header, value) for url in self.endpoints), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _purge(self, url: str, header: str, value: str) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.request("PURGE", url, headers={header: value}) as r:
                    await r.read()
                    if r.status == 200:
                        return
                    reason = f"HTTP {r.status} {r.reason or ''}".strip()
                    if r.status != 429 and r.status < 500:
                        raise InvalidationFailed(f"Varnish at {url} refused the purge ({reason})")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt == self.attempts:
                raise InvalidationFailed(
                    f"purge on Varnish at {url} failed after {attempt} attempts ({reason})"
                )
            delay = backoff_seconds(attempt, base=self.backoff, cap=SEND_BACKOFF_CAP)
            log.warning("purge on Varnish at %s: %s; retrying in %.1fs", url, reason, delay)
            await self._sleep(delay)

    async def aclose(self) -> None:
        await self._session.close()


async def open_invalidator(settings: Settings) -> Invalidator:
    """Varnish with CDN=varnish (CDN_PURGE_URLS); CloudFront when CDN_DISTRIBUTION_ID
    is set (CDN=cloudfront or unset); else the no-op. CloudFront credentials come
    from botocore's chain (the task role in production)."""
    backend = settings.cdn_backend
    if backend == "varnish":
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PURGE_TIMEOUT))
        return VarnishInvalidator(session, settings.cdn_purge_urls)
    if backend != "cloudfront":
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
    pool: asyncpg.Pool, backend: str, outcome: str, requests: int, items: int
) -> None:
    await pool.execute(db.q("cdn_count"), backend, outcome, requests, items)


async def request_counts(
    conn: asyncpg.Pool | asyncpg.Connection,
) -> dict[tuple[str, str], tuple[int, int]]:
    """(backend, outcome) -> (requests, items: paths or tags) sent by every process,
    for /metrics."""
    rows = await conn.fetch(db.q("cdn_counts"))
    return {(r["backend"], r["outcome"]): (r["requests"], r["paths"]) for r in rows}


@dataclass
class _Pending:
    due: float
    change: Stale = field(default_factory=Stale)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class Invalidations:
    """What callers ask to invalidate, coalesced per scene and sent in the
    background by one task, running in the caller's loop while anything is pending.
    `window`: a scene's changes go out at most once per window (what is gone at once);
    `settle`: on a tag-purging backend, what is only stale waits this long after the
    change first."""

    def __init__(
        self,
        invalidator: Invalidator,
        *,
        window: float,
        settle: float = 0.0,
        count: Count | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._invalidator = invalidator
        self._window = window
        self._settle_for = settle
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

    def request(self, scene_id: str, change: Stale) -> None:
        """Invalidate what `change` made stale of a scene (or of another key that
        coalesces, e.g. an asset's) soon; failures are logged, not raised."""
        self._add(scene_id, change, None)

    async def invalidate(self, scene_id: str, change: Stale) -> None:
        """Invalidate what `change` made stale of a scene and wait until sent;
        InvalidationFailed if the CDN refused it. The scene's window still applies
        (but to nothing gone)."""
        done = asyncio.get_running_loop().create_future()
        self._add(scene_id, change, done)
        await done

    def _add(self, scene_id: str, change: Stale, waiter: asyncio.Future[None] | None) -> None:
        now = self._clock()
        pending = self._pending.get(scene_id)
        if pending is None:
            settled = now + (self._settle_for if self._invalidator.by_tag else 0.0)
            due = max(settled, self._last.get(scene_id, -math.inf) + self._window)
            pending = self._pending[scene_id] = _Pending(due)
        if change.gone:  # what must not be served any more waits for nothing
            pending.due = min(pending.due, now)
        pending.change = pending.change | change
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
            change = Stale()
            for pending in batch:
                change = change | pending.change
            await self._send(change)
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

    async def _send(self, change: Stale) -> None:
        backend = self._invalidator.backend
        for request in self._invalidator.requests(change):
            items = len(request.items)
            try:
                await self._invalidator.send(request)
            except Exception:
                await self._counted(backend, "failed", items)
                raise
            await self._counted(backend, "sent" if backend != "none" else "skipped", items)

    async def _counted(self, backend: str, outcome: str, items: int) -> None:
        if self._count is None:
            return
        try:
            await self._count(backend, outcome, 1, items)
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

        async def count(backend: str, outcome: str, requests: int, items: int) -> None:
            await count_requests(pool, backend, outcome, requests, items)

    return Invalidations(
        invalidator,
        window=settings.cdn_invalidation_window,
        settle=ORIGIN_RECHECK_SECONDS,
        count=count,
    )


async def open_tag_purges(settings: Settings, pool: asyncpg.Pool | None) -> Invalidations | None:
    """What the origin itself purges (a deleted scene at once, a changed asset) when
    the CDN purges by tag; None otherwise (path invalidations are the workers')."""
    if settings.cdn_backend != "varnish":
        return None
    return await open_invalidations(settings, pool)
