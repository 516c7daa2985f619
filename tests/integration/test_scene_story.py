"""Issue 16 end to end on one real scene: three clips from different "phones" (a quiet
speech-like tone, a loud one 23 LU above it, one without audio; three different
pictures) uploaded through the API and transcoded by the real worker.

- Loudness: each stored rendition measures within 1 LU of LOUDNESS_TARGET with its true
  peak below -1 dBTP (ffmpeg ebur128 on the stored .ts), the silent clip stays silent,
  the record is in metadata.json and the renditions rows; with LOUDNESS_TARGET=off the
  levels are the sources'.
- Chapters: cue starts equal the stitched playlist's clip starts to the millisecond; the
  player page shows the chapter names (Chromium, DOM).
- Thumbnails at any moment: frames at 10 times across the clip boundaries equal the
  frames of the stitched rendition at those times (SSIM > 0.95 against frames decoded
  independently by ffmpeg); the 11th request for a cached time starts no ffmpeg; a new
  process finds them in storage; 200 concurrent requests for 200 distinct times get only
  200s and 503s and never run more ffmpeg processes than the bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import m3u8
import pytest
from aiohttp.test_utils import TestClient

from core import catalog, db, layout
from core.settings import LadderRung, Settings
from core.storage import open_configured_storage
from origin.app import create_app
from tests.helpers.browser import CHROMIUM, NO_CHROMIUM_REASON, Browser
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, make_clip
from tests.helpers.measure import concat_segments, frame_at, loudness, ssim
from tests.helpers.metrics import scrape
from tests.helpers.scenes import API_TOKEN, new_scene, upload, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.workers import running_workers

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]

TARGET = -16.0
SECONDS = 3.0
# One 360p rung: loudness, chapters and stills are checked on whatever the ladder is;
# every still of these widths is cut from it (the widest rendition when none is wider).
LADDER = (LadderRung("360p", 640, 360, 800_000),)
PROFILE = LADDER[0].name
CONCURRENCY = 2
#: (picture, audio filters after the 440 Hz tone, or None for no audio track)
CLIPS = {
    "quiet": ("testsrc2", "tremolo=f=4:d=0.7,volume=-9dB"),  # about -34 LUFS
    "loud": ("testsrc", "tremolo=f=4:d=0.7,volume=14dB"),  # about -11 LUFS
    "silent": ("testsrc2", None),  # negated picture, no audio
}


@dataclass
class Story:
    settings: Settings
    client: TestClient
    scene: str
    segments: dict[str, str]  # clip name -> segment id
    usernames: list[str]
    sources: dict[str, Path]
    off_segments: dict[str, str]  # ingested with LOUDNESS_TARGET=off
    work: Path

    def segment_dir(self, segment: str, scene: str | None = None) -> Path:
        s = self.settings
        return s.storage_root / s.videos_bucket / (scene or self.scene) / segment


async def _ingest(settings: Settings, client: TestClient, scene: str, uploads) -> list[str]:
    """Upload clips (path, user) to `scene` and run a worker with `settings` until each
    is published."""
    segments = [
        (await upload(client, scene, user, path, sequence=i))["segmentId"]
        for i, (path, user) in enumerate(uploads, start=1)
    ]
    async with running_workers(settings, concurrency=2, lease_seconds=30, name=f"story-{scene}"):
        for seg in segments:
            status = await wait_done(client, seg, timeout=300)
            assert status["status"] == "ready", status
    return segments


@pytest.fixture(scope="module")
async def story(pg_dsn, tmp_path_factory) -> AsyncIterator[Story]:
    work = tmp_path_factory.mktemp("story")
    settings = Settings.from_env(
        {},
        database_url=pg_dsn,
        storage_root=work / "storage",
        api_tokens=(API_TOKEN,),
        log_format="text",
        timeline_interval=2.0,
        thumbnail_concurrency=CONCURRENCY,
        ladder=LADDER,
        refine=False,  # one stage (issue 17's tests turn it on)
    )
    sources = {
        name: make_clip(
            work / f"{name}.mp4",
            width=320,
            height=180,
            fps=30,
            duration=SECONDS,
            picture=picture,
            audio=None if tone is None else "stereo48",
            tone=tone,
            extra=["-vf", "negate"] if name == "silent" else None,
        )
        for name, (picture, tone) in CLIPS.items()
    }
    async with TestClient(OriginTestServer(create_app(settings))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        scene, users = await new_scene(client, 3)
        segs = await _ingest(
            settings, client, scene, list(zip(sources.values(), users, strict=True))
        )
        # the same quiet and loud sources, ingested with loudness matching off
        off = dataclasses.replace(settings, loudness_target=None)
        off_scene, off_users = await new_scene(client, 1)
        off_segs = await _ingest(
            off,
            client,
            off_scene,
            [(sources["quiet"], off_users[0]), (sources["loud"], off_users[0])],
        )
        body = await (await client.get(f"/api/v1/scenes/{scene}/playlist")).json()
        yield Story(
            settings=settings,
            client=client,
            scene=scene,
            segments=dict(zip(CLIPS, segs, strict=True)),
            usernames=[s["contributor"]["username"] for s in body["segments"]],
            sources=sources,
            off_segments={"quiet": off_segs[0], "loud": off_segs[1], "scene": off_scene},
            work=work,
        )


def _rendition_file(story: Story, segment: str, profile: str, scene: str | None = None) -> Path:
    folder = story.segment_dir(segment, scene)
    segments = sorted(folder.glob(f"{profile}_*.ts"))
    assert segments
    return concat_segments(segments, story.work / f"{segment}-{profile}.ts")


# ------------------------------------------------------------------- loudness


async def test_every_clip_is_brought_to_the_target(story: Story) -> None:
    src = {name: loudness(story.sources[name]) for name in ("quiet", "loud")}
    assert src["loud"][0] - src["quiet"][0] >= 20  # the sources differ by >= 20 LU
    for name in ("quiet", "loud"):
        for profile in (r.name for r in LADDER):
            i, tp = loudness(_rendition_file(story, story.segments[name], profile))
            assert abs(i - TARGET) <= 1.0, (name, profile, i)
            assert tp < -1.0, (name, profile, tp)
            print(f"{name}: source {src[name][0]} LUFS {src[name][1]} dBTP -> {profile} {i} / {tp}")
    # the clip without audio got a silent track, and it stays silent
    i, tp = loudness(_rendition_file(story, story.segments["silent"], PROFILE))
    assert i <= -70.0 and tp == float("-inf")


async def test_the_record_is_in_metadata_and_rows(story: Story) -> None:
    modes = {}
    for name, seg in story.segments.items():
        meta = json.loads((story.segment_dir(seg) / "metadata.json").read_text())
        record = meta["loudness"]
        modes[name] = record["mode"]
        assert record["target"] == TARGET and record["truePeakCeiling"] == -1.5
        if name == "silent":
            assert record["inputIntegrated"] is None and record["gain"] == 0
            continue
        source_i, _ = loudness(story.sources[name])
        assert abs(record["inputIntegrated"] - source_i) <= 0.5
        assert record["gain"] == pytest.approx(TARGET - record["inputIntegrated"], abs=0.01)
        pool = await db.connect_pool(story.settings.database_url, size=1)
        try:
            async with pool.acquire() as conn:
                rows = await catalog.rendition_loudness(conn, seg)
        finally:
            await pool.close()
        assert set(rows) == {r.name for r in LADDER}
        for row in rows.values():
            assert row == catalog.Loudness(
                "linear", record["inputIntegrated"], record["inputTruePeak"], record["gain"]
            )
    assert modes == {"quiet": "linear", "loud": "linear", "silent": "no_audio"}
    assert (
        17
        <= json.loads((story.segment_dir(story.segments["quiet"]) / "metadata.json").read_text())[
            "loudness"
        ]["gain"]
        <= 20
    )


async def test_loudness_target_off_keeps_the_levels(story: Story) -> None:
    scene = story.off_segments["scene"]
    for name in ("quiet", "loud"):
        seg = story.off_segments[name]
        source_i, _ = loudness(story.sources[name])
        i, _ = loudness(_rendition_file(story, seg, PROFILE, scene))
        assert abs(i - source_i) <= 1.0, (name, source_i, i)
        print(f"LOUDNESS_TARGET=off, {name}: source {source_i} LUFS -> {PROFILE} {i} LUFS")
        meta = json.loads((story.segment_dir(seg, scene) / "metadata.json").read_text())
        assert meta["loudness"]["mode"] == "off" and meta["loudness"]["gain"] == 0


# ------------------------------------------------------------------- chapters


def _clip_starts(playlist: str) -> list[float]:
    starts, t = [0.0], 0.0
    for seg in m3u8.loads(playlist).segments:
        if seg.discontinuity:
            starts.append(round(t, 3))
        t += seg.duration
    return starts


async def test_chapters_match_the_stitched_playlist(story: Story) -> None:
    client = story.client
    playlist = await (await client.get(f"/v/{story.scene}/{PROFILE}.m3u8")).text()
    starts = _clip_starts(playlist)
    vtt = await (await client.get(f"/v/{story.scene}/chapters.vtt")).text()
    cues = [b.split("\n") for b in vtt.strip().split("\n\n")[1:]]
    stamps = [timing.split(" --> ")[0] for timing, _ in cues]
    assert stamps == [f"00:00:{s:06.3f}" for s in starts]
    assert [text for _, text in cues] == [f"{i}. {u}" for i, u in enumerate(story.usernames, 1)]


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON)
async def test_the_player_shows_the_chapters(story: Story) -> None:
    client = story.client
    async with Browser() as b:
        await b.goto(str(client.make_url(f"/player/{story.scene}")))
        await b.wait_for("window.sf && sf.chapters.length === 3", what="chapters loaded")
        labels = await b.eval(
            "Array.from(document.querySelectorAll('#chapters .chapter')).map(e => e.textContent)"
        )
        assert labels == [f"{i}. {u}" for i, u in enumerate(story.usernames, 1)]
        marks = await b.eval(
            "Array.from(document.querySelectorAll('#scrub .mark')).map(e => e.style.left)"
        )
        assert len(marks) == 3 and marks[0] == "0%"
        starts = await b.eval("sf.chapters.map(c => c.start)")
        playlist = await (await client.get(f"/v/{story.scene}/{PROFILE}.m3u8")).text()
        assert starts == pytest.approx(_clip_starts(playlist), abs=0.0005)


# ----------------------------------------------------------------- thumbnails


async def _thumb(client, url: str, path: Path) -> Path:
    r = await client.get(url)
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"] == "image/jpeg"
    path.write_bytes(await r.read())
    return path


async def test_thumbnails_are_the_frames_of_the_stitched_rendition(story: Story) -> None:
    client, scene = story.client, story.scene
    playlist = await (await client.get(f"/v/{scene}/{PROFILE}.m3u8")).text()
    starts = _clip_starts(playlist)
    segs = list(story.segments.values())
    times = [0.0, 1.01, 2.95, 2.99, 3.0, 3.04, 5.97, 6.0, 6.51, 8.96]
    widths = [640, 320, 640, 1280, 640, 160, 640, 640, 320, 640]
    before = await scrape(client)
    ours: list[Path] = []
    for k, (t, width) in enumerate(zip(times, widths, strict=True)):
        clip = max(i for i, s in enumerate(starts) if s <= t)
        local = t - starts[clip]
        mine = await _thumb(
            client, f"/v/{scene}/thumbnail.jpg?time={t}&width={width}", story.work / f"t{k}.jpg"
        )
        truth = frame_at(
            story.segment_dir(segs[clip]) / f"{PROFILE}.m3u8",
            local,
            width,
            story.work / f"f{k}.jpg",
        )
        score = ssim(mine, truth)
        assert score > 0.95, (t, width, score)
        print(f"thumbnail at {t} s, width {width}: SSIM {score:.4f}")
        ours.append(mine)
        if k == 1:  # within one frame: the next frame resembles it less
            later = story.work / "next.jpg"
            frame_at(
                story.segment_dir(segs[clip]) / f"{PROFILE}.m3u8", local + 1 / 30, width, later
            )
            assert ssim(mine, later) < score
    # the picture really changes at each boundary (a test that could fail)
    assert ssim(ours[2], ours[4]) < 0.9 and ssim(ours[6], ours[7]) < 0.9
    after = await scrape(client)
    runs = ("storyforge_thumbnail_ffmpeg_runs_total", ())
    assert after[runs] - before.get(runs, 0) == 10
    # the 11th request, for a time already asked: from memory, no ffmpeg
    r = await client.get(f"/v/{scene}/thumbnail.jpg?time=5.97")
    assert r.status == 200 and await r.read() == ours[6].read_bytes()
    again = await scrape(client)
    assert again[runs] == after[runs]
    memory = ("storyforge_thumbnail_answers_total", (("source", "memory"),))
    assert again[memory] - after.get(memory, 0) == 1
    # 304 for a client holding the moment's ETag, without a frame grabbed
    r = await client.get(
        f"/v/{scene}/thumbnail.jpg?time=5.97", headers={"If-None-Match": r.headers["ETag"]}
    )
    assert r.status == 304
    # the same frame of one clip through its own route: the same JPEG
    seg2 = segs[1]
    r = await client.get(f"/v/{scene}/{seg2}/thumbnail.jpg?time={5.97 - starts[1]:.6f}")
    assert r.status == 200 and await r.read() == ours[6].read_bytes()
    # without `time`, the clip's stored thumbnail as before
    r = await client.get(f"/v/{scene}/{seg2}/thumbnail.jpg")
    assert r.status == 200
    assert await r.read() == (story.segment_dir(seg2) / "thumbnail.jpg").read_bytes()

    # another origin process finds them in storage: still no ffmpeg
    async with TestClient(OriginTestServer(create_app(story.settings))) as other:
        r = await other.get(f"/v/{scene}/thumbnail.jpg?time=8.96")
        assert r.status == 200 and await r.read() == ours[9].read_bytes()
        samples = await scrape(other)
        assert samples.get(runs, 0) == 0
        assert samples[("storyforge_thumbnail_answers_total", (("source", "storage"),))] == 1


async def test_thumbnails_on_s3(story: Story, moto_endpoint: str) -> None:
    """On S3 the grab downloads the one `.ts` it needs, and keeps the JPEG beside it."""
    s3 = dataclasses.replace(
        story.settings,
        storage="s3",
        s3_endpoint_url=moto_endpoint,
        s3_access_key="test",
        s3_secret_key="test",
    )
    scene, seg = story.scene, story.segments["loud"]
    storage = await open_configured_storage(s3)
    try:
        await storage.ensure_buckets(s3.buckets)
        for path in sorted(story.segment_dir(seg).glob(f"{PROFILE}_*.ts")):
            key = layout.segment_key(scene, seg, path.name)
            await storage.put(s3.videos_bucket, key, path, content_type="video/mp2t")
        url = f"/v/{scene}/{seg}/thumbnail.jpg?time=1.5"
        local = await (await story.client.get(url)).read()
        for grabs in (1, 0):  # a second process finds it in the bucket
            async with TestClient(OriginTestServer(create_app(s3))) as client:
                r = await client.get(url)
                assert r.status == 200 and await r.read() == local
                samples = await scrape(client)
                assert samples.get(("storyforge_thumbnail_ffmpeg_runs_total", ()), 0) == grabs
        key = layout.still_key(scene, seg, f"{PROFILE}_f000045_w640_j.jpg")
        assert await storage.tags(s3.videos_bucket, key) == {"type": "thumbnail"}
    finally:
        await storage.aclose()


async def test_bad_and_outside_times(story: Story) -> None:
    client, scene = story.client, story.scene
    seg = story.segments["loud"]
    for query in (
        "",
        "time=",
        "time=-1",
        "time=1e3",
        "time=abc",
        "time=1&time=2",
        "time=1&width=123",
    ):
        r = await client.get(f"/v/{scene}/thumbnail.jpg?{query}")
        assert r.status == 400, query
        assert (await r.json())["error"]["code"] == "bad_request"
    r = await client.get(f"/v/{scene}/{seg}/thumbnail.jpg?time=x")
    assert r.status == 400
    for url in (
        f"/v/{scene}/thumbnail.jpg?time=9",
        f"/v/{scene}/thumbnail.jpg?time=3600",
        f"/v/{scene}/{seg}/thumbnail.jpg?time=3",
        "/v/scn_0000000000000000/thumbnail.jpg?time=1",
        f"/v/{scene}/seg_0000000000000000/thumbnail.jpg?time=1",
    ):
        r = await client.get(url)
        assert r.status == 404, url
        assert (await r.json())["error"]["code"] == "not_found"


def _ffmpeg_children() -> int:
    """ffmpeg processes whose parent is this test process (the origin runs in it)."""
    me = str(os.getpid())
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if name == "ffmpeg" and fields[1] == me and fields[0] != "Z":
            count += 1
    return count


async def test_200_concurrent_times_stay_within_the_bound(story: Story) -> None:
    scene = story.scene
    # a fresh process: nothing cached in memory; width 160 was never asked for these
    async with TestClient(OriginTestServer(create_app(story.settings))) as client:
        times = [round(k * 0.045, 3) for k in range(200)]  # 200 distinct frames, 0 to 8.955 s
        seen: list[int] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                seen.append(_ffmpeg_children())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

                async def one(t: float) -> tuple[int, str | None, bytes]:
                    url = client.make_url(f"/v/{scene}/thumbnail.jpg?time={t}&width=160")
                    async with http.get(url) as r:
                        return r.status, r.headers.get("Retry-After"), await r.read()

                answers = await asyncio.gather(*(one(t) for t in times))
        finally:
            sampling.set()
            sampler.join()
        elapsed = time.monotonic() - started
        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        assert statuses.count(200) >= CONCURRENCY  # the slots did work
        for status, retry_after, body in answers:
            if status == 200:
                assert body.startswith(b"\xff\xd8")
            else:
                assert retry_after is not None and int(retry_after) >= 1
                assert json.loads(body)["error"]["code"] == "busy"
        samples = await scrape(client)
        assert samples[("storyforge_thumbnail_ffmpeg_running_max", ())] <= CONCURRENCY
        assert max(seen) <= CONCURRENCY and len(seen) > 10
        assert samples[("storyforge_thumbnail_busy_total", ())] == statuses.count(503)
        # nobody waited much beyond the 2 s limit for a slot (plus one grab)
        assert elapsed < 30, elapsed
        print(
            f"200 concurrent: {statuses.count(200)} x 200, {statuses.count(503)} x 503, "
            f"{elapsed:.1f} s, at most {max(seen)} ffmpeg at once"
        )


# -------------------------------------------------- the peak forbids a linear gain


async def test_transients_fall_back_to_dynamic_mode(tmp_path: Path) -> None:
    """A quiet tone with clicks near full scale: the gain the tone needs would push the
    clicks over the ceiling, so loudnorm's dynamic mode levels it (said so in the plan),
    the stored true peak within the -1.5 dBTP ceiling."""
    from workers.media import ffmpeg
    from workers.media.encoding import ladder_of
    from workers.media.loudness import plan_gain

    clicks = r"aeval='val(ch)*0.25+if(lt(mod(t\,0.5)\,0.0002)\,0.9\,0)':c=same"
    source = make_clip(tmp_path / "clicks.mp4", width=320, height=180, duration=3, tone=clicks)
    info = await ffmpeg.probe(source)
    measured = await ffmpeg.measure_loudness(source, info)
    decided = plan_gain(measured, target=TARGET, max_gain=20.0, has_audio=True)
    assert decided.mode == "dynamic", measured
    assert measured.true_peak is not None and measured.true_peak + decided.gain > -1.5
    out = await ffmpeg.transcode(
        source, tmp_path / "out", info, ladder_of(LADDER), loudness=decided
    )
    i, tp = loudness(concat_segments(list(out.renditions[0].segments), tmp_path / "a.ts"))
    source_i, _ = loudness(source)
    assert tp <= -1.5, tp
    # louder by most of the gain: a limiter riding every click cannot reach the target
    assert i > source_i + 5, (source_i, i)
    print(
        f"clicks: source {source_i} LUFS {measured.true_peak} dBTP, plan {decided.gain} dB "
        f"dynamic -> {i} LUFS {tp} dBTP"
    )
