"""Waking an idle worker when work is queued (DESIGN.md "Jobs": LISTEN/NOTIFY, polling
the fallback).

`listen_for_jobs` holds one connection of the worker's pool in `core.queue.listening`
and sets an event whenever a job of the worker's kinds is queued; the job loop waits
on that event or its poll interval, whichever comes first (`wait_any`). A connection
that is terminated, dropped, or fails its check every LISTEN_CHECK_SECONDS is opened
again after `core.backoff.backoff_seconds`; until then the loop only polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import asyncpg

from core import queue
from core.backoff import backoff_seconds
from core.queue import Conn, QueueUnavailable

log = logging.getLogger("storyforge.worker")

LISTEN_CHECK_SECONDS = 30.0  # how often an idle listening connection is checked
LISTEN_CHECK_TIMEOUT = 10.0  # ... and how long that check may take before it counts as lost
LISTEN_RETRY_BASE = 1.0  # backoff (s) for re-opening a lost listening connection: base
LISTEN_RETRY_CAP = 30.0  # ... and cap


async def wait_any(seconds: float, *events: asyncio.Event) -> None:
    """Sleep until one of `events` is set or `seconds` pass."""
    waits = {asyncio.ensure_future(e.wait()) for e in events}
    try:
        await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def listen_for_jobs(
    pool: asyncpg.Pool,
    kinds: frozenset[str],
    due: asyncio.Event,
    stop: asyncio.Event,
    *,
    name: str,
    rng: random.Random | None = None,
) -> None:
    """Hold a connection of `pool` that LISTENs for due jobs and set `due` for each
    one of `kinds`. A lost connection (terminated, dropped, failing its periodic
    check) is re-opened after `backoff_seconds`; the claim loop polls meanwhile."""
    failures = 0

    def on_due(kind: str) -> None:
        if kind in kinds:
            due.set()

    def on_listening() -> None:
        nonlocal failures
        if failures:
            log.info("worker %s: listening for new jobs again", name, extra={"worker": name})
        failures = 0
        due.set()  # whatever was queued while we were not listening is claimable now

    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                await _listen_until_lost(conn, on_due, on_listening, stop)
        except Exception as exc:  # any failure: listen again later, poll meanwhile
            failures += 1
            delay = backoff_seconds(failures, LISTEN_RETRY_BASE, LISTEN_RETRY_CAP, rng)
            log.warning(
                "worker %s: not listening for new jobs (%s); polling meanwhile, "
                "listening again in %.1fs",
                name,
                exc,
                delay,
                extra={"worker": name},
            )
            await wait_any(delay, stop)


async def _listen_until_lost(
    conn: Conn,
    on_due: Callable[[str], None],
    on_listening: Callable[[], None],
    stop: asyncio.Event,
) -> None:
    """LISTEN on `conn` and hold it until `stop` (return) or until it is lost:
    terminated, or failing its check every LISTEN_CHECK_SECONDS (QueueUnavailable)."""
    lost = asyncio.Event()

    def on_lost(_conn: object) -> None:
        lost.set()

    conn.add_termination_listener(on_lost)
    try:
        async with queue.listening(conn, on_due):
            on_listening()
            while True:
                await wait_any(LISTEN_CHECK_SECONDS, stop, lost)
                if lost.is_set():
                    raise QueueUnavailable("the listening connection was closed")
                if stop.is_set():
                    return
                try:
                    async with asyncio.timeout(LISTEN_CHECK_TIMEOUT):
                        still = await queue.is_listening(conn)
                except TimeoutError:
                    raise QueueUnavailable("the listening connection did not answer") from None
                if not still:
                    raise QueueUnavailable("the connection stopped listening")
    finally:
        # a connection cut while it listened has been detached from its pool proxy already
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.remove_termination_listener(on_lost)
