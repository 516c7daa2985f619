"""Running the origin app: the runner (`FAST_PATH=on`: the fast path's runner,
origin/http/fastpath.py; off: the plain `AppRunner` with the header timeout of
origin/http/connection.py, both with the access-log hook of origin/http/access.py)
and `serve`, which listens until SIGINT/SIGTERM and then stops gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiohttp import web

from origin import keys
from origin.http.access import access_log_class
from origin.http.connection import BoundedRunner
from origin.http.fastpath import KEEPALIVE_SECONDS, FastPathRunner
from origin.playback.warm import warm_scene_documents

log = logging.getLogger("storyforge.origin")
CUT_SECONDS = 2.0  # after the grace period: for the 503s of cut uploads to go out
LINGER_SECONDS = 2.0  # unread body bytes drained after an early answer (aiohttp: 10)


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """A runner for `app` as its settings ask (`FAST_PATH`). aiohttp's own access
    log line is replaced by ours (origin/http/access.py)."""
    options: dict[str, Any] = {
        "access_log_class": access_log_class(app),
        "access_log": log,
        "keepalive_timeout": KEEPALIVE_SECONDS,
        "lingering_time": LINGER_SECONDS,
        **kwargs,
    }
    if app[keys.SETTINGS].fast_path:
        return FastPathRunner(app, warm_scene_documents, **options)
    return BoundedRunner(app, **options)


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
