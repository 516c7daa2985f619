"""Scene exports end to end (issue 12) on real PostgreSQL, LocalStorage and moto's S3,
real ffmpeg and Chromium: the API (ready / in flight / new job, one job under
concurrent requests, staleness), the export job (stream copy of the published
renditions into one MP4 whose timestamps, durations and decoding are checked; moments
re-encoding only their edge GOPs; failures; a worker killed mid-export), and serving
the files under /e/.

The scene is transcoded once per module through the upload API (three clips: 24 fps
with audio, 30 fps without, 50 fps mono); each test exports a scene of its own made of
copies of those clips, published again as the transcoder publishes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import signal
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from core import captions, layout
from core.settings import Settings
from core.signing import parse_hmac_keys
from origin import keys
from origin.app import create_app
from tests.helpers.browser import CHROMIUM, NO_CHROMIUM_REASON, Browser
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON
from tests.helpers.exports import (
    decode_errors,
    distinct_parameter_sets,
    ffprobe_json,
    frame_hashes,
    frame_ssim,
    new_scene_row,
    no_temporary_files,
    packets,
    publish_copy,
    scene_of_copies,
    top_level_boxes,
    transcoded_scene,
    wait_export,
)
from tests.helpers.jobs import keys_under, wait_job
from tests.helpers.scenes import API_TOKEN, put_captions
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import processes_mentioning, stop_mid_job, worker_process
from tests.helpers.workers import running_workers

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]

# 1080p sources: the scene is exported at both rungs of the ladder, and a source
# smaller than a rung gets none of it (issue 26)
CLIPS = [
    dict(width=1920, height=1080, fps=24, duration=5, audio="stereo48"),
    dict(width=1920, height=1080, fps=30, duration=4, audio=None),
    dict(width=1920, height=1080, fps=50, duration=4, audio="mono44"),
]
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


@pytest.fixture(scope="module")
def env(pg_dsn, tmp_path_factory) -> Settings:
    return Settings.from_env(
        {},
        database_url=pg_dsn,
        storage_root=tmp_path_factory.mktemp("export-storage"),
        api_tokens=(API_TOKEN,),
        log_format="text",
        job_lease_seconds=10.0,
        timeline_interval=2.0,
        refine=False,  # one stage (issue 17's tests turn it on)
    )


@pytest.fixture
def settings(env) -> Settings:
    """The module's settings for conftest's `origin_client` and `run_workers`."""
    return env


@pytest.fixture(scope="module")
def base(env, tmp_path_factory) -> dict:
    """The three clips, transcoded once through the upload API and the workers."""
    return asyncio.run(transcoded_scene(env, CLIPS, tmp_path_factory.mktemp("export-clips")))


async def copies(settings: Settings, base: dict, *indexes: int, title: str = "The Signal"):
    sources = [base["segments"][i] for i in (indexes or range(len(CLIPS)))]
    return await scene_of_copies(settings, base["scene"], sources, base["user"], title=title)


async def post_export(client, scene: str, **body):
    r = await client.post(f"/api/v1/scenes/{scene}/export", json=body, headers=client.headers_auth)
    return r.status, await r.json()


async def download(client, url: str, dest: Path) -> Path:
    r = await client.get(url)
    assert r.status == 200, await r.text()
    dest.write_bytes(await r.read())
    return dest


def rendition_durations(settings: Settings, scene: str, segment: str, quality: str) -> list[float]:
    text = settings.storage_root / settings.videos_bucket / scene / segment / f"{quality}.m3u8"
    return [
        float(ln[8:].rstrip(","))
        for ln in text.read_text().splitlines()
        if ln.startswith("#EXTINF:")
    ]


def check_mp4(path: Path, quality: str, expected: float, boundaries: list[float]) -> dict:
    """The Must-show checks of one exported MP4; returns facts for more checks."""
    info = ffprobe_json("-show_streams", "-show_format", path)
    streams = info["streams"]
    assert [s["codec_type"] for s in streams] == ["video", "audio"], streams
    video, audio = streams
    assert (video["codec_name"], video["codec_tag_string"]) == ("h264", "avc1")
    assert (video["width"], video["height"]) == SIZES[quality]
    assert (audio["codec_name"], audio["profile"], audio["codec_tag_string"]) == (
        "aac",
        "LC",
        "mp4a",
    )
    assert (int(audio["sample_rate"]), audio["channels"]) == (48000, 2)
    # moov before mdat: a browser plays before the download ends (+faststart)
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    # duration: the scene's (sum of EXTINF) within 0.1 s
    assert abs(float(info["format"]["duration"]) - expected) < 0.1, info["format"]
    # timestamps: decode order strictly increasing, frames back to back in
    # presentation order (no gap or overlap over one frame, at clip joins included)
    v = packets(path, "v")
    dts = [p["dts_time"] for p in v]
    assert all(b > a for a, b in zip(dts, dts[1:], strict=False))
    pts = sorted(p["pts_time"] for p in v)
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    assert min(steps) > 0.015 and max(steps) < 1 / 24 + 0.002, (min(steps), max(steps))
    assert abs(pts[0]) < 0.001
    for t in boundaries:  # a frame starts exactly where each clip starts
        assert min(abs(p - t) for p in pts) < 0.002, t
    a = packets(path, "a")
    apts = [p["pts_time"] for p in a]
    gaps = [b - (x + p["duration_time"]) for x, b, p in zip(apts, apts[1:], a, strict=False)]
    assert max(map(abs, gaps)) < 0.0005, "audio is not one gapless run"
    video_end = pts[-1] + steps[-1]
    audio_end = apts[-1] + a[-1]["duration_time"]
    assert abs(video_end - audio_end) < 1 / 50, (video_end, audio_end)
    # 0 decode errors, also through ffmpeg's frame-rate guess for mixed rates
    assert decode_errors(path) == ""
    return {"video_end": video_end, "audio_end": audio_end, "pts": pts}


# ----------------------------------------------------------------------- tests


async def test_api_refuses_what_it_cannot_export(origin_client, settings, base):
    client = origin_client
    scene, _ = await copies(settings, base, 0)
    url = f"/api/v1/scenes/{scene}/export"
    assert (await client.post(url, json={"quality": "720p"})).status == 401
    bad = [
        {},
        {"quality": "4k"},
        {"quality": 720},
        {"quality": "2160p"},  # well formed, but no clip has it
        {"quality": "720p", "start": 1},
        {"quality": "720p", "start": -1, "end": 2},
        {"quality": "720p", "start": 2, "end": 2.5},
        {"quality": "720p", "start": 3, "end": 2},
        {"quality": "720p", "start": 1, "end": 99},
        {"quality": "720p", "start": "0", "end": "2"},
        {"quality": "720p", "start": True, "end": 3},
        {"quality": "720p", "strat": 1},
    ]
    for body in bad:
        status, answer = await post_export(client, scene, **body)
        assert status == 400, (body, answer)
        assert answer["error"]["code"] == "bad_request" and answer["error"]["message"]
    r = await client.post(
        url, data=b"{nope", headers={**client.headers_auth, "Content-Type": "application/json"}
    )
    assert r.status == 400
    for other in ("scn_0000000000000000", "scn_x", await new_scene_row(settings)):
        status, answer = await post_export(client, other, quality="720p")
        assert status == 404, (other, answer)
    for path in ("/api/v1/exports/exp_0000000000000000", "/api/v1/exports/../x"):
        r = await client.get(path, headers=client.headers_auth)
        assert r.status == 404
    for path in (
        f"/e/{scene}/exp_0000000000000000/full_720p.mp4",
        f"/e/{scene}/exp_0000000000000000/../../etc/passwd",
        f"/e/{scene}/exp_0000000000000000/export_manifest.json",
    ):
        assert (await client.get(path)).status == 404


async def test_full_export_at_both_qualities(origin_client, settings, run_workers, base, tmp_path):
    client = origin_client
    scene, segs = await copies(settings, base)
    run_workers(concurrency=2)
    for quality in ("720p", "1080p"):
        status, started = await post_export(client, scene, quality=quality)
        assert status == 202, started
        assert started["status"] == "processing" and started["estimatedTime"] >= 1
        assert started["statusUrl"] == f"/api/v1/exports/{started['exportId']}"
        done = await wait_export(client, started["exportId"])
        assert done["status"] == "ready" and done["progress"] == 1, done
        assert done["current"] is True and done["error"] is None
        assert no_temporary_files(started["jobId"])
        name = f"full_{quality}.mp4"
        assert done["url"] == f"/e/{scene}/{started['exportId']}/{name}"
        mp4 = await download(client, done["url"], tmp_path / name)
        durations = [rendition_durations(settings, scene, s, quality) for s in segs]
        expected = sum(map(sum, durations))
        joins = [sum(map(sum, durations[:k])) for k in range(1, len(durations))]
        facts = check_mp4(mp4, quality, expected, joins)
        assert abs(done["duration"] - expected) < 0.1 and done["size"] == mp4.stat().st_size
        # the clips' parameter sets were made one: the avc1 sample entry holds them all
        assert distinct_parameter_sets(mp4) == (1, 1)
        # its manifest, and what it says about the clips
        r = await client.get(done["url"].rsplit("/", 1)[0] + "/export_manifest.json")
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        manifest = await r.json()
        assert manifest["sceneVersion"] == done["sceneVersion"] and manifest["quality"] == quality
        assert [c["id"] for c in manifest["segments"]] == segs
        assert [c["sequence"] for c in manifest["segments"]] == [1, 2, 3]
        assert {c["contributorId"] for c in manifest["segments"]} == {base["user"]}
        assert [c["duration"] for c in manifest["segments"]] == [
            round(sum(d), 3) for d in durations
        ]
        assert {p["mode"] for p in manifest["parts"]} == {"copy"}
        assert manifest["createdAt"].endswith("Z")
        # stored with its content type, Cache-Control and lifecycle tag
        storage = client.server.app[keys.STORAGE]
        key = layout.export_key(scene, started["exportId"], name)
        head = await storage.head(settings.exports_bucket, key)
        assert head.content_type == "video/mp4" and "max-age=86400" in (head.cache_control or "")
        assert await storage.tags(settings.exports_bucket, key) == {"type": "export"}
        assert facts["pts"]
    # each export's export.ready event was written with its publish (issue 18's outbox)
    events = await client.server.app[keys.POOL].fetch(
        "SELECT type FROM webhook_events WHERE scene_id = $1 AND type LIKE 'export.%'", scene
    )
    assert [e["type"] for e in events] == ["export.ready", "export.ready"]
    # asking again: the ready export, at once
    status, again = await post_export(client, scene, quality="720p")
    assert status == 200 and again["status"] == "ready" and again["url"].endswith("full_720p.mp4")
    # served as a download named after the scene, with ranges and validators
    r = await client.head(again["url"])
    assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
    assert r.headers["Content-Disposition"] == 'attachment; filename="The Signal.mp4"'
    assert int(r.headers["Content-Length"]) == again["size"]
    etag = r.headers["ETag"]
    r = await client.get(again["url"], headers={"Range": "bytes=0-99"})
    assert r.status == 206 and len(await r.read()) == 100
    assert r.headers["Content-Range"] == f"bytes 0-99/{again['size']}"
    assert (await client.get(again["url"], headers={"If-None-Match": etag})).status == 304
    r = await client.get(again["url"], headers={"Origin": "https://app.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM_REASON)
async def test_exported_mp4s_play_to_the_end_in_chromium(
    origin_client, settings, run_workers, base
):
    client = origin_client
    scene, _ = await copies(settings, base)
    run_workers(concurrency=2)
    urls = []
    for quality in ("720p", "1080p"):
        status, started = await post_export(client, scene, quality=quality)
        assert status == 202
        done = await wait_export(client, started["exportId"])
        assert done["status"] == "ready", done
        urls.append(str(client.make_url(done["url"])))
    async with Browser() as b:
        for url in urls:
            await b.goto(str(client.make_url("/healthz")))
            await b.eval(
                "(() => { const v = document.createElement('video'); v.id = 'video';"
                " v.muted = true; window.sf = {events: []};"
                " for (const e of ['ended', 'error']) v.addEventListener(e, () =>"
                " sf.events.push({kind: e, t: v.currentTime}));"
                f" v.src = {json.dumps(url)}; document.body.appendChild(v);"
                " v.playbackRate = 4; return v.play().then(() => true); })()"
            )
            await b.wait_for("sf.events.length > 0", timeout=60, what=f"{url} ended")
            events = await b.eval("JSON.stringify(sf.events)")
            assert json.loads(events)[0]["kind"] == "ended", events
            decoded = await b.eval(
                "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
            )
            duration = await b.eval("document.getElementById('video').duration")
            assert abs(duration - 13.0) < 0.1
            assert decoded > 0


async def test_one_job_for_concurrent_requests_and_new_clips_make_exports_stale(
    origin_client, settings, run_workers, base, tmp_path
):
    client = origin_client
    scene, _ = await copies(settings, base, 0, 1)
    answers = await asyncio.gather(*(post_export(client, scene, quality="720p") for _ in range(5)))
    assert {status for status, _ in answers} == {202}, answers
    assert len({(b["jobId"], b["exportId"]) for _, b in answers}) == 1, answers
    a = answers[0][1]
    pool = client.server.app[keys.POOL]
    jobs = await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE kind = 'export' AND scene_id = $1", scene
    )
    assert jobs == 1
    run_workers()
    first = await wait_export(client, a["exportId"])
    assert first["status"] == "ready", first
    status, ready = await post_export(client, scene, quality="720p")
    assert status == 200 and ready["exportId"] == a["exportId"] and ready["url"] == first["url"]
    old = await download(client, first["url"], tmp_path / "old.mp4")

    # a new clip is published: the scene's version moves on, the export is stale
    storage = client.server.app[keys.STORAGE]
    async with pool.acquire() as conn:
        await publish_copy(
            settings, storage, conn, base["scene"], base["segments"][2], scene, base["user"]
        )
    was = await (
        await client.get(f"/api/v1/exports/{a['exportId']}", headers=client.headers_auth)
    ).json()
    assert was["status"] == "ready" and was["current"] is False
    status, renewed = await post_export(client, scene, quality="720p")
    assert status == 202, renewed
    assert renewed["exportId"] != a["exportId"] and renewed["jobId"] != a["jobId"]
    assert renewed["sceneVersion"] == first["sceneVersion"] + 1

    done = await wait_export(client, renewed["exportId"])
    assert done["status"] == "ready" and done["current"] is True
    assert done["url"] != first["url"]  # a version-specific URL: no cache can mix them
    new = await download(client, done["url"], tmp_path / "new.mp4")
    assert abs(done["duration"] - first["duration"] - 4.0) < 0.1
    assert (
        old.read_bytes()
        == (await download(client, first["url"], tmp_path / "again.mp4")).read_bytes()
    )
    assert new.stat().st_size > old.stat().st_size
    status, current = await post_export(client, scene, quality="720p")
    assert status == 200 and current["exportId"] == renewed["exportId"]


async def test_a_job_overtaken_by_a_new_clip_fails_and_estimates_use_measured_speed(
    origin_client, settings, run_workers, base
):
    client = origin_client
    scene, _ = await copies(settings, base, 0, 1)
    pool = client.server.app[keys.POOL]
    # earlier exports of this run measured the throughput; the estimate divides by it
    speed = await pool.fetchval("SELECT speed FROM export_throughput WHERE kind = 'full'")
    assert speed is not None and speed > 0
    status, queued = await post_export(client, scene, quality="720p")
    assert status == 202 and queued["estimatedTime"] == math.ceil(9.0 / speed)
    # a clip is published before any worker took the job: the job cannot export the
    # version it was asked for any more
    storage = client.server.app[keys.STORAGE]
    async with pool.acquire() as conn:
        await publish_copy(
            settings, storage, conn, base["scene"], base["segments"][2], scene, base["user"]
        )
    run_workers()
    done = await wait_export(client, queued["exportId"])
    assert done["status"] == "failed" and "request the export again" in done["error"], done
    status, again = await post_export(client, scene, quality="720p")
    assert status == 202 and again["sceneVersion"] == queued["sceneVersion"] + 1
    ready = await wait_export(client, again["exportId"])
    assert ready["status"] == "ready" and (await client.head(ready["url"])).status == 200
    # a deleted scene has no exports to ask for, about, or to download
    await pool.execute("UPDATE scenes SET deleted_at = now() WHERE id = $1", scene)
    assert (await post_export(client, scene, quality="720p"))[0] == 404
    r = await client.get(f"/api/v1/exports/{again['exportId']}", headers=client.headers_auth)
    assert r.status == 404
    assert (await client.get(ready["url"])).status == 404


async def test_moment_is_frame_accurate_and_reencodes_only_its_edge_gops(
    origin_client, settings, run_workers, base, tmp_path
):
    client = origin_client
    scene, (c1, c2, _) = await copies(settings, base)
    # from the middle of clip 1 (24 fps) to the middle of clip 2 (30 fps, no audio)
    status, started = await post_export(client, scene, quality="720p", start=2.3, end=6.7)
    assert status == 202, started
    start, end = started["start"], started["end"]
    assert start == pytest.approx(55 / 24, abs=1e-6)  # rounded to clip 1's frames
    assert end == pytest.approx(5 + 51 / 30, abs=1e-6)  # and to clip 2's
    run_workers()
    done = await wait_export(client, started["exportId"])
    assert done["status"] == "ready", done
    mp4 = await download(client, done["url"], tmp_path / "moment.mp4")
    assert done["url"].endswith("/moment_720p.mp4")
    r = await client.head(done["url"])
    assert r.headers["Content-Disposition"] == 'attachment; filename="The Signal (0m02s-0m06s).mp4"'

    info = ffprobe_json("-show_streams", "-show_format", mp4)
    video = info["streams"][0]
    pts = sorted(p["pts_time"] for p in packets(mp4, "v"))
    shown = pts[-1] + 1 / 30 - pts[0]
    assert abs(shown - (end - start)) <= 1 / 30 + 1e-3, (shown, end - start)
    assert len(pts) == (120 - 55) + 51
    assert decode_errors(mp4) == ""
    assert video["codec_tag_string"] == "avc1"
    assert distinct_parameter_sets(mp4) == (1, 1)  # the cuts' x264 SPS/PPS are the same

    # the first and last frames are the stitched renditions' frames at those times
    videos = settings.storage_root / settings.videos_bucket / scene
    assert frame_ssim(mp4, 0, videos / c1 / "720p_0001.ts", 55) > 0.98
    assert frame_ssim(mp4, len(pts) - 1, videos / c2 / "720p_0001.ts", 50) > 0.98

    # only the edge GOPs were re-encoded: the manifest and the job's log say so, and
    # every frame between them decodes bit for bit as the published segment's own
    r = await client.get(done["url"].rsplit("/", 1)[0] + "/export_manifest.json")
    parts = (await r.json())["parts"]
    assert [(p["segmentId"], p["files"], p["mode"], p.get("frames")) for p in parts] == [
        (c1, ["720p_0001.ts"], "reencode", [55, 96]),
        (c1, ["720p_0002.ts"], "copy", None),
        (c2, ["720p_0001.ts"], "reencode", [0, 51]),
    ]
    job_log = (
        settings.storage_root / settings.internal_bucket / "jobs" / done["jobId"] / "export_log.txt"
    )
    lines = job_log.read_text().splitlines()
    assert sum(ln.startswith("reencode ") for ln in lines) == 2
    assert sum(ln.startswith("$ ffmpeg") and "libx264" in ln for ln in lines) == 2
    out = frame_hashes(mp4)
    copied = frame_hashes(videos / c1 / "720p_0002.ts", fmt="mpegts")
    assert out[96 - 55 : 96 - 55 + len(copied)] == copied
    edge = set(frame_hashes(videos / c1 / "720p_0001.ts", fmt="mpegts")[55:96])
    assert not edge & set(out[: 96 - 55])  # re-encoded: not the published bytes

    # the same moment, asked for with times that round to the same frames: the same export
    status, again = await post_export(client, scene, quality="720p", start=2.29, end=6.69)
    assert status == 200 and again["exportId"] == started["exportId"]


async def test_a_missing_rendition_fails_readably_and_leaves_nothing(
    origin_client, settings, run_workers, base
):
    client = origin_client
    scene, (_, c2) = await copies(settings, base, 0, 1)
    storage = client.server.app[keys.STORAGE]
    await storage.delete(settings.videos_bucket, layout.segment_key(scene, c2, "720p_0001.ts"))
    status, started = await post_export(client, scene, quality="720p")
    assert status == 202
    run_workers()
    done = await wait_export(client, started["exportId"])
    assert done["status"] == "failed", done
    assert "720p_0001.ts" in done["error"] and c2 in done["error"] and "clip 2" in done["error"]
    assert "url" not in done
    left = [o.key async for o in storage.list(settings.exports_bucket, f"{scene}/")]
    assert left == []
    job = await client.server.app[keys.POOL].fetchrow(
        "SELECT status, attempts FROM jobs WHERE id = $1", started["jobId"]
    )
    assert (job["status"], job["attempts"]) == ("failed", 1)  # bad input: not retried
    assert no_temporary_files(started["jobId"])
    event = await client.server.app[keys.POOL].fetchval(
        "SELECT payload FROM webhook_events WHERE scene_id = $1 AND type = 'export.failed'", scene
    )
    assert event is not None and "720p_0001.ts" in json.loads(event)["data"]["error"]

    # issue 24: the failure is recorded for this scene version and range; asking again
    # answers it (200, no new job) until a retry is asked for explicitly
    pool = client.server.app[keys.POOL]
    for _ in range(3):
        status, again = await post_export(client, scene, quality="720p")
        assert status == 200 and again["status"] == "failed", again
        assert again["exportId"] == started["exportId"] and again["jobId"] == started["jobId"]
        assert "720p_0001.ts" in again["error"] and "url" not in again
        assert again["retryUrl"] == f"/api/v1/exports/{started['exportId']}/retry"
    jobs = await pool.fetchval("SELECT count(*) FROM jobs WHERE scene_id = $1", scene)
    assert jobs == 1
    # the lost segment is back: the retry runs the same job again, the export is made
    bucket = settings.videos_bucket
    await storage.copy(
        bucket,
        layout.segment_key(base["scene"], base["segments"][1], "720p_0001.ts"),
        bucket,
        layout.segment_key(scene, c2, "720p_0001.ts"),
    )
    r = await client.post(again["retryUrl"])
    assert r.status == 401  # the bearer token, as for every export write
    r = await client.post(again["retryUrl"], headers=client.headers_auth)
    retried = await r.json()
    assert r.status == 202, retried
    assert retried["status"] == "processing" and retried["jobId"] == started["jobId"]
    assert 0 <= retried["progress"] < 1 and retried["statusUrl"] == again["statusUrl"]
    done = await wait_export(client, started["exportId"])
    assert done["status"] == "ready" and done["error"] is None, done
    status, ready = await post_export(client, scene, quality="720p")
    assert status == 200 and ready["status"] == "ready"
    assert ready["exportId"] == started["exportId"]
    r = await client.post(again["retryUrl"], headers=client.headers_auth)
    assert r.status == 409 and "ready" in (await r.json())["error"]["message"]
    job = await pool.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1", started["jobId"])
    assert (job["status"], job["attempts"]) == ("succeeded", 1)  # a fresh attempt budget
    r = await client.post("/api/v1/exports/exp_0000000000000000/retry", headers=client.headers_auth)
    assert r.status == 404


async def test_a_failed_export_stays_failed_until_the_scene_changes(origin_client, settings, base):
    """No worker runs: what the request answers follows the newest export's job, as
    a worker would have left it (failed for good, gave up, or cancelled)."""
    client = origin_client
    pool = client.server.app[keys.POOL]
    scene, _ = await copies(settings, base, 1)
    moment = {"quality": "720p", "start": 0.5, "end": 2.5}
    status, first = await post_export(client, scene, **moment)
    assert status == 202
    # its job gave up after its attempts, no worker saying so (a lease expired last)
    await pool.execute(
        "UPDATE jobs SET status = 'dead', last_error = 'ffmpeg exited with 1: boom' WHERE id = $1",
        first["jobId"],
    )
    status, answer = await post_export(client, scene, **moment)
    assert status == 200 and answer["status"] == "failed", answer
    assert answer["exportId"] == first["exportId"] and "boom" in answer["error"]
    got = await (await client.get(first["statusUrl"], headers=client.headers_auth)).json()
    assert got["status"] == "failed" and "boom" in got["error"]
    # another range, or the whole scene, is another export: a job of its own
    status, other = await post_export(client, scene, quality="720p", start=0.5, end=3.0)
    assert status == 202 and other["jobId"] != first["jobId"]
    # an operator cancelled that one: asking again starts a new job
    await pool.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", other["jobId"])
    await pool.execute(
        "UPDATE exports SET status = 'failed', error = 'cancelled' WHERE id = $1",
        other["exportId"],
    )
    status, anew = await post_export(client, scene, quality="720p", start=0.5, end=3.0)
    assert status == 202 and anew["jobId"] not in (other["jobId"], first["jobId"])
    # the scene changes: the failed range is asked for the new version, a new job
    storage = client.server.app[keys.STORAGE]
    async with pool.acquire() as conn:
        await publish_copy(
            settings, storage, conn, base["scene"], base["segments"][0], scene, base["user"]
        )
    r = await client.post(first["statusUrl"] + "/retry", headers=client.headers_auth)
    assert r.status == 409 and "scene changed" in (await r.json())["error"]["message"]
    status, renewed = await post_export(client, scene, **moment)
    assert status == 202 and renewed["sceneVersion"] == first["sceneVersion"] + 1
    assert renewed["exportId"] != first["exportId"]


async def test_worker_killed_mid_export_is_finished_by_another(origin_client, settings, base):
    client = origin_client
    # the three clips published twice over, at 1080p: stop_mid_job holds the export at
    # a tenth of it however fast it would run
    scene, _ = await copies(settings, base, *([0, 1, 2] * 2))
    status, started = await post_export(client, scene, quality="1080p")
    assert status == 202
    scene_bytes = sum(
        p.stat().st_size
        for p in (settings.storage_root / settings.videos_bucket / scene).rglob("1080p_*.ts")
    )
    first = worker_process(settings, EXPORT_FETCH_CONCURRENCY="1")
    try:
        # stopped once its ffmpeg has been fed a tenth of the scene: mid-export
        await stop_mid_job(first, started["jobId"], fed=scene_bytes // 10)
        r = await client.get(f"/api/v1/exports/{started['exportId']}", headers=client.headers_auth)
        body = await r.json()
        assert body["status"] == "processing" and body["progress"] < 1, body
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        await asyncio.sleep(0.5)
        assert not processes_mentioning(f"storyforge-{started['jobId']}"), (
            "ffmpeg outlived its worker"
        )
    finally:
        if first.poll() is None:
            first.kill()
    second = worker_process(settings, EXPORT_FETCH_CONCURRENCY="1")
    try:
        done = await wait_export(client, started["exportId"], timeout=240)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert done["status"] == "ready", done
    job = await client.server.app[keys.POOL].fetchrow(
        "SELECT status, attempts FROM jobs WHERE id = $1", started["jobId"]
    )
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    storage = client.server.app[keys.STORAGE]
    stored = sorted([o.key async for o in storage.list(settings.exports_bucket, f"{scene}/")])
    prefix = layout.export_prefix(scene, started["exportId"])
    assert stored == [prefix + "export_manifest.json", prefix + "full_1080p.mp4"]
    assert abs(done["duration"] - 2 * 13.0) < 0.1


async def test_export_on_s3_and_signed_urls(settings, run_workers, base, moto_endpoint, tmp_path):
    """The same path on moto's S3 (segments fetched, the MP4 uploaded and served with
    GetObject), with HMAC-signed URLs."""
    s3 = dataclasses.replace(
        settings,
        storage="s3",
        s3_endpoint_url=moto_endpoint,
        s3_access_key="test",
        s3_secret_key="test",
        signing="hmac",
        hmac_keys=parse_hmac_keys("k1:" + "s" * 32),
    )
    scene, segs = await scene_of_copies(
        s3,
        base["scene"],
        base["segments"][:2],
        base["user"],
        title='Ünïcode "quoted"/title',
        source_settings=settings,
    )
    async with TestClient(OriginTestServer(create_app(s3))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        await put_captions(client, segs[1], "en", SIDE_EN_3)
        status, started = await post_export(client, scene, quality="720p")
        assert status == 202
        async with running_workers(s3, lease_seconds=30):
            done = await wait_export(client, started["exportId"])
        assert done["status"] == "ready", done
        url = done["url"]
        assert "sig=" in url and "kid=k1" in url and done["expiresAt"]
        bare = url.split("?", 1)[0]
        assert (await client.get(bare)).status == 403
        assert (
            await client.get(
                bare.replace(scene, "scn_0000000000000000") + "?" + url.split("?", 1)[1]
            )
        ).status in (403, 404)
        r = await client.get(url, headers={"Range": "bytes=100-"})
        assert r.status == 206
        r = await client.get(url)
        assert r.status == 200
        disposition = r.headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="Unicode quoted title.mp4"'), (
            disposition
        )
        assert "filename*=UTF-8''%C3%9Cn%C3%AFcode%20quoted%20title.mp4" in disposition
        mp4 = tmp_path / "s3.mp4"
        mp4.write_bytes(await r.read())
        assert decode_errors(mp4) == ""
        assert abs(float(ffprobe_json("-show_format", mp4)["format"]["duration"]) - 9.0) < 0.1
        # its captions sidecar: signed like the MP4, served from S3 as WebVTT
        (sidecar,) = done["captions"]
        assert sidecar["lang"] == "en" and "sig=" in sidecar["url"]
        assert (await client.get(sidecar["url"].split("?", 1)[0])).status == 403
        r = await client.get(sidecar["url"])
        assert r.status == 200 and r.headers["Content-Type"] == "text/vtt; charset=utf-8"
        assert "00:00:06.000 --> 00:00:07.000\nthree" in await r.text()  # clip 2 starts at 5 s


async def test_cloudfront_mode_mints_a_canned_url_for_the_one_file(settings, run_workers, base):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cf = dataclasses.replace(
        settings,
        signing="cloudfront",
        cdn_base_url="https://cdn.storyforge.test",
        cloudfront_key_pair_id="K2JCJMDEHXQW5F",
        cloudfront_private_key=pem,
    )
    scene, _ = await copies(settings, base, 1)
    async with TestClient(OriginTestServer(create_app(cf))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        status, started = await post_export(client, scene, quality="720p")
        assert status == 202
        run_workers()
        done = await wait_export(client, started["exportId"])
    assert done["status"] == "ready", done
    resource, _, query = done["url"].partition("?")
    assert resource == (
        f"https://cdn.storyforge.test/e/{scene}/{started['exportId']}/full_720p.mp4"
    )
    fields = dict(part.split("=", 1) for part in query.split("&"))
    assert sorted(fields) == ["Expires", "Key-Pair-Id", "Signature"]
    assert fields["Key-Pair-Id"] == "K2JCJMDEHXQW5F"
    # the canned policy CloudFront rebuilds from the URL (its documented form)
    condition = {"DateLessThan": {"AWS:EpochTime": int(fields["Expires"])}}
    statement = json.dumps(
        {"Statement": [{"Resource": resource, "Condition": condition}]}, separators=(",", ":")
    )
    signature = base64.b64decode(
        fields["Signature"].replace("-", "+").replace("_", "=").replace("~", "/")
    )
    key.public_key().verify(signature, statement.encode(), padding.PKCS1v15(), hashes.SHA1())


SIDE_EN_1 = b"WEBVTT\n\n1\n00:00.500 --> 00:01.500\none\n\n2\n00:02.500 --> 00:04.000\ntwo\n"
SIDE_EN_3 = b"WEBVTT\n\n1\n00:01.000 --> 00:02.000\nthree\n\n00:02.500 --> 00:03.500\nfour\n"
SIDE_FR_3 = b"1\n00:00:00,500 --> 00:00:02,500\nquatre\n"


def cue_times(vtt: str) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of every cue of a WebVTT file as served."""
    cues = captions.parse_vtt(vtt.encode(), captions.Limits(1 << 20, 1000))
    return [(c.start_ms, c.end_ms, c.text) for c in cues]


async def test_captions_sidecars_on_the_exports_timeline(
    origin_client, settings, run_workers, base
):
    """Issue 27: an export carries a WebVTT file per language of its clips, each clip's
    cues at its place on the export's timeline (a moment's shifted and trimmed), listed
    in its JSON, served under /e/; deleting the scene deletes them."""
    client = origin_client
    scene, segs = await copies(settings, base)
    await put_captions(client, segs[0], "en", SIDE_EN_1)
    await put_captions(client, segs[2], "en", SIDE_EN_3)
    await put_captions(client, segs[2], "fr", SIDE_FR_3, "application/x-subrip")
    # where each clip starts on the scene's timeline: the sum of the earlier EXTINFs
    lengths = [sum(rendition_durations(settings, scene, s, "720p")) for s in segs]
    starts = [sum(lengths[:k]) for k in range(len(segs))]
    run_workers(concurrency=2)
    storage = client.server.app[keys.STORAGE]

    async def sidecars(**body) -> tuple[dict, dict[str, list[tuple[int, int, str]]]]:
        status, started = await post_export(client, scene, quality="720p", **body)
        assert status == 202, started
        done = await wait_export(client, started["exportId"])
        assert done["status"] == "ready", done
        assert [c["lang"] for c in done["captions"]] == ["en", "fr"]
        found = {}
        for c in done["captions"]:
            name = done["url"].rsplit("/", 1)[1].removesuffix(".mp4") + f".{c['lang']}.vtt"
            assert c["url"] == done["url"].rsplit("/", 1)[0] + "/" + name
            r = await client.get(c["url"])
            assert r.status == 200 and r.headers["Content-Type"] == "text/vtt; charset=utf-8"
            assert r.headers["Cache-Control"] == layout.EXPORT_META.cache_control
            found[c["lang"]] = cue_times(await r.text())
            key = layout.export_key(scene, done["exportId"], name)
            assert await storage.tags(settings.exports_bucket, key) == {"type": "export"}
        # a language the export has no sidecar for is not served
        missing = done["url"].removesuffix(".mp4") + ".de.vtt"
        assert (await client.get(missing)).status == 404
        return done, found

    def at(clip: int, local: float, moment_start: float = 0.0) -> int:
        return round((starts[clip] - moment_start + local) * 1000)

    # the whole scene: every clip's cues shifted by the clip's start
    whole, found = await sidecars()
    assert found == {
        "en": [
            (500, 1500, "one"),
            (2500, 4000, "two"),
            (at(2, 1.0), at(2, 2.0), "three"),
            (at(2, 2.5), at(2, 3.5), "four"),
        ],
        "fr": [(at(2, 0.5), at(2, 2.5), "quatre")],
    }
    manifest = await (
        await client.get(whole["url"].rsplit("/", 1)[0] + "/export_manifest.json")
    ).json()
    assert manifest["captions"] == [
        {"language": "en", "file": "full_720p.en.vtt"},
        {"language": "fr", "file": "full_720p.fr.vtt"},
    ]
    assert [s["startTime"] for s in manifest["segments"]] == [round(t, 3) for t in starts]

    # a moment from 3 s (inside clip 1) to 2 s into clip 3: shifted and trimmed
    start, end = 3.0, starts[2] + 2.0
    moment, found = await sidecars(start=start, end=end)
    assert moment["start"] == start and moment["end"] == pytest.approx(end, abs=0.001)
    assert found == {
        # "one" is before the moment, "two" cut at its start, "four" after its end
        "en": [(0, 1000, "two"), (at(2, 1.0, start), at(2, 2.0, start), "three")],
        "fr": [(at(2, 0.5, start), at(2, 2.0, start), "quatre")],  # cut at its end
    }

    # the scene deleted: its exports' sidecars go with it
    pool = client.server.app[keys.POOL]
    r = await client.delete(f"/api/v1/scenes/{scene}", headers=client.headers_auth)
    assert r.status == 202, await r.text()
    assert (await client.get(moment["captions"][0]["url"])).status == 404
    await wait_job(pool, (await r.json())["jobId"])
    assert await keys_under(storage, settings.exports_bucket, f"{scene}/") == []
