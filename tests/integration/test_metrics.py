"""GET /metrics: the Prometheus text format, parsed back, with counts that follow
what the origin did: requests by route, status and who answered them, signing
outcomes, read-cache entries, and the job table read at scrape time."""

from __future__ import annotations

import dataclasses
import time

from aiohttp.test_utils import TestClient

from origin import db, queue, signing
from origin.app import create_app
from tests.helpers.metrics import requests, scrape
from tests.helpers.scenes import published_scene
from tests.helpers.servers import OriginTestServer
from tests.helpers.wire import TO_AIOHTTP, Wire, get


async def test_metrics_follow_requests_and_jobs(settings):
    async with TestClient(OriginTestServer(create_app(settings))) as client:
        scene, _ = await published_scene(client, settings)
        route = "/v/{scene_id}/{name}"
        before = await scrape(client)
        wire = await Wire.open(client)
        path = f"/v/{scene}/720p.m3u8"
        for extra in (TO_AIOHTTP, (), ()):
            wire.send(get(path, *extra))
            assert (await wire.response())[0] == 200
        wire.send(get("/no/such/route"))
        assert (await wire.response())[0] == 404
        wire.close()
        pool = await db.connect_pool(settings.database_url, size=1)
        try:
            await queue.enqueue(pool, "export", {"scene": scene}, scene_id=scene)
        finally:
            await pool.close()
        after = await scrape(client)
        by_app = 1 if settings.fast_path else 3  # the fast path answers the warm two
        assert requests(after, route, 200, "app") - requests(before, route, 200, "app") == by_app
        assert requests(after, route, 200, "fast_path") == 3 - by_app
        assert requests(after, "unmatched", 404, "app") == 1
        assert requests(after, "/metrics", 200, "app") == 1  # the first scrape
        queued = ("storyforge_jobs", (("kind", "export"), ("status", "queued")))
        assert after[queued] - before.get(queued, 0) == 1  # the database is shared
        assert after[("storyforge_jobs_scrape_ok", ())] == 1
        assert after[("storyforge_read_cache_entries", (("cache", "playlists"),))] >= 1


async def test_signing_outcomes_are_counted(settings):
    key = signing.HmacKey("k1", b"metrics-test-secret-012345")
    signed = dataclasses.replace(settings, signing="hmac", hmac_keys=(key,))
    async with TestClient(OriginTestServer(create_app(signed))) as client:
        scene, _ = await published_scene(client, signed)
        token = signing.mint_token(f"/v/{scene}/", int(time.time()) + 600, key)
        for query in (token.query, token.query, "exp=1&kid=k1&sig=" + "A" * 43, ""):
            await client.get(f"/v/{scene}/720p.m3u8?{query}")
        samples = await scrape(client)
        assert samples[("storyforge_signing_checks_total", (("outcome", "verified"),))] == 2
        assert samples[("storyforge_signing_checks_total", (("outcome", "denied"),))] == 2
        reasons = {
            labels: v
            for (name, labels), v in samples.items()
            if name == "storyforge_signing_denied_total"
        }
        assert sum(reasons.values()) == 2
