"""Postgres LISTEN/NOTIFY for every process, one way: `follow` holds a connection of
its own that LISTENs on one channel, calls `on_notify(payload)` for each notification
(delivered when the notifying transaction commits, never for a rollback), and
`on_connect()` each time it (re)starts listening, so the caller can resync what it
may have missed meanwhile. A connection that is terminated, dropped, or fails its
check every CHECK_SECONDS (alive and still listening, `sql/listen.sql`) is opened
again after `core.backoff.backoff_seconds`; the callers have their own fallback
until then (the worker polls, the origin's caches expire).

The channels: `CHANNEL` (scene changes: a deletion or a clip removal, payload the
scene id, sent by core/lifecycle.py; every origin process forgets the scene in its
read caches) and `core.queue.NOTIFY_CHANNEL` (a job became due, payload its kind;
idle workers claim at once, workers/runtime/wakeup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from core import db
from core.backoff import backoff_seconds

log = logging.getLogger("storyforge.listen")

CHANNEL = "storyforge_scenes"  # payload: the id of a scene that changed
CHECK_SECONDS = 30.0  # an idle listening connection is checked this often
CHECK_TIMEOUT = 10.0  # ... and counts as lost when the check takes longer
RETRY_BASE, RETRY_CAP = 0.5, 30.0  # backoff (s) for re-opening a lost connection
CONNECT_TIMEOUT = 10.0

#: Opens the connection to listen on and gives it back (or closes it) at the end:
#: `pool.acquire` (a worker's pool) or `connection(dsn)` (one of its own).
Opener = Callable[[], AbstractAsyncContextManager[Any]]


class ListenLost(Exception):
    """The listening connection was closed, stopped listening or did not answer."""


async def wait_any(seconds: float, *events: asyncio.Event) -> None:
    """Sleep until one of `events` is set or `seconds` pass."""
    waits = {asyncio.ensure_future(e.wait()) for e in events}
    try:
        await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own (outside any pool), closed on the way out."""
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=5)


@asynccontextmanager
async def listening(
    conn: Any, channel: str, on_notify: Callable[[str], None]
) -> AsyncIterator[None]:
    """LISTEN on `channel` while the block runs: `on_notify(payload)` is called (in the
    event loop) for each notification. `conn` must be a connection of its own (not a
    pool) that stays idle meanwhile: notifications arrive between statements.
    UNLISTENs on the way out (unless the connection is gone), so a pooled connection
    goes back clean (core/db.py resets nothing on release)."""
    if isinstance(conn, asyncpg.Pool):
        raise TypeError("listening needs a connection of its own, not a pool")

    def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        on_notify(payload)

    await conn.add_listener(channel, notified)
    try:
        yield
    finally:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.remove_listener(channel, notified)


async def is_listening(conn: Any, channel: str) -> bool:
    """On a connection in `listening`: is it alive and still listening on `channel`?
    (A connection dropped without a word is found by asking.)"""
    return bool(await conn.fetchval(db.q("listen_check"), channel, timeout=CHECK_TIMEOUT))


async def follow(
    open_conn: Opener,
    channel: str,
    on_notify: Callable[[str], None],
    stop: asyncio.Event,
    *,
    on_connect: Callable[[], None] = lambda: None,
    what: str,
    rng: random.Random | None = None,
    log_extra: Mapping[str, object] | None = None,
) -> None:
    """Listen on `channel` until `stop` (see the module docstring). `what` names the
    follower in its log lines ("worker w1: new jobs")."""
    failures = 0
    extra = dict(log_extra or {})

    def connected() -> None:
        nonlocal failures
        if failures:
            log.info("%s: listening again", what, extra=extra)
        failures = 0
        on_connect()

    while not stop.is_set():
        try:
            async with open_conn() as conn:
                await _hold(conn, channel, on_notify, connected, stop)
        except Exception as exc:  # any failure: listen again later, the fallback meanwhile
            failures += 1
            delay = backoff_seconds(failures, RETRY_BASE, RETRY_CAP, rng)
            log.warning(
                "%s: not listening (%s); listening again in %.1fs", what, exc, delay, extra=extra
            )
            await wait_any(delay, stop)


async def _hold(
    conn: Any,
    channel: str,
    on_notify: Callable[[str], None],
    connected: Callable[[], None],
    stop: asyncio.Event,
) -> None:
    """LISTEN on `conn` and hold it until `stop` (return) or until it is lost
    (ListenLost): terminated, or failing its check every CHECK_SECONDS."""
    lost = asyncio.Event()

    def on_lost(_conn: object) -> None:
        lost.set()

    conn.add_termination_listener(on_lost)
    try:
        async with listening(conn, channel, on_notify):
            connected()
            while True:
                await wait_any(CHECK_SECONDS, stop, lost)
                if lost.is_set():
                    raise ListenLost("the listening connection was closed")
                if stop.is_set():
                    return
                try:
                    still = await is_listening(conn, channel)
                except TimeoutError:
                    raise ListenLost("the listening connection did not answer") from None
                if not still:
                    raise ListenLost("the connection stopped listening")
    finally:
        # a connection cut while it listened has been detached from its pool proxy already
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.remove_termination_listener(on_lost)
