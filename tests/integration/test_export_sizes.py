"""Exports of scenes whose clips lack a rendition of the export's frame (issue 26's
per-title ladder): a source smaller than the rung, a source smaller than every rung
(one rendition at its own size) and a clip still in its first stage (its lowest rung
alone). The export reads the rendition the stitched variant plays and re-encodes it
into the rung's frame, scaled to fit and padded; every other segment is copied as
before. End to end on real PostgreSQL, LocalStorage and ffmpeg: the job succeeds, every
frame of the MP4 is the rung's size, it lasts its range within one frame, decode
timestamps increase, the first and last frames are the renditions' (fitted into the
frame), for whole scenes and for moments across such clips."""

from __future__ import annotations

from typing import Any

import pytest

from core import db
from core.settings import Settings
from origin import keys
from tests.helpers.browser import CHROMIUM, Browser
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_PAIR
from tests.helpers.exports import distinct_parameter_sets, publish_copy, scene_of_copies
from tests.helpers.moments import (
    SSIM_FLOOR,
    check_moment,
    matches,
    module_settings,
    plays_to_end,
    scene_grid,
    transcoded_pool,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]

BOXES = {r.name: (r.width, r.height) for r in SMALL_PAIR}  # 180p 320x180, 360p 640x360
#: BIG fills both rungs; SMALL is smaller than every rung (one rendition, 160x120,
#: filed under 180p); MID (4:3) fills 180p only (320x180, pillarboxed), without audio.
BIG, SMALL, MID = 0, 1, 2
POOL: list[dict[str, Any]] = [
    dict(size=(640, 360), fps=24, duration=5.0, audio="stereo48"),  # 4 s + 1 s
    dict(size=(160, 120), fps=30, duration=5.0, audio="mono44"),  # 4 s + 1 s
    dict(size=(320, 240), fps=25, duration=3.0, audio=None),
]


@pytest.fixture(scope="module")
def env(module_db, tmp_path_factory) -> Settings:
    return module_settings(module_db, tmp_path_factory.mktemp("export-sizes-storage"), SMALL_PAIR)


@pytest.fixture(scope="module")
async def stack(env, tmp_path_factory):
    """The origin, two workers and the clips of POOL, transcoded (`transcoded_pool`)."""
    async with transcoded_pool(env, tmp_path_factory.mktemp("export-sizes-clips"), POOL) as stack:
        yield stack


async def scene_of(env: Settings, stack: dict, indexes: list[int]) -> tuple[str, list[str]]:
    sources = [stack["segments"][i] for i in indexes]
    return await scene_of_copies(env, stack["scene"], sources, stack["user"])


async def ask(client, scene: str, quality: str, **moment: float) -> dict:
    r = await client.post(
        f"/api/v1/scenes/{scene}/export",
        json={"quality": quality, **moment},
        headers=client.headers_auth,
    )
    body = await r.json()
    assert r.status == 202, body
    return body


async def parts(client, done: dict) -> list[tuple[str, str, Any, Any]]:
    """(segment, mode, frames, scaledFrom) of each part, from the export's manifest."""
    r = await client.get(done["url"].rsplit("/", 1)[0] + "/export_manifest.json")
    return [
        (p["segmentId"], p["mode"], p.get("frames"), p.get("scaledFrom"))
        for p in (await r.json())["parts"]
    ]


async def test_whole_scene_fits_every_clip_into_the_rungs_frame(env, stack, tmp_path):
    """A scene of a clip that fills both rungs, one smaller than every rung, one that
    fills the lower rung only and a clip still in its first stage (a copy of the big
    one with its lowest rung alone), exported at each rung."""
    client = stack["client"]
    scene, (big, small, mid) = await scene_of(env, stack, [BIG, SMALL, MID])
    pool = await db.connect_pool(env.database_url, size=1)
    try:
        async with pool.acquire() as conn:
            first_stage = await publish_copy(
                env,
                client.server.app[keys.STORAGE],
                conn,
                stack["scene"],
                stack["segments"][BIG],
                scene,
                stack["user"],
                profiles=("180p",),
            )
    finally:
        await pool.close()
    segs = [big, small, mid, first_stage]
    # a quality the scene's stitched master does not offer is still refused
    r = await client.post(
        f"/api/v1/scenes/{scene}/export", json={"quality": "720p"}, headers=client.headers_auth
    )
    assert r.status == 400 and "180p, 360p" in (await r.json())["error"]["message"]

    throughput = "SELECT speed FROM export_throughput WHERE kind = 'full'"
    measured = await client.server.app[keys.POOL].fetchval(throughput)
    mp4s = {}
    for quality, scaled in (
        ("360p", {small: [160, 120], mid: [320, 180], first_stage: [320, 180]}),
        ("180p", {small: [160, 120]}),
    ):
        grid = await scene_grid(env, scene, segs, quality)
        work = tmp_path / quality
        work.mkdir()
        facts = await check_moment(
            client, grid, await ask(client, scene, quality), work, BOXES[quality]
        )
        assert facts["done"]["duration"] == pytest.approx(5.0 + 5.0 + 3.0 + 5.0, abs=0.05)
        # the clips of the rung's frame are copied (a run of segments per clip); the
        # others re-encoded segment by segment (MID has one) from the rendition their
        # stitched variant plays
        got = await parts(client, facts["done"])
        expected = []
        for s in segs:
            if s not in scaled:
                expected.append((s, "copy", None, None))
            else:
                expected += [(s, "reencode", None, scaled[s])] * (1 if s == mid else 2)
        assert got == expected
        assert distinct_parameter_sets(facts["mp4"]) == (1, 1)
        # SMALL's first frame, the first of a segment re-encoded whole, is its
        # rendition's fitted into the frame (scaled whole, padded, not cropped)
        scores = matches(grid, facts["mp4"], grid[0].frames, 1, 0, work, BOXES[quality])
        assert max(scores, key=lambda key: scores[key]) == (1, 0), scores
        assert scores[(1, 0)] > SSIM_FLOOR, scores
        mp4s[quality] = str(client.make_url(facts["done"]["url"]))
    # exports that re-encoded clips into their frame leave the throughput that
    # estimates the copying ones as it was
    assert await client.server.app[keys.POOL].fetchval(throughput) == measured
    if CHROMIUM is not None:  # one frame size, one set of parameter sets: it plays
        async with Browser() as browser:
            for url in mp4s.values():
                page = str(client.make_url("/healthz"))
                await plays_to_end(browser, page, url, 18.0)


async def test_moments_across_a_small_source_clip(env, stack, tmp_path):
    """Moments whose ends cut into clips of other frames than the export's, and that
    cross such a clip whole: cuts re-encoded into the frame, whole segments too."""
    client = stack["client"]
    scene, (big, small, mid) = await scene_of(env, stack, [BIG, SMALL, MID])
    grid = await scene_grid(env, scene, [big, small, mid], "360p")
    box = BOXES["360p"]
    # from the middle of BIG into SMALL's second segment: BIG's cut, its copied
    # second segment, SMALL's first segment re-encoded whole and its second cut
    first = await ask(client, scene, "360p", start=2.5, end=5.0 + 4.5)
    # from inside SMALL's first segment across the rest of it into MID
    second = await ask(client, scene, "360p", start=5.0 + 1.0, end=10.0 + 1.6)
    for name, asked in (("first", first), ("second", second)):
        work = tmp_path / name
        work.mkdir()
        facts = await check_moment(client, grid, asked, work, box)
        got = await parts(client, facts["done"])
        if name == "first":
            assert got == [
                (big, "reencode", [60, 96], None),
                (big, "copy", None, None),
                (small, "reencode", None, [160, 120]),
                (small, "reencode", [0, 15], [160, 120]),
            ]
        else:
            assert got == [
                (small, "reencode", [30, 120], [160, 120]),
                (small, "reencode", None, [160, 120]),
                (mid, "reencode", [0, 40], [320, 180]),
            ]
