"""A webhook receiver for the tests: an aiohttp app on loopback that verifies every
delivery with the `standardwebhooks` package, can be told to fail attempts, and keeps
what it saw (attempts in order, events processed once by id)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Attempt:
    id: str
    type: str
    status: int
    verified: bool


@dataclass
class Receiver:
    secret: str = SECRET
    # (event id, attempt number for that id) -> status to answer, 200 by default
    answer: Callable[[str, int], int] = lambda _id, _n: 200
    attempts: list[Attempt] = field(default_factory=list)
    processed: dict[str, dict] = field(default_factory=dict)  # id -> payload, once
    processed_order: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            payload, verified = {}, False
        event_id = request.headers.get("webhook-id", "")
        n = sum(1 for a in self.attempts if a.id == event_id) + 1
        status = self.answer(event_id, n) if verified else 401
        self.attempts.append(Attempt(event_id, payload.get("type", ""), status, verified))
        if status == 200 and event_id not in self.processed:
            self.processed[event_id] = payload
            self.processed_order.append(event_id)
        return web.Response(status=status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app
