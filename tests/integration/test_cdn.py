"""CDN invalidation against moto's CloudFront server over HTTP: requests for one scene
are coalesced to one invalidation per window, other scenes are not held back, one
request never carries more paths than CloudFront allows, a refusal fails at once and
is counted, and the counts reach /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from core import cdn, db
from core.invalidation import MAX_FILE_PATHS, stale
from tests.helpers.cdn import create_distribution, invalidated_paths


@pytest.fixture
async def cf_settings(settings, moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return dataclasses.replace(
        settings,
        cdn_distribution_id=await create_distribution(moto_endpoint),
        cloudfront_endpoint_url=moto_endpoint,
        cdn_invalidation_window=1.0,
    )


@pytest.fixture
async def pool(settings):
    p = await db.connect_pool(settings.database_url, size=2)
    yield p
    await p.close()


async def test_requests_are_coalesced_per_scene_within_the_window(cf_settings, pool):
    s = cf_settings
    invalidations = await cdn.open_invalidations(s, pool)
    try:
        before = await cdn.request_counts(pool)
        started = time.monotonic()
        a = "/v/scn_aaaaaaaaaaaa/"
        first = asyncio.create_task(invalidations.invalidate("scn_a", stale([a + "master.m3u8"])))
        await first
        quick = time.monotonic() - started
        later = [
            asyncio.create_task(invalidations.invalidate("scn_a", stale([a + n])))
            for n in ("720p.m3u8", "1080p.m3u8", "720p.m3u8")
        ]
        await asyncio.sleep(0.1)
        await invalidations.invalidate("scn_b", stale(["/v/scn_bbbbbbbbbbbb/master.m3u8"]))
        other = time.monotonic() - started
        await asyncio.gather(*later)
        coalesced = time.monotonic() - started
    finally:
        await invalidations.aclose()
    received = await invalidated_paths(s.cloudfront_endpoint_url, s.cdn_distribution_id)
    assert received == [
        [a + "master.m3u8"],
        ["/v/scn_bbbbbbbbbbbb/master.m3u8"],  # another scene is not held back
        [a + "1080p.m3u8", a + "720p.m3u8"],  # one request for the rest of the window
    ]
    assert quick < 0.9 and other < 0.9 and coalesced >= 1.0, (quick, other, coalesced)
    after = await cdn.request_counts(pool)
    sent = after[("cloudfront", "sent")]
    was = before.get(("cloudfront", "sent"), (0, 0))
    assert (sent[0] - was[0], sent[1] - was[1]) == (3, 4)


async def test_a_large_invalidation_is_cut_into_requests_cloudfront_accepts(cf_settings, pool):
    s = dataclasses.replace(cf_settings, cdn_invalidation_window=0.0)
    invalidations = await cdn.open_invalidations(s, pool)
    paths = [f"/v/scn_cccccccccccc/f{i:05d}.ts" for i in range(MAX_FILE_PATHS + 100)]
    try:
        await invalidations.invalidate("scn_c", stale(paths + ["/v/scn_cccccccccccc/seg_x/*"]))
    finally:
        await invalidations.aclose()
    received = await invalidated_paths(s.cloudfront_endpoint_url, s.cdn_distribution_id)
    assert [len(r) for r in received] == [MAX_FILE_PATHS + 1, 100]
    assert sorted(p for r in received for p in r) == sorted([*paths, "/v/scn_cccccccccccc/seg_x/*"])


async def test_a_refused_invalidation_fails_at_once_and_is_counted(cf_settings, pool):
    s = dataclasses.replace(
        cf_settings, cdn_distribution_id="NOSUCHDIST", cdn_invalidation_window=0
    )
    invalidations = await cdn.open_invalidations(s, pool)
    before = (await cdn.request_counts(pool)).get(("cloudfront", "failed"), (0, 0))
    started = time.monotonic()
    try:
        with pytest.raises(cdn.InvalidationFailed, match="NoSuchDistribution"):
            await invalidations.invalidate("scn_d", stale(["/v/scn_dddddddddddd/*"]))
        # fire and forget: logged, counted, never raised
        invalidations.request("scn_e", stale(["/v/scn_eeeeeeeeeeee/*"]))
    finally:
        await invalidations.aclose()
    assert time.monotonic() - started < 5  # not retried: CloudFront said no
    after = (await cdn.request_counts(pool))[("cloudfront", "failed")]
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)


async def test_nothing_keeps_running_once_everything_is_sent():
    """An `Invalidations` left unclosed (e.g. a handler's default) holds no task
    between requests: none is pending when its loop ends."""
    invalidations = cdn.Invalidations(cdn.NoInvalidator(), window=0.2)

    def running() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks() if t.get_name() == "cdn invalidations"]

    await invalidations.invalidate("scn_f", stale(["/v/scn_ffffffffffff/master.m3u8"]))
    await asyncio.sleep(0)
    assert running() == []
    started = time.monotonic()
    await invalidations.invalidate(
        "scn_f", stale(["/v/scn_ffffffffffff/720p.m3u8"])
    )  # in the window
    assert time.monotonic() - started >= 0.15
    invalidations.request("scn_g", stale(["/v/scn_gggggggggggg/*"]))
    assert running() == ["cdn invalidations"]
    for _ in range(10):
        await asyncio.sleep(0)
    assert running() == []
