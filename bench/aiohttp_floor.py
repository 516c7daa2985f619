"""Diagnostic for serve.py (``--origin-cmd``): the floor of aiohttp on this machine.

A minimal app on the event loop ``storyforge serve`` uses (asyncio's), without
middleware, logging or database: the scene playlist route answers 10,970 bytes from
memory with the origin's headers (49 discontinuity tags, so serve.py's checks pass); the
segment route sends the LocalStorage file with aiohttp's ``FileResponse`` (sendfile).

    .venv/bin/python bench/serve.py --rounds 2 --duration 10 --name serve-diag-aiohttp-floor \\
        --origin-cmd ".venv/bin/python bench/aiohttp_floor.py"
"""

import asyncio
import os
from pathlib import Path

from aiohttp import web

BODY = b"#EXT-X-DISCONTINUITY\n" * 49
BODY += b"#" * (10_970 - len(BODY))
ROOT = Path(os.environ.get("STORAGE_ROOT", ".")) / os.environ.get(
    "VIDEOS_BUCKET", "storyforge-videos"
)
HEADERS = {
    "Content-Type": "application/vnd.apple.mpegurl",
    "Cache-Control": "public, max-age=5, stale-while-revalidate=30",
    "ETag": '"scn-1"',
}


async def playlist(request: web.Request) -> web.Response:
    return web.Response(body=BODY, headers=HEADERS)


async def segment(request: web.Request) -> web.FileResponse:
    m = request.match_info
    return web.FileResponse(ROOT / m["scene"] / m["seg"] / m["file"])


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_get("/readyz", ok)
    app.router.add_get("/v/{scene}/{name}", playlist)
    app.router.add_get("/v/{scene}/{seg}/{file}", segment)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        loop=asyncio.new_event_loop(),
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
