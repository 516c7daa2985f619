"""What a stopping process still owes: the requests it is answering (from the first
middleware to the last byte of the answer, so a download being sent counts), and
whether it is stopping. origin/server.py waits for them within the grace period and
then cuts the rest: a body still being read ends with 503 (body.py `cut`), an answer
still being sent ends with the connection."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from origin.http.body import cut


class Draining:
    def __init__(self) -> None:
        self.live: dict[int, web.BaseRequest] = {}
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self, request: web.BaseRequest) -> None:
        self.live[id(request)] = request
        self._idle.clear()

    def end(self, request: web.BaseRequest) -> None:
        self.live.pop(id(request), None)
        if not self.live:
            self._idle.set()

    async def wait(self, seconds: float) -> bool:
        """Whether every request in flight was answered within `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        return not self.live

    def cut(self) -> list[str]:
        """End what is still in flight: each request whose body is still arriving gets
        ShuttingDown from its next read (its handler answers 503); the others are
        being answered and end with their connection. One line per request, to log."""
        lines = []
        for request in list(self.live.values()):
            if cut(request):
                what = "body still arriving: answered 503"
            else:
                what = "answer not finished: connection closed"
            lines.append(f"{request.method} {request.path} ({what})")
        return lines
