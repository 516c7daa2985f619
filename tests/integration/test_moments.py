"""Frame-accurate moments of any stitched scene (issue 24), end to end: clips of mixed
frame rates (1 to 60 fps, one frame to several segments, with and without audio)
transcoded once through the upload API and the workers, scenes of them published as
the transcoder publishes, moments asked for through the API and made by the export
job, and each MP4 checked against the stitched renditions it was cut from.

For every moment: the job succeeds; the MP4 holds exactly the frames of the range
(their count, and a duration equal to the range within one frame); its first and last
frames are the renditions' frames at the range's ends (SSIM: that frame matches best,
not the one shown before or after it); decode timestamps strictly increase; the audio
covers the video; ffmpeg decodes it without an error; a sample of them plays to
`ended` in Chromium.

`test_moments_at_every_clip_edge` is the issue's must-show: moments starting in the
last frame, the first frame and the middle of every clip of a mixed scene, each
crossing into the next clip. `test_any_moment_of_any_scene` is the property: scenes
and ranges drawn by hypothesis; `STORYFORGE_MOMENT_DRAWS` sets how many (a few in the
suite; the issue's long run is `STORYFORGE_MOMENT_DRAWS=1000`), and
`STORYFORGE_MOMENT_PLAY_EVERY` how often one is played in Chromium, and
`STORYFORGE_MOMENT_LOG` a file that gets one JSON line per draw (with pytest's
`--hypothesis-seed` for a run that can be repeated)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from core.settings import LadderRung, Settings
from tests.helpers.browser import CHROMIUM, NO_CHROMIUM_REASON, Browser
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON
from tests.helpers.exports import scene_of_copies
from tests.helpers.moments import (
    GridClip,
    check_moment,
    frame_at,
    module_settings,
    plays_to_end,
    scene_grid,
    transcoded_pool,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]

QUALITY = "180p"
LADDER = (LadderRung(QUALITY, 320, 180, 600_000, 64_000),)

#: The clips scenes are drawn from: frame rates from 1 to 60 fps (the transcoder's
#: cap), exact NTSC ones included; one frame, under a second, several segments (a 4 s
#: GOP each); with audio (stereo, mono) and without (a silent track is added).
POOL: list[dict[str, Any]] = [
    dict(fps=24, duration=2.2, audio="stereo48"),
    dict(fps=50, duration=1.3, audio="mono44"),
    dict(fps=30, duration=5.0, audio="stereo48"),  # 4 s + 1 s
    dict(fps="30000/1001", duration=0.7, audio=None),
    dict(fps=60, duration=4.5, audio="stereo48"),  # 4 s + 0.5 s
    dict(fps=1, duration=3.0, audio="stereo48"),  # three frames
    dict(fps=10, duration=0.1, audio="stereo48"),  # one frame
    dict(fps=15, duration=2.0, audio=None),
    dict(fps=25, duration=8.5, audio="stereo48"),  # 4 s + 4 s + 0.5 s
]
#: The must-show scene: 24 to 50 fps, under a second to several seconds.
EDGE_SCENE = [0, 1, 3, 2, 6, 8, 7]

DRAWS = int(os.environ.get("STORYFORGE_MOMENT_DRAWS", "4"))
PLAY_EVERY = int(os.environ.get("STORYFORGE_MOMENT_PLAY_EVERY", "4"))
LOG = os.environ.get("STORYFORGE_MOMENT_LOG")  # a file: one JSON line per draw


@pytest.fixture(scope="module")
def env(module_db, tmp_path_factory) -> Settings:
    """A database of the module's own (its workers claim only its jobs), one small rung."""
    return module_settings(module_db, tmp_path_factory.mktemp("moments-storage"), LADDER)


@pytest.fixture(scope="module")
async def stack(env, tmp_path_factory):
    """The origin (a client), two in-process workers and the pool of clips, transcoded
    through the upload API: {"client", "scene", "user", "segments", "pool"} (the
    clips' frame grid)."""
    async with transcoded_pool(env, tmp_path_factory.mktemp("moments-clips"), POOL) as stack:
        stack["pool"] = await scene_grid(env, stack["scene"], stack["segments"], QUALITY)
        yield stack


@pytest.fixture(scope="module")
async def browser():
    """One Chromium for the module, started when a test first needs it."""
    started: list[Browser] = []

    async def get() -> Browser:
        if not started:
            started.append(await Browser().__aenter__())
        return started[0]

    yield get
    for b in started:
        await b.__aexit__(None, None, None)


async def scene_of(env: Settings, stack: dict, indexes: list[int]) -> tuple[str, list[GridClip]]:
    """A new scene of the pool's clips `indexes` (copies, published as the transcoder
    publishes) and its frame grid."""
    sources = [stack["segments"][i] for i in indexes]
    scene, segs = await scene_of_copies(env, stack["scene"], sources, stack["user"])
    grid = await scene_grid(env, scene, segs, QUALITY)
    assert [(c.fps, c.segment_frames) for c in grid] == [
        (stack["pool"][i].fps, stack["pool"][i].segment_frames) for i in indexes
    ]
    return scene, grid


def laid_out(pool: list[GridClip], indexes: list[int]) -> list[GridClip]:
    """The pool's clips `indexes` one after another: a scene's timing before it exists."""
    out, offset = [], 0.0
    for i in indexes:
        out.append(dataclasses.replace(pool[i], offset=offset))
        offset += pool[i].duration
    return out


async def ask(client, scene: str, start: float, end: float) -> dict:
    r = await client.post(
        f"/api/v1/scenes/{scene}/export",
        json={"quality": QUALITY, "start": start, "end": end},
        headers=client.headers_auth,
    )
    body = await r.json()
    assert r.status == 202, body
    return body


# ------------------------------------------------------------------------ tests


async def test_moments_at_every_clip_edge(env, stack, browser, tmp_path):
    """Moments starting in the last frame, the first frame and the middle of every
    clip, each crossing into the next clip, at least a second long (the API's
    minimum): asked for together, made by two workers, every one checked."""
    client = stack["client"]
    scene, grid = await scene_of(env, stack, EDGE_SCENE)
    total = grid[-1].offset + grid[-1].duration
    asked = []
    for k, clip in enumerate(grid[:-1]):
        for where, frame in (("last", clip.frames - 1), ("first", 0), ("middle", clip.frames // 2)):
            start = clip.time(frame)
            nxt = grid[k + 1]
            end = min(max(start + 1.0, nxt.offset + nxt.duration / 2), total)
            body = await ask(client, scene, start, end)
            assert frame_at(grid, body["start"], end=False) == (k, frame), (k, where, body)
            assert frame_at(grid, body["end"], end=True)[0] > k, (k, where, body)  # crosses
            asked.append((k, where, body))
    assert len(asked) == 3 * (len(grid) - 1)
    checked = []
    for k, where, body in asked:
        work = tmp_path / f"{k}-{where}"
        work.mkdir()
        facts = await check_moment(client, grid, body, work)
        checked.append((k, where, facts["frames"]))
        if where == "last" and k == 0 and CHROMIUM is not None:
            url = str(client.make_url(facts["done"]["url"]))
            page = str(client.make_url("/healthz"))
            await plays_to_end(await browser(), page, url, facts["duration"])
    assert [(k, w) for k, w, _ in checked] == [(k, w) for k, w, _ in asked]


@st.composite
def moments_st(draw: st.DrawFn) -> tuple[list[int], str, int, float, float]:
    """A scene (pool indexes) and where a moment of it starts: `last`, `first` or
    `middle` frame of clip `k` (crossing into the next), `anywhere` or the `whole`
    scene; two fractions place it (the start, then the end within what is left)."""
    anchor = draw(st.sampled_from(["last", "first", "middle", "anywhere", "whole"]))
    edge = anchor in ("last", "first", "middle")  # needs a next clip
    clips = draw(st.lists(st.integers(0, len(POOL) - 1), min_size=2 if edge else 1, max_size=5))
    k = draw(st.integers(0, len(clips) - 1))
    a = draw(st.floats(0, 1))
    b = draw(st.floats(0, 1))
    return clips, anchor, k, a, b


def place(grid: list[GridClip], anchor: str, k: int, a: float, b: float):
    """(start, end) seconds for a drawn moment, or None when the scene has no room
    for it (under the API's one-second minimum)."""
    total = grid[-1].offset + grid[-1].duration
    if total < 1.0 + 1e-3:
        return None
    if anchor == "whole":
        return 0.0, total
    if anchor == "anywhere":
        start = a * (total - 1.0)
        return start, start + 1.0 + b * (total - 1.0 - start)
    if k >= len(grid) - 1:
        k = len(grid) - 2
    if k < 0:
        return None
    clip = grid[k]
    frame = {"last": clip.frames - 1, "first": 0, "middle": clip.frames // 2}[anchor]
    start = clip.time(frame)
    nxt = grid[k + 1]
    low = max(start + 1.0, nxt.offset + 0.75 / float(nxt.fps))  # a frame into the next clip
    if low > total:
        return None
    return start, low + b * (total - low)


PLAYED = {"draws": 0}


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON)
@settings(
    max_examples=DRAWS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=moments_st())
@example(drawn=([2, 4], "whole", 0, 0.0, 0.0))  # 30 then 60 fps: ffmpeg guesses 30
async def test_any_moment_of_any_scene(env, stack, browser, tmp_path_factory, drawn):
    clips, anchor, k, a, b = drawn
    placed = place(laid_out(stack["pool"], clips), anchor, k, a, b)
    assume(placed is not None)  # a scene under a second, or no next clip to cross into
    assert placed is not None
    began = time.monotonic()
    client = stack["client"]
    scene, grid = await scene_of(env, stack, clips)
    body = await ask(client, scene, *placed)
    work = tmp_path_factory.mktemp("draw")
    facts = await check_moment(client, grid, body, work)
    PLAYED["draws"] += 1
    played = (PLAYED["draws"] - 1) % PLAY_EVERY == 0
    if played:
        url = str(client.make_url(facts["done"]["url"]))
        await plays_to_end(
            await browser(), str(client.make_url("/healthz")), url, facts["duration"]
        )
    shutil.rmtree(work, ignore_errors=True)
    if LOG:  # one JSON line per draw, for the long run's report
        manifest_url = facts["done"]["url"].rsplit("/", 1)[0] + "/export_manifest.json"
        parts = (await (await client.get(manifest_url)).json())["parts"]
        line = {
            "clips": clips,
            "fps": [str(c.fps) for c in grid],
            "anchor": anchor,
            "start": facts["done"]["start"],
            "end": facts["done"]["end"],
            "frames": facts["frames"],
            "parts": [p["mode"] for p in parts],
            "played": played,
            "seconds": round(time.monotonic() - began, 2),
        }
        with open(LOG, "a") as f:
            f.write(json.dumps(line) + "\n")
