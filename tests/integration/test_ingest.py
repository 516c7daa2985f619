"""The write path end to end: upload API -> job -> one ffmpeg pass -> published
segment, with real ffmpeg, real PostgreSQL and LocalStorage."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import m3u8
import pytest
from aiohttp.test_utils import TestClient

from core import db, layout
from core.settings import LadderRung
from origin.app import create_app
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_PAIR
from tests.helpers.polling import until
from tests.helpers.scenes import new_scene, upload, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import free_port, processes_mentioning, worker_process

pytestmark = pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)


def stored(settings, scene, segment) -> dict[str, Path]:
    root = settings.storage_root / settings.videos_bucket / scene / segment
    if not root.exists():
        return {}
    return {p.name: p for p in root.iterdir() if p.is_file()}


async def test_api_rejects_bad_requests(origin_client, settings, tmp_path):
    client = origin_client
    scene, (user,) = await new_scene(client)
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"\x00" * 100)
    url = f"/api/v1/scenes/{scene}/segments"
    # no token
    r = await client.post(url, params={"contributor": user}, data=b"x")
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "unauthorized"
    # wrong token
    r = await client.post(
        url, params={"contributor": user}, data=b"x", headers={"Authorization": "Bearer nope"}
    )
    assert r.status == 401
    h = {**client.headers_auth, "Content-Type": "video/mp4"}
    # not a video content type
    r = await client.post(
        url, params={"contributor": user}, data=b"x", headers={**h, "Content-Type": "text/plain"}
    )
    assert r.status == 415
    # unknown scene / contributor / malformed ids
    r = await client.post(
        "/api/v1/scenes/scn_0000000000000000/segments",
        params={"contributor": user},
        data=b"x",
        headers=h,
    )
    assert r.status == 404
    r = await client.post(url, params={"contributor": "usr_0000000000000000"}, data=b"x", headers=h)
    assert r.status == 404
    r = await client.post(url, params={"contributor": "../etc"}, data=b"x", headers=h)
    assert r.status == 400
    r = await client.post(url, params={"contributor": user, "sequence": "-1"}, data=b"x", headers=h)
    assert r.status == 400
    # empty body
    r = await client.post(url, params={"contributor": user}, data=b"", headers=h)
    assert r.status == 400
    # a taken sequence
    r = await client.post(url, params={"contributor": user, "sequence": "7"}, data=b"x", headers=h)
    assert r.status == 202
    r = await client.post(url, params={"contributor": user, "sequence": "7"}, data=b"x", headers=h)
    assert r.status == 409
    # unknown segment status
    r = await client.get("/api/v1/segments/seg_0000000000000000")
    assert r.status == 404


async def test_upload_over_the_limit_is_413_and_leaves_nothing(settings):
    small = dataclasses.replace(settings, max_upload_bytes=64 * 1024)
    async with TestClient(OriginTestServer(create_app(small))) as client:
        client.headers_auth = {"Authorization": "Bearer test-token-0123456789"}
        scene, (user,) = await new_scene(client)
        h = {**client.headers_auth, "Content-Type": "video/mp4"}
        url = f"/api/v1/scenes/{scene}/segments"
        r = await client.post(url, params={"contributor": user}, data=b"x" * 100_000, headers=h)
        assert r.status == 413

        async def chunked():  # no Content-Length: the limit is enforced while streaming
            for _ in range(20):
                yield b"y" * 8192

        r = await client.post(url, params={"contributor": user}, data=chunked(), headers=h)
        assert r.status == 413
    internal = settings.storage_root / settings.internal_bucket
    assert not any(p.is_file() and p.name == "raw_output.mp4" for p in internal.rglob("*"))


@pytest.mark.parametrize("ladder", [SMALL_PAIR], ids=["two-rungs"])
async def test_clip_becomes_a_published_segment(origin_client, settings, run_workers, clips):
    client = origin_client
    scene, (user,) = await new_scene(client)
    clip = clips.get(width=640, height=360, fps=30, duration=9)
    profiles = [r.name for r in settings.ladder]
    accepted = await upload(client, scene, user, clip)
    assert accepted["statusUrl"] == f"/api/v1/segments/{accepted['segmentId']}"
    seg = accepted["segmentId"]
    first = await (await client.get(accepted["statusUrl"])).json()
    assert first["status"] == "processing" and first["error"] is None
    # nothing is visible before publication
    assert (await client.get(f"/v/{scene}/master.m3u8")).status == 404
    run_workers()
    done = await wait_done(client, seg)
    assert done["status"] == "ready", done
    assert done["progress"] == 1
    assert done["hlsUrl"] == f"/v/{scene}/{seg}/master.m3u8"

    files = stored(settings, scene, seg)
    for name in [
        "master.m3u8",
        *(f"{p}.m3u8" for p in profiles),
        *(f"{p}_0001.ts" for p in profiles),
        "thumbnail.jpg",
        "thumbnail_large.jpg",
        "storyboard.jpg",
        "storyboard.vtt",
        "source.mp4",
        "metadata.json",
    ]:
        assert name in files, sorted(files)
    assert files["source.mp4"].read_bytes() == clip.read_bytes()
    master = m3u8.loads(files["master.m3u8"].read_text())
    assert [p.uri for p in master.playlists] == [f"{p}.m3u8" for p in profiles]
    for p in master.playlists:
        assert p.stream_info.bandwidth >= p.stream_info.average_bandwidth > 0
        assert p.stream_info.codecs.endswith(",mp4a.40.2")
    variants = {}
    for profile in profiles:
        pl = m3u8.loads(files[f"{profile}.m3u8"].read_text())
        assert pl.is_endlist and pl.playlist_type == "vod"
        assert [s.uri for s in pl.segments] == [
            f"{profile}_{i:04d}.ts" for i in range(1, len(pl.segments) + 1)
        ]
        variants[profile] = [s.duration for s in pl.segments]
        for s in pl.segments:
            assert s.uri in files
    assert variants[profiles[0]] == variants[profiles[1]]
    assert abs(sum(variants[profiles[0]]) - 9.0) < 0.1

    meta = json.loads(files["metadata.json"].read_text())
    assert meta["segmentId"] == seg and meta["sceneId"] == scene and meta["sequence"] == 1
    assert meta["fileSize"]["source"] == files["source.mp4"].stat().st_size
    for profile in profiles:
        ts = sum(p.stat().st_size for n, p in files.items() if n.startswith(profile + "_"))
        assert meta["fileSize"][profile] == ts
    total = sum(p.stat().st_size for n, p in files.items() if n != "metadata.json")
    assert meta["fileSize"]["total"] == total
    assert meta["files"]["variants"] == {p: f"{p}.m3u8" for p in profiles}
    # the stored storyboard.vtt is the very document the origin serves for the clip
    r = await client.get(f"/v/{scene}/{seg}/storyboard.vtt")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/vtt")
    assert await r.read() == files["storyboard.vtt"].read_bytes()
    # internal artefacts kept beside the upload
    job_dir = settings.storage_root / settings.internal_bucket / "jobs" / accepted["jobId"]
    assert (job_dir / "transcode_log.txt").is_file()
    assert list((job_dir / "frames").glob("*.jpg"))
    # the poster of the scene is the first clip's large thumbnail
    poster = settings.storage_root / settings.assets_bucket / "scenes" / scene / "poster.jpg"
    assert poster.read_bytes() == files["thumbnail_large.jpg"].read_bytes()
    # the stitched scene now plays
    r = await client.get(f"/v/{scene}/master.m3u8")
    assert r.status == 200
    # where each rendition's first frame is presented on the MPEG-TS clock is recorded
    # (issue 27: the subtitles' X-TIMESTAMP-MAP), as ffprobe reads it
    pool = await db.connect_pool(settings.database_url, size=1)
    try:
        rows = await pool.fetch(
            "SELECT r.profile, r.first_pts, s.generation FROM renditions r "
            "JOIN segments s ON s.id = r.segment_id WHERE s.id = $1",
            seg,
        )
    finally:
        await pool.close()
    assert rows
    for row in rows:
        first = stored(settings, scene, seg)[
            layout.media_segment_name(row["profile"], 1, row["generation"])
        ]
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-of", "json", "-show_streams", str(first)],
            capture_output=True,
            check=True,
        )
        streams = json.loads(probe.stdout)["streams"]
        video = next(st for st in streams if st["codec_type"] == "video")
        assert row["first_pts"] == video["start_pts"] > 0, (row, streams)


BAD_INPUTS = ["truncated", "text", "png", "hls", "ffconcat", "zeros"]


async def test_bad_inputs_fail_readably_and_publish_nothing(
    origin_client, settings, run_workers, clips, tmp_path
):
    client = origin_client
    scene, (user,) = await new_scene(client)
    secret = clips.get(width=320, height=240, duration=2)
    good = clips.get(width=320, height=180, duration=2)
    bodies = {
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "text": b"Once upon a time there was a signal.\n" * 50,
        "png": subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=64x64",
                "-frames:v",
                "1",
                "-f",
                "image2pipe",
                "-c:v",
                "png",
                "-",
            ],
            capture_output=True,
            check=True,
        ).stdout,
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n".encode(),
        "ffconcat": f"ffconcat version 1.0\nfile '{secret}'\n".encode(),
        "zeros": b"\x00" * 4096,
    }
    segs = {}
    for kind in BAD_INPUTS:
        path = tmp_path / f"{kind}.mp4"
        path.write_bytes(bodies[kind])
        segs[kind] = (await upload(client, scene, user, path))["segmentId"]
    ok = (await upload(client, scene, user, good))["segmentId"]
    run_workers()
    for kind, seg in segs.items():
        done = await wait_done(client, seg)
        assert done["status"] == "failed", (kind, done)
        assert done["error"] and "Traceback" not in done["error"], (kind, done)
        # no server path reaches the (unauthenticated) status answer
        assert "/tmp/" not in done["error"] and str(settings.storage_root) not in done["error"]
        assert len(done["error"]) < 500
        assert stored(settings, scene, seg) == {}, kind
    # the worker is alive and still does good work
    assert (await wait_done(client, ok))["status"] == "ready"
    r = await client.get(f"/v/{scene}/{settings.ladder[0].name}.m3u8")
    body = await r.text()
    assert body.count("#EXT-X-DISCONTINUITY") == 0
    assert ok in body and all(seg not in body for seg in segs.values())


# One 360p rung and a 48 s clip: a transcode of a few seconds even on a fast machine,
# long enough to be seen at 20% and killed before it ends, and for the second worker's
# ffmpeg time to pass a second; a fraction of the 720p+1080p ladder's cost.
ONE_360P_RUNG = (LadderRung("360p", 640, 360, 800_000),)


async def lease_lapsed(settings, job_id: str, timeout: float = 30.0) -> None:
    """Wait until the running job's lease has expired (its worker is gone and renews
    it no more): the next reaper pass of any worker queues it again."""
    pool = await db.connect_pool(settings.database_url, size=1)

    async def lapsed() -> bool:
        row = await pool.fetchrow(
            "SELECT status, lease_expires_at < now() AS lapsed FROM jobs WHERE id = $1", job_id
        )
        assert row is not None and row["status"] == "running", row
        return bool(row["lapsed"])

    try:
        await until(lapsed, timeout, f"job {job_id}'s lease lapsed", step=0.1)
    finally:
        await pool.close()


@pytest.mark.slow
@pytest.mark.parametrize("ladder", [ONE_360P_RUNG], ids=["360p"])
async def test_worker_killed_mid_transcode_is_finished_by_another(origin_client, settings, clips):
    client = origin_client
    scene, (user,) = await new_scene(client)
    clip = clips.get(width=640, height=360, fps=30, duration=48)
    seg = (await upload(client, scene, user, clip))["segmentId"]
    metrics_port = free_port()
    first = worker_process(settings, TIMELINE_INTERVAL="2", WORKER_METRICS_PORT=str(metrics_port))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = await (await client.get(f"/api/v1/segments/{seg}")).json()
            if body["progress"] >= 0.2:
                break
            await asyncio.sleep(0.2)
        # stopped, it can publish nothing more: what the status says now is mid-way
        first.send_signal(signal.SIGSTOP)
        body = await (await client.get(f"/api/v1/segments/{seg}")).json()
        assert body["status"] == "processing" and body["progress"] >= 0.2, body
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # ffmpeg died with its worker (PR_SET_PDEATHSIG)
        await asyncio.sleep(0.5)
        assert not processes_mentioning(f"storyforge-{body['jobId']}"), "ffmpeg outlived its worker"
    finally:
        if first.poll() is None:
            first.kill()
    # the killed worker's 3 s lease lets this one take the job over quickly: started
    # once that lease has lapsed, its reaper's first pass (at its start) queues the job
    # again, not one half its own lease later. Its own lease is longer, so a loaded
    # machine's late renewal cannot hand the job to its second slot midway (a CI run
    # saw "lease_lost" and a third attempt)
    await lease_lapsed(settings, body["jobId"])
    second = worker_process(
        settings,
        TIMELINE_INTERVAL="2",
        WORKER_METRICS_PORT=str(metrics_port),
        JOB_LEASE_SECONDS="30",
    )
    try:
        done = await wait_done(client, seg, timeout=240)
        # the worker's own /metrics counts the job it finished and its ffmpeg time (once
        # the job is recorded finished, just after the publish the status shows)
        succeeded = 'storyforge_worker_jobs_total{kind="transcode",outcome="succeeded"} 1.0'
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            deadline = time.monotonic() + 30
            while True:
                async with http.get(url) as r:
                    text = await r.text()
                if succeeded in text or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert succeeded in text, text
        seconds = re.search(r'storyforge_worker_tool_seconds_total\{kind="transcode"\} (\S+)', text)
        assert seconds is not None and float(seconds.group(1)) > 1.0, text
        assert 'storyforge_worker_job_duration_seconds_count{kind="transcode"} 1.0' in text
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert done["status"] == "ready", done
    assert done["attempts"] == 2
    (profile,) = [r.name for r in settings.ladder]
    r = await client.get(f"/v/{scene}/{profile}.m3u8")
    pl = m3u8.loads(await r.text())
    files = stored(settings, scene, seg)
    ts = sorted(n for n in files if n.endswith(".ts"))
    # exactly the objects the published playlists name, no leftovers or duplicates
    expected = sorted(f"{profile}_{i:04d}.ts" for i in range(1, len(pl.segments) + 1))
    assert ts == expected
