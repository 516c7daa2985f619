"""The origin under test as `storyforge serve` runs it: aiohttp's TestServer on the
origin's own runner, so every request reaches the app through an EdgeConnection
(origin/edge.py) and warm scene documents are answered on the connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from origin.app import edge_runner
from origin.edge import WarmAnswer


class OriginTestServer(TestServer):
    def __init__(
        self,
        app: web.Application,
        *,
        warm_answer: Callable[[web.Application], WarmAnswer] | None = None,
        keepalive_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._edge_options: dict[str, Any] = {}
        if warm_answer is not None:
            self._edge_options["warm_answer"] = warm_answer
        if keepalive_timeout is not None:
            self._edge_options["keepalive_timeout"] = keepalive_timeout

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return edge_runner(self.app, **self._edge_options, **kwargs)
