"""The `webhook` job: one outbox event delivered to one endpoint (core/outbox.py)
as a signed Standard Webhooks POST. The endpoint's name is resolved here, every
address is checked by the policy of core/webhooks.py, and the connection goes only
to the checked addresses; redirects are not followed, the timeout is
WEBHOOK_TIMEOUT. A failure is retried with `backoff_seconds` (base
WEBHOOK_BACKOFF_BASE, at most an hour apart) until the event is WEBHOOK_RETRY_SECONDS
old, then the delivery and its job are dead; a refused address is dead at once.
Either way the next event of the scene for that endpoint is queued in the same
transaction."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from core import outbox, queue, webhooks
from core.backoff import backoff_seconds
from core.settings import Settings
from workers.runtime.loop import JobContext, PermanentError, RetryAfter

log = logging.getLogger("storyforge.webhooks")
BACKOFF_CAP = 3600.0  # seconds: retries are at most an hour apart


class _Pinned(AbstractResolver):
    """Answers every lookup with the addresses already checked (no second lookup)."""

    def __init__(self, results: list[ResolveResult]) -> None:
        self._results = results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [dict(r, port=port) for r in self._results]  # type: ignore[misc]

    async def close(self) -> None:
        return None


async def _resolve(host: str, port: int, timeout: float) -> list[ResolveResult]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [
        ResolveResult(
            hostname=host,
            host=str(sockaddr[0]),
            port=port,
            family=family,
            proto=proto,
            flags=socket.AI_NUMERICHOST,
        )
        for family, _, proto, _, sockaddr in infos
    ]


async def send(
    url: str, body: str, headers: dict[str, str], *, timeout: float, allow_private: bool
) -> tuple[bool, str | None]:
    """POST one delivery. (False, reason) when refused by the address policy (never
    connected); (True, None) when delivered; (True, reason) for a failure to retry."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        results = await _resolve(parts.hostname or "", port, timeout)
    except (OSError, TimeoutError) as exc:
        return True, f"cannot resolve {parts.hostname}: {exc or type(exc).__name__}"
    refusal = webhooks.endpoint_refusal(
        url, [r["host"] for r in results], allow_private=allow_private
    )
    if refusal is not None:
        return False, refusal
    connector = aiohttp.TCPConnector(resolver=_Pinned(results), force_close=True)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as session:
            async with session.post(
                url, data=body.encode(), headers=headers, allow_redirects=False
            ) as answer:
                await answer.read()
                return True, webhooks.answer_failure(answer.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return True, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def make_handler(settings: Settings) -> Callable[[JobContext], Awaitable[None]]:
    async def handle(ctx: JobContext) -> None:
        await deliver(ctx, settings)

    return handle


async def deliver(ctx: JobContext, settings: Settings) -> None:
    delivery = await outbox.delivery_for_job(ctx.pool, ctx.job.id)
    if delivery is None:
        raise PermanentError("no webhook delivery belongs to this job")
    if delivery.status != "queued":
        return  # finished by an earlier attempt
    if not settings.webhook_secret:
        await _finish(ctx, delivery, "WEBHOOK_SECRET is not set: cannot sign the delivery")
        return
    now = datetime.now(UTC)
    headers = webhooks.signed_headers(
        settings.webhook_secret, delivery.event_id, now, delivery.payload
    )
    retry, reason = await send(
        delivery.endpoint,
        delivery.payload,
        headers,
        timeout=settings.webhook_timeout,
        allow_private=settings.webhook_allow_private,
    )
    extra: dict[str, Any] = {"sf_event": delivery.event_id, "sf_endpoint": delivery.endpoint}
    if reason is None:
        await _finish(ctx, delivery, None)
        log.info("webhook delivered", extra=extra)
        return
    delay = backoff_seconds(ctx.job.attempts, settings.webhook_backoff_base, BACKOFF_CAP)
    age = (now - delivery.created_at).total_seconds()
    if not retry or age + delay > settings.webhook_retry_seconds:
        why = reason if not retry else f"{reason}; gave up after {ctx.job.attempts} attempts"
        await _finish(ctx, delivery, why)
        log.warning("webhook dead: %s", why, extra=extra)
        return
    raise RetryAfter(reason, delay)


async def _finish(ctx: JobContext, delivery: outbox.Delivery, error: str | None) -> None:
    """One transaction fenced by the job's lease: the delivery delivered (error None)
    or dead, the next waiting delivery queued, the job succeeded or dead."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await ctx.fence(conn)
        await outbox.finish_delivery(conn, delivery, delivered=error is None)
        if error is None:
            await queue.complete(conn, ctx.job.id, ctx.lease_token)
        else:
            await queue.bury(conn, ctx.job.id, ctx.lease_token, error)
