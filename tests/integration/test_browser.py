"""hls.js in headless Chromium plays a stitched three-clip scene made by the real
pipeline (one clip without audio, one portrait; two of them smaller than the higher
rung, so its variant plays their lower one: issue 26) across every discontinuity,
survives a forced quality switch, and plays from a seek into the third clip; and a
scene whose newest clip is still in its first stage (its lowest rung alone) switches
to the higher variant and plays through it."""

from __future__ import annotations

import dataclasses

import m3u8
import pytest

from core.settings import StagePresets
from tests.helpers.browser import CHROMIUM, NO_CHROMIUM_REASON, Browser
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_PAIR
from tests.helpers.polling import until
from tests.helpers.scenes import new_scene, upload, wait_done
from tests.helpers.workers import running_workers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON),
    pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON),
]


@pytest.fixture
def ladder():
    """Two small rungs: a quality switch to force, at little cost."""
    return SMALL_PAIR


@pytest.fixture
async def three_clip_scene(origin_client, run_workers, clips):
    client = origin_client
    scene, users = await new_scene(client, 3)
    sources = [
        clips.get(width=640, height=360, fps=30, duration=5),
        clips.get(width=320, height=180, fps=25, duration=5, audio=None),
        clips.get(width=180, height=320, fps=30, duration=5, audio="mono44"),
    ]
    segs = []
    for i, (clip, user) in enumerate(zip(sources, users, strict=True), start=1):
        segs.append((await upload(client, scene, user, clip, sequence=i))["segmentId"])
    run_workers(concurrency=2)
    for seg in segs:
        assert (await wait_done(client, seg, timeout=240))["status"] == "ready"
    return scene, segs


async def _open_player(b: Browser, client, scene: str) -> None:
    await b.goto(str(client.make_url(f"/player/{scene}")))
    await b.wait_for(
        "window.sf && sf.hls && sf.scene && sf.events.some(e => e.kind === 'manifest')",
        what="manifest parsed",
    )


async def test_hlsjs_plays_the_stitched_scene(origin_client, three_clip_scene):
    client = origin_client
    scene, segs = three_clip_scene
    # the 320x180 and the portrait clip are smaller than 360p: not upscaled into it,
    # their 180p plays in the 360p variant (hls.js changes resolution at the boundary)
    text = await (await client.get(f"/v/{scene}/360p.m3u8")).text()
    assert [u.split("/", 1)[1].split("_")[0] for u in _uris(text)][-2:] == ["180p", "180p"]
    async with Browser() as b:
        # 1. start to `ended`, crossing both discontinuities, no fatal error
        await _open_player(b, client, scene)
        assert await b.eval("sf.hls.levels.length") == 2
        await b.eval(
            "(() => { const v = document.getElementById('video'); "
            "v.playbackRate = 2; return v.play().then(() => true); })()"
        )
        await b.wait_for(
            "sf.events.some(e => e.kind === 'ended') || sf.fatal", timeout=90, what="ended"
        )
        assert await b.eval("sf.fatal") is None
        assert await b.eval("sf.ccSeen") == [0, 1, 2]
        duration = await b.eval("document.getElementById('video').duration")
        assert abs(duration - 15.0) < 0.5
        # the page named each clip's contributor as it played
        assert await b.eval("document.getElementById('who').textContent") != "…"

        # 2. a forced quality switch mid-scene keeps playing
        await _open_player(b, client, scene)
        await b.eval("document.getElementById('video').play().then(() => true)")
        await b.wait_for("document.getElementById('video').currentTime > 1.5", what="t > 1.5")
        current = await b.eval("sf.hls.currentLevel")
        target = 0 if current == 1 else 1
        await b.eval(f"(() => {{ sf.hls.currentLevel = {target}; return true; }})()")
        await b.wait_for(
            f"sf.events.some(e => e.kind === 'level' && e.level === {target})",
            what="LEVEL_SWITCHED",
        )
        t0 = await b.eval("document.getElementById('video').currentTime")
        await b.wait_for(
            f"document.getElementById('video').currentTime > {t0 + 3}",
            timeout=30,
            what="playback continues after the switch",
        )
        assert await b.eval("sf.fatal") is None
        assert await b.eval(f"sf.events.some(e => e.kind === 'frag' && e.level === {target})")

        # 3. a seek into the third clip plays from there
        await _open_player(b, client, scene)
        start3 = await b.eval("sf.scene.segments[2].startTime")
        assert start3 == pytest.approx(10.0, abs=0.2)
        await b.eval(
            f"(() => {{ const v = document.getElementById('video'); "
            f"v.currentTime = {start3 + 1.0}; return v.play().then(() => true); }})()"
        )
        await b.wait_for(
            "sf.events.some(e => e.kind === 'frag' && e.cc === 2)", what="FRAG_CHANGED cc 2"
        )
        await b.wait_for(
            f"document.getElementById('video').currentTime > {start3 + 2.0}",
            timeout=30,
            what="playing inside the third clip",
        )
        assert await b.eval("sf.fatal") is None
        who = await b.eval("document.getElementById('who').textContent")
        body = await (await client.get(f"/api/v1/scenes/{scene}/playlist")).json()
        assert who == body["segments"][2]["contributor"]["username"]


def _uris(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def _switch_and_play(b: Browser, client, scene: str, level: int) -> None:
    """Open the player, force `level`, and play through the clip boundary on it."""
    await _open_player(b, client, scene)
    await b.eval(f"(() => {{ sf.hls.currentLevel = {level}; return true; }})()")
    await b.eval(
        "(() => { const v = document.getElementById('video'); "
        "v.playbackRate = 2; return v.play().then(() => true); })()"
    )
    await b.wait_for(
        f"sf.events.some(e => e.kind === 'frag' && e.level === {level} && e.cc === 1) || sf.fatal",
        timeout=60,
        what="the second clip on the higher level",
    )
    await b.wait_for(
        "sf.events.some(e => e.kind === 'ended') || sf.fatal", timeout=60, what="ended"
    )
    assert await b.eval("sf.fatal") is None
    assert await b.eval("sf.ccSeen") == [0, 1]


async def test_a_clip_in_its_first_stage_plays_in_every_variant(origin_client, settings, clips):
    """Clip A refined (180p and 360p), clip B only published by its first stage (180p
    alone, another frame rate): the scene keeps both variants, 360p plays B's 180p
    (CODECS and RESOLUTION still cover it), and hls.js plays through the boundary on
    the higher level; B's refinement then puts its own 360p there."""
    client = origin_client
    refining = dataclasses.replace(
        settings, refine=True, refine_preset=StagePresets("veryfast"), segment_removal_grace=1.0
    )
    scene, (ua, ub) = await new_scene(client, 2)
    seg_a = (await upload(client, scene, ua, clips.get(width=640, height=360, fps=30, duration=5)))[
        "segmentId"
    ]

    async def final(seg: str) -> bool:
        status = await (await client.get(f"/api/v1/segments/{seg}")).json()
        return status.get("quality") == "final"

    async with running_workers(refining):
        await until(lambda: final(seg_a), timeout=180, what="clip A refined")
    seg_b = (
        await upload(
            client, scene, ub, clips.get(width=640, height=360, fps=25, duration=5), sequence=2
        )
    )["segmentId"]
    async with running_workers(refining, kinds=("transcode",)):
        assert (await wait_done(client, seg_b, timeout=120))["quality"] == "fast"
    master = m3u8.loads(await (await client.get(f"/v/{scene}/master.m3u8")).text())
    variants = {p.uri: p.stream_info for p in master.playlists}
    assert list(variants) == ["180p.m3u8", "360p.m3u8"]
    assert variants["360p.m3u8"].resolution == (640, 360)
    # Main 3.0 covers B's 180p (Main 1.2 at 25 fps) and A's 360p
    assert variants["360p.m3u8"].codecs == "avc1.4d401e,mp4a.40.2"
    assert variants["360p.m3u8"].frame_rate == 30.0
    high = _uris(await (await client.get(f"/v/{scene}/360p.m3u8")).text())
    assert high[0].startswith(f"{seg_a}/360p_g2_") and high[-1].startswith(f"{seg_b}/180p_0")
    async with Browser() as b:
        await _switch_and_play(b, client, scene, level=1)

    async with running_workers(refining, kinds=("refine",)):
        await until(lambda: final(seg_b), timeout=180, what="clip B refined")
    high = _uris(await (await client.get(f"/v/{scene}/360p.m3u8")).text())
    assert high[-1].startswith(f"{seg_b}/360p_g2_")
