"""GET /metrics: the Prometheus text format, parsed back, with counts that follow
what the origin did: requests by route, status and who answered them, signing
outcomes, read-cache entries, and the job table read at scrape time."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
from aiohttp.test_utils import TestClient

from core import db, queue, signing
from origin.app import create_app
from tests.helpers.metrics import requests, scrape
from tests.helpers.scenes import published_scene
from tests.helpers.servers import OriginTestServer
from tests.helpers.wire import TO_AIOHTTP, Wire, get

# every test counts answers the fast path gives when it is on
pytestmark = pytest.mark.both_paths


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


async def test_latency_bytes_caches_and_job_depth(settings):
    async with TestClient(OriginTestServer(create_app(settings))) as client:
        scene, _ = await published_scene(client, settings)
        path = f"/v/{scene}/720p.m3u8"
        wire = await Wire.open(client)
        sizes = []
        for extra in (TO_AIOHTTP, (), ()):  # cold (app), then warm (fast path if on)
            wire.send(get(path, *extra))
            status, _, body = await wire.response()
            assert status == 200
            sizes.append(len(body))
        wire.close()
        pool = await db.connect_pool(settings.database_url, size=1)
        try:
            async with pool.acquire() as conn:
                await conn.execute("UPDATE jobs SET status = 'failed' WHERE status = 'queued'")
            await queue.enqueue(pool, "export", {"scene": scene}, scene_id=scene)
            async with pool.acquire() as conn:  # due for a minute already
                await conn.execute(
                    "UPDATE jobs SET run_after = now() - interval '60 seconds' "
                    "WHERE status = 'queued'"
                )
        finally:
            await pool.close()
        samples = await scrape(client)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    route = "/v/{scene_id}/{name}"
    by = "fast_path" if settings.fast_path else "app"
    # every answer is in the latency histogram of whoever made it
    app_count = value(
        "storyforge_http_request_duration_seconds_count", route=route, answered_by="app"
    )
    by_count = value("storyforge_http_request_duration_seconds_count", route=route, answered_by=by)
    assert (app_count, by_count) == ((1.0, 2.0) if settings.fast_path else (3.0, 3.0))
    inf = value(
        "storyforge_http_request_duration_seconds_bucket", route=route, answered_by=by, le="+Inf"
    )
    assert inf == by_count
    assert value("storyforge_http_sent_bytes_total", answered_by=by) >= sum(sizes[1:])
    assert value("storyforge_http_in_flight_requests") == 1  # the scrape itself
    # the first request missed the playlist cache, the warm ones hit it
    assert value("storyforge_read_cache_lookups_total", cache="playlists", result="hit") >= 2
    assert value("storyforge_read_cache_lookups_total", cache="playlists", result="miss") >= 1
    # every kind and status is there, 0 when empty; the export has waited a minute
    assert ("storyforge_jobs", (("kind", "delete_scene"), ("status", "dead"))) in samples
    assert value("storyforge_jobs", kind="export", status="queued") == 1
    assert 59 <= value("storyforge_jobs_oldest_due_seconds", kind="export") < 120
    assert value("storyforge_jobs_oldest_due_seconds", kind="transcode") == 0
    assert value("process_resident_memory_bytes") > 0
    assert value("storyforge_process_info", pid=str(os.getpid())) == 1  # in-process server
