"""Captions in hls.js (issue 27): a scene of four clips made by the real pipeline, at
four frame rates (so four first PTS values), the second without captions, played by
the player page's hls.js (the lock's, with the page's hls-vtt-fix.js) in headless
Chromium with the English subtitles track on. Every cue must land within 50 ms of
where its clip's time lies on the player's timeline (hls.js maps each discontinuity's
MPEG-TS clock by the initial PTS it takes for it; the clip's first frame's PTS is read
with ffprobe), inside its clip, and none may be lost: RUNS page loads from the start
and RUNS after a seek into the third clip, with FAST_PATH on, off, and with signing on
(the race of hls.js 1.7.4 described in the issue is timing-dependent: one green run
proves nothing, so the issue's 20 + 20 are run on request). With
STORYFORGE_CAPTION_STOCK=1 the same runs with stock hls.js (the page's fix switched
off) are measured and printed, not asserted: they lose the cues of a later clip now
and then."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from dataclasses import dataclass

import m3u8
import pytest
from aiohttp.test_utils import TestClient

from core import signing
from origin.app import create_app
from tests.helpers.browser import CHROMIUM, NO_CHROMIUM_REASON, Browser, open_player
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON
from tests.helpers.scenes import API_TOKEN, new_scene, upload, wait_done
from tests.helpers.servers import OriginTestServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON),
    pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON),
]

# page loads per setup, from the start and after a seek: a few in the suite, the issue's
# 20 on request (STORYFORGE_CAPTION_RUNS=20; STORYFORGE_CAPTION_STOCK=1 also measures
# hls.js without the page's fix, for the record)
RUNS = int(os.environ.get("STORYFORGE_CAPTION_RUNS", "3"))
MEASURE_STOCK = os.environ.get("STORYFORGE_CAPTION_STOCK") == "1"
TOLERANCE = 0.05  # seconds
SETTLE = 0.3  # seconds of unchanged cues once every WebVTT segment is processed
GIVE_UP = 2.5  # seconds of unchanged cues and segments still missing: cues lost
FRAME_RATES = (30, 25, 24, 50)
CAPTIONED = (0, 2, 3)  # the second clip has none
SEEK_INTO = 2  # the seek runs start one second into this clip
FFPROBE_VIDEO_START = [
    "ffprobe",
    "-v",
    "error",
    "-select_streams",
    "v:0",
    "-show_entries",
    "stream=start_pts",
    "-of",
    "csv=p=0",
]


@dataclass(frozen=True)
class Expected:
    clip: int
    start: float  # on the clip's own timeline
    end: float
    text: str


@dataclass(frozen=True)
class Scene:
    scene_id: str
    bounds: list[float]  # clip boundaries on the timeline: the EXTINF sums
    into_clip: dict[int, tuple[int, float]]  # media sequence number -> (clip, offset in it)
    expected: list[Expected]
    first_frames: list[float]  # each clip's first frame on its MPEG-TS clock, in seconds


def clip_cues(clip: int, duration: float) -> list[tuple[float, float, str]]:
    """A cue every 0.5 s of the clip, 0.3 s long, named after its clip and place."""
    out = []
    t = 0.1
    while t + 0.3 < duration - 0.05:
        out.append((t, t + 0.3, f"c{clip}-{len(out)}"))
        t += 0.5
    return out


def vtt(cues: list[tuple[float, float, str]]) -> bytes:
    def stamp(s: float) -> str:
        ms = round(s * 1000)
        return f"00:{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    blocks = [f"{stamp(a)} --> {stamp(b)}\n{text}" for a, b, text in cues]
    return ("WEBVTT\n\n" + "\n\n".join(blocks) + "\n").encode()


@pytest.fixture
def settings(settings):
    """One stage: the clips' URLs stay the same through every run."""
    return dataclasses.replace(settings, refine=False)


@pytest.fixture
async def captioned_scene(origin_client, settings, run_workers, clips):
    client = origin_client
    scene, users = await new_scene(client, len(FRAME_RATES))
    segs = []
    for i, fps in enumerate(FRAME_RATES):
        clip = clips.get(width=320, height=180, fps=fps, duration=4 + i % 2)
        segs.append((await upload(client, scene, users[i], clip, sequence=i + 1))["segmentId"])
    run_workers(concurrency=2)
    for seg in segs:
        assert (await wait_done(client, seg, timeout=300))["status"] == "ready"
    # where hls.js puts each clip: the EXTINF sums before each discontinuity
    playlist = m3u8.loads(await (await client.get(f"/v/{scene}/180p.m3u8")).text())
    starts, t = [0.0], 0.0
    for segment in playlist.segments:
        if segment.discontinuity:
            starts.append(t)
        t += segment.duration
    bounds = [*starts, t]
    into_clip, clip, offset = {}, -1, 0.0
    for sn, segment in enumerate(playlist.segments):
        if sn == 0 or segment.discontinuity:
            clip, offset = clip + 1, 0.0
        into_clip[sn] = (clip, offset)
        offset += segment.duration
    expected: list[Expected] = []
    for i in CAPTIONED:
        cues = clip_cues(i, bounds[i + 1] - bounds[i])
        r = await client.put(
            f"/api/v1/segments/{segs[i]}/captions/en",
            data=vtt(cues),
            headers={**client.headers_auth, "Content-Type": "text/vtt"},
        )
        assert r.status == 201, await r.text()
        expected += [Expected(i, a, b, text) for a, b, text in cues]
    first_frames = []
    for seg in segs:  # read from the media itself, not from what the origin says
        first = settings.storage_root / settings.videos_bucket / scene / seg / "180p_0001.ts"
        probe = subprocess.run(
            [*FFPROBE_VIDEO_START, str(first)], capture_output=True, text=True, check=True
        )
        first_frames.append(int(probe.stdout.split()[0]) / 90_000)
    return Scene(scene, bounds, into_clip, expected, first_frames)


COLLECT = """(() => {
  const track = Array.from(document.getElementById('video').textTracks)
    .find(t => t.kind === 'subtitles' && t.language === 'en');
  return {
    cues: track && track.cues ? Array.from(track.cues).map(c => [c.startTime, c.endTime, c.text]) : [],
    processed: sf.subs.length,
    frags: (sf.hls.levels[0] && sf.hls.levels[0].details ? sf.hls.levels[0].details.fragments : [])
      .filter(f => f.elementaryStreams.video && Number.isFinite(f.elementaryStreams.video.startPTS))
      .map(f => [f.sn, f.elementaryStreams.video.startPTS]),
    clocks: sf.hls.streamController.initPTS
      .map((v, cc) => v ? [cc, v.baseTime / v.timescale] : null).filter(Boolean),
    failed: sf.subs.filter(s => !s.ok).map(s => s.cc + ':' + s.err),
    processedSn: sf.subs.map(s => s.sn),
    subFrags: ((sf.hls.subtitleTracks[sf.hls.subtitleTrack] || {}).details || {fragments: []})
      .fragments.map(f => [f.sn, f.start + f.duration]),
  };
})()"""

SELECT = """(() => {
  sf.subs = [];
  sf.hls.on(Hls.Events.SUBTITLE_FRAG_PROCESSED, (_e, d) => sf.subs.push(
    {sn: d.frag.sn, cc: d.frag.cc, ok: d.success, err: d.error ? d.error.message : null}));
  if (%(seek)s >= 0) document.getElementById('video').currentTime = %(seek)s;
  sf.hls.subtitleDisplay = true;
  sf.hls.subtitleTrack = sf.hls.subtitleTracks.findIndex(t => t.lang === 'en');
  return sf.hls.subtitleTrack;
})()"""


@dataclass
class Tally:
    runs: int = 0
    lost: int = 0  # expected cues missing, over all runs
    runs_losing: int = 0
    misplaced: int = 0
    worst: float = 0.0
    worst_extinf: float = 0.0  # against the EXTINF sums instead
    worst_frames: float = 0.0  # against the clip's first video frame as buffered
    failures: tuple[str, ...] = ()
    offsets: dict[int, set[float]] = dataclasses.field(default_factory=dict)


def clip_clocks(scene: Scene, clocks: list[list[float]]) -> dict[int, float]:
    """Where each clip's time 0 (its first frame's PTS, as ffprobe reads it) is on the
    player's timeline: hls.js maps a clip's MPEG-TS clock onto the timeline by the
    initial PTS it takes for the clip's discontinuity (`streamController.initPTS`;
    its audio is laid out by it, and so must the clip's cues be)."""
    wrap = 2**33 / 90_000  # the 33-bit MPEG-TS clock (hls.js keeps bases modulo it)
    return {int(cc): (scene.first_frames[int(cc)] - base) % wrap for cc, base in clocks}


def clip_starts(scene: Scene, frags: list[list[float]]) -> dict[int, float]:
    """Where the player shows each clip's first frame: the first frame of the earliest
    fragment of the clip it loaded (`frag.elementaryStreams.video.startPTS`: every
    fragment starts with a keyframe), less the EXTINFs of the clip's fragments before
    it. hls.js may move a clip's first frames to close a gap at its discontinuity:
    this differs from `clip_clocks` then."""
    starts: dict[int, float] = {}
    for sn, start_pts in sorted(frags):
        clip, offset = scene.into_clip[int(sn)]
        starts.setdefault(clip, start_pts - offset)
    return starts


async def one_run(
    b: Browser, url: str, scene: Scene, seek: float, tally: Tally, stock: bool
) -> None:
    await open_player(b, url)
    assert await b.eval("!!window.StoryForgeHlsFix") is not stock
    assert await b.eval(SELECT % {"seek": seek}) >= 0
    expected = scene.expected
    wanted = [e for e in expected if scene.bounds[e.clip] + e.end > seek]
    # every WebVTT segment from the playhead on is processed (well or not), and the
    # cues stop changing: hls.js adds a segment's cues before it reports the segment
    # processed (SUBTITLE_FRAG_PROCESSED; a segment it defers is reported once
    # parsed) and removes subtitle cues only when it flushes the back buffer, which a
    # page that does not play never does; so once every segment is in, SETTLE of
    # unchanged cues is a margin, not a guess at when loading ends. Without every
    # segment in, the run ends after GIVE_UP unchanged (cues lost: counted below).
    last, since = None, time.monotonic()
    deadline = since + 15
    while time.monotonic() < deadline:
        got = await b.eval(COLLECT)
        now = time.monotonic()
        key = (len(got["cues"]), got["processed"])
        if key != last:
            last, since = key, now
        segments = {int(sn) for sn, end in got["subFrags"] if end > seek}
        all_in = bool(segments) and segments <= {int(sn) for sn in got["processedSn"]}
        if all_in and now - since >= SETTLE:
            break
        if now - since >= GIVE_UP:
            break
        await b.eval("new Promise(r => setTimeout(() => r(true), 50))")
    assert await b.eval("sf.fatal") is None
    found = {text: (start, end) for start, end, text in got["cues"]}
    starts = clip_starts(scene, got["frags"])
    clocks = clip_clocks(scene, got["clocks"])
    tally.runs += 1
    missing = [e for e in wanted if e.text not in found]
    tally.lost += len(missing)
    tally.runs_losing += bool(missing)
    tally.failures += tuple(got["failed"])
    for e in expected:
        if e.text not in found:
            continue
        start, end = found[e.text]
        extinf = scene.bounds[e.clip]
        tally.worst_extinf = max(tally.worst_extinf, abs(start - extinf - e.start))
        if e.clip not in clocks:
            tally.misplaced += 1  # a cue of a clip whose media never loaded
            continue
        if e.clip in starts:
            tally.worst_frames = max(tally.worst_frames, abs(start - starts[e.clip] - e.start))
        at = clocks[e.clip]
        error = max(abs(start - at - e.start), abs(end - at - e.end))
        tally.offsets.setdefault(e.clip, set()).add(round(start - at - e.start, 3))
        tally.worst = max(tally.worst, error)
        # inside its own clip, never active inside another
        length = scene.bounds[e.clip + 1] - scene.bounds[e.clip]
        inside = at - TOLERANCE <= start and end <= at + length + TOLERANCE
        tally.misplaced += error > TOLERANCE or not inside


# the page without its fix (origin/playback/static/hls-vtt-fix.js): hls.js as shipped
STOCK = (
    "Object.defineProperty(window, 'StoryForgeHlsFix', "
    "{get() { return undefined; }, set(_v) {}, configurable: false});"
)


async def measure(
    url: str, scene: Scene, seek_to: float, stock: bool = False
) -> tuple[Tally, Tally]:
    from_start, after_seek = Tally(), Tally()
    async with Browser() as b:
        if stock:
            await b.send("Page.addScriptToEvaluateOnNewDocument", source=STOCK)
        for _ in range(RUNS):
            await one_run(b, url, scene, -1, from_start, stock)
        for _ in range(RUNS):
            await one_run(b, url, scene, seek_to, after_seek, stock)
    return from_start, after_seek


async def test_every_cue_in_place_over_many_runs(settings, captioned_scene):
    scene = captioned_scene
    seek_to = scene.bounds[SEEK_INTO] + 1.0
    key = signing.HmacKey("k2026", b"test-hmac-secret-0123456789")
    setups = {
        "fast path": settings,
        "plain": dataclasses.replace(settings, fast_path=False),
        "signed": dataclasses.replace(settings, signing="hmac", hmac_keys=(key,)),
    }
    report = []
    for name, config in setups.items():
        async with TestClient(OriginTestServer(create_app(config))) as client:
            client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
            url = str(client.make_url(f"/player/{scene.scene_id}"))
            from_start, after_seek = await measure(url, scene, seek_to)
            report.append((name, from_start, after_seek))
            if name == "fast path" and MEASURE_STOCK:  # stock hls.js, for the record
                stock_start, stock_seek = await measure(url, scene, seek_to, stock=True)
                report.append(("stock hls.js, fast path", stock_start, stock_seek))
    print()
    for name, a, s in report:
        for label, t in (("start", a), ("seek", s)):
            print(
                f"captions {name} {label}: runs {t.runs}, runs losing cues {t.runs_losing}, "
                f"cues lost {t.lost}, misplaced {t.misplaced}, max error {t.worst * 1000:.1f} ms "
                f"(against the first video frames {t.worst_frames * 1000:.1f} ms, the EXTINF sums "
                f"{t.worst_extinf * 1000:.1f} ms), "
                f"failed fragments {sorted(set(t.failures))[:4]}, offsets by clip "
                f"{ {c: (min(o), max(o)) for c, o in t.offsets.items()} }"
            )
    for name, a, s in report:
        for t in (a, s):
            assert t.runs == RUNS
            assert t.misplaced == 0 and t.worst <= TOLERANCE, (name, t)
            assert t.lost == 0 or name.startswith("stock"), (name, t)


async def test_the_captions_button(origin_client, captioned_scene):
    """The page's captions button: shown when the scene has subtitles, off by
    default, on when pressed (the English track shown), remembered across page loads
    (localStorage), off again when pressed through the languages."""
    url = str(origin_client.make_url(f"/player/{captioned_scene.scene_id}"))
    async with Browser() as b:
        await open_player(b, url)
        assert await b.eval("document.getElementById('captions').hidden") is False
        assert await b.eval("sf.hls.subtitleTrack") == -1
        await b.eval("(() => { document.getElementById('captions').click(); return true; })()")
        assert await b.eval("sf.hls.subtitleTracks[sf.hls.subtitleTrack].lang") == "en"
        assert await b.eval("localStorage.getItem('storyforge.captions')") == "en"
        await open_player(b, url)  # a new page remembers the choice
        await b.wait_for("sf.hls.subtitleTrack >= 0", timeout=10, what="captions on")
        assert await b.eval("sf.hls.subtitleTracks[sf.hls.subtitleTrack].lang") == "en"
        assert await b.eval("document.getElementById('captions').textContent") == "CC: en"
        await b.eval("(() => { document.getElementById('captions').click(); return true; })()")
        assert await b.eval("sf.hls.subtitleTrack") == -1
        await open_player(b, url)
        await b.eval("new Promise(r => setTimeout(() => r(true), 500))")
        assert await b.eval("sf.hls.subtitleTrack") == -1
        assert await b.eval("document.getElementById('captions').textContent") == "CC: off"
