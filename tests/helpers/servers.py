"""The origin under test as `storyforge serve` runs it: aiohttp's TestServer on the
origin's own runner (origin/server.py), so every request reaches the app through a
`Connection` (origin/http/connection.py) and, with `FAST_PATH` on, warm scene
documents are answered there. Unlike aiohttp's TestServer, handlers are not
cancelled when their client goes away (neither are they in `serve`). And a clock that
skips ahead, for the origin's read caches."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from origin.http.fastpath import WarmAnswer
from origin.server import make_runner


class OriginTestServer(TestServer):
    """`warm_answer` replaces what the fast path answers (a spy, say); it implies the
    fast path whatever the settings say."""

    def __init__(
        self,
        app: web.Application,
        *,
        warm_answer: Callable[[web.Application], WarmAnswer] | None = None,
        keepalive_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._runner_options: dict[str, Any] = {}
        if warm_answer is not None:
            self._runner_options["warm_answer"] = warm_answer
        if keepalive_timeout is not None:
            self._runner_options["keepalive_timeout"] = keepalive_timeout

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        # as `storyforge serve`: a client that goes away does not cancel its handler
        kwargs.pop("handler_cancellation", None)
        return make_runner(self.app, **self._runner_options, **kwargs)


class SkippingClock:
    """time.monotonic, plus the seconds a test skipped: `create_app(settings,
    clock=...)` ages its read caches by it, so a test passes a TTL without sleeping."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def skip(self, seconds: float) -> None:
        self.skipped += seconds
