"""Waking an idle worker when work is queued (DESIGN.md "Jobs": LISTEN/NOTIFY, polling
the fallback).

`listen_for_jobs` follows `core.queue.NOTIFY_CHANNEL` through `core.listen.follow` on
one connection of the worker's pool and sets an event whenever a job of the worker's
kinds becomes due, and each time it (re)starts listening (what was queued meanwhile
is claimable now); the job loop waits on that event or its poll interval, whichever
comes first (`core.listen.wait_any`). While the connection is lost the loop only
polls.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg

from core import listen, queue


async def listen_for_jobs(
    pool: asyncpg.Pool,
    kinds: frozenset[str],
    due: asyncio.Event,
    stop: asyncio.Event,
    *,
    name: str,
    rng: random.Random | None = None,
) -> None:
    """Until `stop`: set `due` for each job of `kinds` that becomes due, and whenever
    the listening connection is (re)opened."""

    def on_due(kind: str) -> None:
        if kind in kinds:
            due.set()

    await listen.follow(
        pool.acquire,
        queue.NOTIFY_CHANNEL,
        on_due,
        stop,
        on_connect=due.set,
        what=f"worker {name}: new jobs (polling meanwhile)",
        rng=rng,
        log_extra={"worker": name},
    )
