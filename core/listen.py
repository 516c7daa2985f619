"""Scene changes between processes. A scene deletion or a clip removal commits with a
Postgres NOTIFY on `CHANNEL` (payload: the scene id; sent by core/lifecycle.py in
the changing transaction, so it is delivered exactly when that commits). Every origin
process follows the channel on a connection of its own and forgets the scene in its
read caches at once, so the fast path and the handlers stop answering for it within
milliseconds; the caches' 1 s TTLs are the fallback.

A lost connection is re-opened with backoff; each time it is (re)opened the caches
forget every scene's version and readiness, since notifications may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from core.backoff import backoff_seconds

log = logging.getLogger("storyforge.changes")

CHANNEL = "storyforge_scenes"
CHECK_SECONDS = 30.0  # an idle listening connection is checked this often
RETRY_BASE, RETRY_CAP = 0.5, 30.0  # backoff (s) for re-opening a lost connection

OnChange = Callable[[str | None], None]  # a scene id, or None: any scene may have changed


async def follow(dsn: str, on_change: OnChange, stop: asyncio.Event) -> None:
    """Call `on_change(scene_id)` for each notified scene change until `stop`."""
    failures = 0
    while not stop.is_set():
        try:
            await _listen(dsn, on_change, stop)
            failures = 0
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            failures += 1
            delay = backoff_seconds(failures, RETRY_BASE, RETRY_CAP)
            log.warning("not following scene changes (%s); again in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


async def _listen(dsn: str, on_change: OnChange, stop: asyncio.Event) -> None:
    """Follow the channel on one connection until `stop` (return) or until the
    connection is lost (raise)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    try:
        await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: on_change(payload))
        on_change(None)
        while True:
            waits = {asyncio.ensure_future(e.wait()) for e in (stop, lost)}
            try:
                await asyncio.wait(waits, timeout=CHECK_SECONDS, return_when="FIRST_COMPLETED")
            finally:
                for w in waits:
                    w.cancel()
            if stop.is_set():
                return
            if lost.is_set():
                raise OSError("the listening connection was closed")
            await conn.fetchval("SELECT 1", timeout=10)
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)
