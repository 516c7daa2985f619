"""Running the origin app: `make_runner` (origin/http/connection.py's runner with the
options the settings ask for: the fast path's answers when `FAST_PATH=on`, the access
log of origin/http/access.py, the timeouts), `serve`, which listens until
SIGINT/SIGTERM and then stops gracefully, and `run`, which does so on uvloop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import uvloop
from aiohttp import web

from core import memory
from origin import keys
from origin.http.access import access_log_class
from origin.http.connection import KEEPALIVE_SECONDS, Runner
from origin.playback.warm import warm_scene_documents

log = logging.getLogger("storyforge.origin")
CUT_SECONDS = 2.0  # after the grace period: for the 503s of cut uploads to go out
# after an answer made before its request's body was read, aiohttp reads and drops
# the rest of the body this long before closing (aiohttp's `lingering_time`: 10)
UNREAD_BODY_LINGER_SECONDS = 2.0


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """A runner for `app` with the options its settings ask for (`kwargs` win): the
    fast path answers warm scene documents (origin/playback/warm.py) when
    `FAST_PATH=on`; aiohttp's own access log line is replaced by ours."""
    options: dict[str, Any] = {
        "warm_answer": warm_scene_documents if app[keys.SETTINGS].fast_path else None,
        "access_log_class": access_log_class(app),
        "access_log": log,
        "keepalive_timeout": KEEPALIVE_SECONDS,
        "lingering_time": UNREAD_BODY_LINGER_SECONDS,
        **kwargs,
    }
    return Runner(app, **options)


async def drain(runner: web.AppRunner, grace: float) -> None:
    """Stop gracefully: stop accepting connections and uploads (503), let the requests
    in flight (uploads being received, downloads being sent) finish within `grace`
    seconds, every answer meanwhile closing its connection; then cut what is left
    (a body still arriving is answered 503, drain.py), log each, and close every
    connection."""
    app = runner.app
    draining = app[keys.DRAINING]
    draining.stopping = True
    app[keys.UPLOAD_SLOTS].closed = True
    for site in list(runner.sites):
        await site.stop()  # the listening socket only; connections stay
    if draining.live:
        log.info("stopping: %d requests in flight get %g s", len(draining.live), grace)
    if not await draining.wait(grace):
        for line in draining.cut():
            log.warning("cut by shutdown after %g s: %s", grace, line)
        await draining.wait(CUT_SECONDS)
    # every answer owed has been sent or cut: idle connections and aiohttp's lingering
    # reads after early answers need not hold up the exit
    if runner.server is not None:
        for conn in list(runner.server.connections):
            conn.force_close()
    log.info("stopped")


async def serve(
    app: web.Application, host: str, port: int, *, grace: float = 30.0, reuse_port: bool = False
) -> None:
    """Serve `app` on host:port until SIGINT or SIGTERM, then stop gracefully (`drain`)
    and close resources. `reuse_port`: bind with SO_REUSEPORT (several processes, one
    port)."""
    runner = make_runner(app, shutdown_timeout=CUT_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await drain(runner, grace)
    finally:
        await runner.cleanup()


def run(
    app: web.Application, host: str, port: int, *, grace: float = 30.0, reuse_port: bool = False
) -> None:
    """`serve` on uvloop, as `storyforge serve` does: its transports, timers and loop
    are C, which is most of what a warm playlist costs beyond its bytes
    (bench/serve.py). LocalStorage files still go out with sendfile(2)
    (origin/http/objects.py; uvloop has no `loop.sendfile`)."""
    memory.fix_mmap_threshold()  # large buffers go back to the system (core/memory.py)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(app, host, port, grace=grace, reuse_port=reuse_port))
