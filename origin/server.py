"""Running the origin app: the runner (`FAST_PATH=on`: the fast path's runner,
origin/fastpath/; off: aiohttp's plain `AppRunner`, both with the access-log hook of
origin/http/access.py) and `serve`, which listens until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiohttp import web

from origin import keys
from origin.fastpath import FastPathRunner
from origin.fastpath.scenes import warm_scene_documents
from origin.http.access import access_log_class

log = logging.getLogger("storyforge.origin")


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """A runner for `app` as its settings ask (`FAST_PATH`). aiohttp's own access
    log line is replaced by ours (origin/http/access.py)."""
    options: dict[str, Any] = {
        "access_log_class": access_log_class(app),
        "access_log": log,
        **kwargs,
    }
    if app[keys.SETTINGS].fast_path:
        return FastPathRunner(app, warm_scene_documents, **options)
    return web.AppRunner(app, **options)


async def serve(
    app: web.Application, host: str, port: int, *, grace: float = 30.0, reuse_port: bool = False
) -> None:
    """Serve `app` on host:port until SIGINT or SIGTERM, then shut down gracefully:
    stop accepting, let answers in progress finish within `grace` seconds, then
    close resources. `reuse_port`: bind with SO_REUSEPORT (several processes, one port)."""
    runner = make_runner(app, shutdown_timeout=grace)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
