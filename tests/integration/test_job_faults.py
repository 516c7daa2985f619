"""Jobs under faults (issue 14): a worker SIGKILLed in the middle of every kind of job
(transcode, export, delete_scene, remove_segment, webhook, expire_upload) is finished
exactly once by another worker, with no ffmpeg left behind and its
temporary directory removed; a database restart while jobs end records their real
outcome (not "lease expired"); a storm of killed connections during a transcode does
not stop it; an ffmpeg whose input stalls is killed by the stall timeout; a stream
declaring 7680x4320 over 64x64 of data is refused. Only loopback is contacted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core import db, layout, queue
from core.settings import DEFAULT_LADDER
from origin import keys
from origin.app import create_app
from tests.helpers.clips import FFMPEG, HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_PAIR, make_clip
from tests.helpers.exports import scene_of_copies, wait_export
from tests.helpers.polling import until
from tests.helpers.scenes import API_TOKEN, new_scene, tus_create, upload, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import (
    child_pids,
    free_port,
    processes_mentioning,
    stop_mid_job,
    worker_process,
)
from tests.helpers.webhooks import SECRET, Receiver
from tests.helpers.workers import running_workers
from workers.media import ffmpeg
from workers.runtime.loop import JobContext, run_worker, sweep_workdirs

pytestmark = pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)


@pytest.fixture
def ladder():
    """The full ladder: the transcodes here must still run while the tests act on them."""
    return DEFAULT_LADDER


TMP = Path(tempfile.gettempdir())
# statements waiting for a lock the backend $1 holds (asked from another connection: a
# transaction sees pg_stat_activity as it was when it first looked)
BLOCKED_BY = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))"


def workdirs(job_id: str) -> list[Path]:
    return list(TMP.glob(f"storyforge-{job_id}-*"))


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@contextlib.contextmanager
def worker(settings, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`storyforge worker` in its own process, SIGKILLed at the end if still running."""
    proc = worker_process(settings, *args, **env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill(proc)


async def hold_encoder(pool: asyncpg.Pool, job_id: str, progress: float, timeout=90.0) -> int:
    """Run job `job_id`'s encoding ffmpeg (the one running libx264) 10 ms in every
    100 ms (SIGCONT, then SIGSTOP) until the job's recorded progress reaches
    `progress`, and leave it stopped there: the transcode held mid-way however fast
    this machine encodes, while its worker runs on (its other jobs, its heartbeats).
    Returns the ffmpeg's pid; SIGKILL its worker soon (the ffmpeg dies with it)."""
    deadline = time.monotonic() + timeout
    pid = None
    while pid is None:
        found = processes_mentioning(f"storyforge-{job_id}", "libx264")
        if found:
            (pid,) = found
            os.kill(pid, signal.SIGSTOP)
        else:
            assert time.monotonic() < deadline, f"job {job_id} never ran its encoder"
            await asyncio.sleep(0.01)
    while (await pool.fetchval("SELECT progress FROM jobs WHERE id=$1", job_id)) < progress:
        assert time.monotonic() < deadline, f"job {job_id} never reached {progress}"
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(0.09)
    return pid


async def kill_mid_job(proc: subprocess.Popen[bytes], job_id: str) -> None:
    """SIGKILL the worker running `job_id`: no cleanup code of its runs; its ffmpeg
    children (named after the job's working directory) die with it."""
    kill(proc)
    await asyncio.sleep(0.3)
    assert not processes_mentioning(f"storyforge-{job_id}"), "ffmpeg outlived its worker"


@contextlib.asynccontextmanager
async def origin(settings) -> AsyncIterator[TestClient]:
    async with TestClient(OriginTestServer(create_app(settings))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        yield client


@contextlib.asynccontextmanager
async def stalling_receiver() -> AsyncIterator[tuple[str, Receiver, list[str], asyncio.Event]]:
    """A webhook receiver whose very first request hangs (its id is noted in `cut`)
    until `release` is set: a delivery in flight when its worker is killed."""
    receiver, cut, release = Receiver(), [], asyncio.Event()

    async def hook(request: web.Request) -> web.StreamResponse:
        if not cut:
            cut.append(request.headers.get("webhook-id", ""))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 60)
            return web.Response(status=200)  # nobody listens any more
        return await receiver.handle(request)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", receiver, cut, release
    finally:
        release.set()
        await runner.cleanup()


@pytest.mark.slow
async def test_a_worker_killed_in_each_job_kind_is_finished_once_by_another(
    settings, tmp_path
) -> None:
    async with stalling_receiver() as (url, receiver, cut, release):
        # two small rungs: a publish of several renditions (once), at a fraction of the
        # full ladder's cost; the transcode is held mid-way (`hold_encoder`), however
        # fast it would run
        s = dataclasses.replace(
            settings,
            ladder=SMALL_PAIR,
            webhook_urls=(url,),
            webhook_secret=SECRET,
            webhook_allow_private=True,
        )
        env = {
            "WEBHOOK_URLS": url,
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "WEBHOOK_TIMEOUT": "60",
            "TIMELINE_INTERVAL": "2",
            "EXPORT_FETCH_CONCURRENCY": "1",
        }
        async with origin(s) as client:
            pool = client.server.app[keys.POOL]
            # 360p: a source smaller than a rung gets no rendition of it (issue 26), and
            # the export below is of the 360p rung
            clip = make_clip(tmp_path / "a.mp4", width=640, height=360, fps=30, duration=8)
            # Two clips whose transcode jobs the test claims itself and holds, as a worker
            # still writing would: deleting their scene / removing one of them then
            # leaves delete_scene and remove_segment waiting for the holders (running).
            doomed, (u2,) = await new_scene(client)
            kept, (u3,) = await new_scene(client)
            held = []
            for scene, user in ((doomed, u2), (kept, u3)):
                seg = (await upload(client, scene, user, clip))["segmentId"]
                job = await queue.claim(pool, ["transcode"], worker="holder", lease_seconds=120)
                assert job is not None and job.segment_id == seg
                held.append(job)
            r = await client.delete(f"/api/v1/scenes/{doomed}", headers=client.headers_auth)
            assert r.status == 202
            delete_job = (await r.json())["jobId"]
            r = await client.delete(
                f"/api/v1/segments/{held[1].segment_id}", headers=client.headers_auth
            )
            assert r.status == 202
            remove_job = (await r.json())["jobId"]
            scene, (user,) = await new_scene(client)
            up = await upload(client, scene, user, clip)
            seg, transcode_job = up["segmentId"], up["jobId"]
            # a tus upload past its expiry, whose row the test keeps locked: its
            # expire_upload job waits on the lock (running)
            expire_job, locker = await expired_upload(client, pool, scene, user)
            locker_pid = locker.get_server_pid()

            with worker(s, "--concurrency", "6", **env) as first:
                # the transcode held at a tenth while the other jobs get in flight
                encoder = await hold_encoder(pool, transcode_job, 0.1)

                async def all_in_flight() -> bool:
                    rows = await pool.fetch(
                        "SELECT id, status, progress FROM jobs WHERE id = ANY($1)",
                        [delete_job, remove_job, transcode_job, expire_job],
                    )
                    state = {r["id"]: (r["status"], r["progress"]) for r in rows}
                    waiting = await pool.fetchval(BLOCKED_BY, locker_pid)
                    progressed = {
                        transcode_job: 0.1,
                        delete_job: 0.01,
                        remove_job: 0.01,
                        expire_job: 0,
                    }
                    return (
                        bool(cut)
                        and waiting > 0
                        and all(
                            st == "running" and pct >= progressed[j]
                            for j, (st, pct) in state.items()
                        )
                    )

                await until(all_in_flight, 90, "every job in flight")
                assert encoder in child_pids(first.pid), "the transcode's ffmpeg runs"
                assert any("ffmpeg" in cmd for cmd in child_pids(first.pid).values())
                assert workdirs(transcode_job), "the transcode has a working directory"
                await kill_mid_job(first, transcode_job)
            dead_dirs = workdirs(transcode_job)
            assert dead_dirs, "a SIGKILLed worker cleans nothing up"
            release.set()
            for job in held:  # the holders stop writing
                assert await queue.let_go(pool, job.id, job.lease_token or "")
            # the dead worker's statement waiting on the lock ends, as Postgres would end
            # it on finding its client gone (TCP keepalive), then the lock is released
            await pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE $1 = ANY (pg_blocking_pids(pid))",
                locker_pid,
            )
            await locker.close()

            with worker(s, "--concurrency", "6", **env) as second:
                done = await wait_done(client, seg, timeout=120)
                assert done["status"] == "ready", done
                for job_id in (delete_job, remove_job, transcode_job, expire_job):
                    await until(
                        lambda j=job_id: _status_is(pool, j, "succeeded"), 60, f"{job_id} done"
                    )
                hook_job = await pool.fetchval(
                    "SELECT job_id FROM webhook_deliveries WHERE event_id = $1", cut[0]
                )
                await until(lambda: _status_is(pool, hook_job, "succeeded"), 60, "delivered")
                for job_id in (delete_job, remove_job, transcode_job, hook_job, expire_job):
                    row = await pool.fetchrow(
                        "SELECT attempts, errors FROM jobs WHERE id=$1", job_id
                    )
                    assert row["attempts"] == 2, (job_id, row)
                # the second worker swept the dead one's directory (and removes its own
                # after publishing: the job may show succeeded a moment before that)
                assert not any(p.exists() for p in dead_dirs), "the dead worker's directory"
                await until(
                    lambda: asyncio.sleep(0, not workdirs(transcode_job)), 10, "its own removed"
                )

                # finished exactly once: one publish, its files exactly the playlists'
                storage = client.server.app[keys.STORAGE]
                names = sorted(
                    [
                        o.key.rsplit("/", 1)[1]
                        async for o in storage.list(
                            s.videos_bucket, layout.segment_prefix(scene, seg)
                        )
                        if o.key.endswith(".ts")
                    ]
                )
                r = await client.get(f"/v/{scene}/{seg}/360p.m3u8")
                segments = (await r.text()).count("#EXTINF")
                assert names == sorted(
                    f"{p}_{i:04d}.ts" for p in ("180p", "360p") for i in range(1, segments + 1)
                )
                ready = await pool.fetchval(
                    "SELECT count(*) FROM webhook_events WHERE type = 'segment.ready' "
                    "AND payload->'data'->>'segmentId' = $1",
                    seg,
                )
                assert ready == 1
                assert await pool.fetchval("SELECT count(*) FROM scenes WHERE id=$1", doomed) == 0
                gone = await pool.fetchval(
                    "SELECT count(*) FROM segments WHERE id=$1", held[1].segment_id
                )
                assert gone == 0
                assert receiver.processed.keys() >= {cut[0]}  # the cut delivery, once more
                assert (
                    await pool.fetchval(
                        "SELECT u.status FROM uploads u JOIN jobs j "
                        "ON j.dedupe_key = 'expire_upload:' || u.id WHERE j.id = $1",
                        expire_job,
                    )
                    == "expired"
                )

                # export: the second worker is killed while it joins a scene of
                # eight copies of the clip
                long_scene, _ = await scene_of_copies(s, scene, [seg] * 8, user)
                r = await client.post(
                    f"/api/v1/scenes/{long_scene}/export",
                    json={"quality": "360p"},
                    headers=client.headers_auth,
                )
                assert r.status == 202
                started = await r.json()
                export_job = started["jobId"]

                fed = (
                    sum(
                        p.stat().st_size
                        for p in (s.storage_root / s.videos_bucket / long_scene).rglob("360p_*.ts")
                    )
                    // 10
                )  # a tenth of the scene: mid-export, however fast this machine is
                await stop_mid_job(second, export_job, fed=fed)
                row = await pool.fetchrow("SELECT status FROM jobs WHERE id=$1", export_job)
                assert row["status"] == "running", row
                await kill_mid_job(second, export_job)
            assert workdirs(export_job), "the killed export left its directory"
            with worker(s, **env):
                exported = await wait_export(client, started["exportId"], timeout=120)
            assert exported["status"] == "ready", exported
            row = await pool.fetchrow("SELECT status, attempts FROM jobs WHERE id=$1", export_job)
            assert (row["status"], row["attempts"]) == ("succeeded", 2)
            prefix = layout.export_prefix(long_scene, started["exportId"])
            stored = sorted([o.key async for o in storage.list(s.exports_bucket, long_scene + "/")])
            assert stored == [prefix + "export_manifest.json", prefix + "full_360p.mp4"]
            assert not workdirs(export_job)


async def expired_upload(
    client: TestClient, pool: asyncpg.Pool, scene: str, user: str
) -> tuple[str, asyncpg.Connection]:
    """A tus upload made due for expiry now, and a connection holding its row locked
    (in an open transaction): its expire_upload job id and that connection."""
    url = await tus_create(client, scene, user, 1000, filename="clip.mp4")
    upload_id = url.rsplit("/", 1)[1]
    await pool.execute("UPDATE uploads SET expires_at = now() WHERE id = $1", upload_id)
    job_id = await pool.fetchval(
        "UPDATE jobs SET run_after = now() WHERE dedupe_key = $1 RETURNING id",
        f"expire_upload:{upload_id}",
    )
    locker = await asyncpg.connect(client.server.app[keys.SETTINGS].database_url)
    await locker.execute("BEGIN")
    await locker.execute("SELECT 1 FROM uploads WHERE id = $1 FOR UPDATE", upload_id)
    return job_id, locker


async def _status_is(pool: asyncpg.Pool, job_id: str, status: str) -> bool:
    return await pool.fetchval("SELECT status FROM jobs WHERE id=$1", job_id) == status


async def test_a_database_restart_while_jobs_end_records_their_real_outcome(
    pg_cluster, pg_dsn
) -> None:
    """Postgres restarts (every connection cut, refused for 2 s) just as one job
    publishes and another fails: the publish and the error are written once it is back,
    within the lease, not replaced by "lease expired (worker lost)"."""
    entered: dict[str, asyncio.Event] = {
        "webhook": asyncio.Event(),
        "expire_upload": asyncio.Event(),
    }
    go = asyncio.Event()

    async def publishing(ctx: JobContext) -> None:
        entered["webhook"].set()
        await go.wait()

        async def publish() -> None:  # a fenced transaction, as every publish is
            async with ctx.pool.acquire() as conn, conn.transaction():
                await ctx.fence(conn)
                await queue.complete(conn, ctx.job_id, ctx.lease_token)

        await ctx.retrying(publish, "publish")

    async def failing(ctx: JobContext) -> None:
        entered["expire_upload"].set()
        await go.wait()
        raise ValueError("the handler's own error")

    pool = await db.connect_pool(pg_dsn, size=5)
    stop = asyncio.Event()
    try:
        ok = await queue.enqueue(pool, "webhook", {})
        bad = await queue.enqueue(pool, "expire_upload", {}, max_attempts=1)
        worker = asyncio.create_task(
            run_worker(
                pool,
                {"webhook": publishing, "expire_upload": failing},
                concurrency=2,
                lease_seconds=15,
                poll_interval=0.2,
                grace_seconds=5,
                stop=stop,
                name="restart-worker",
            )
        )
        async with asyncio.timeout(30):
            for event in entered.values():
                await event.wait()
        await asyncio.to_thread(pg_cluster.stop)
        go.set()
        await asyncio.sleep(2)
        await asyncio.to_thread(pg_cluster.start, fast=True)
        deadline = time.monotonic() + 12  # well within the 15 s lease
        while True:
            a, b = await queue.get_job(pool, ok.id), await queue.get_job(pool, bad.id)
            assert a is not None and b is not None
            if a.status == "succeeded" and b.status == "dead":
                break
            assert time.monotonic() < deadline, (a, b)
            await asyncio.sleep(0.2)
        assert a.errors == [] and a.attempts == 1
        assert b.last_error == "ValueError: the handler's own error", b.errors
        stop.set()
        await asyncio.wait_for(worker, 30)
        await pool.execute("DELETE FROM jobs WHERE id = ANY($1)", [ok.id, bad.id])
    finally:
        stop.set()
        await pool.close()


async def test_connections_killed_during_a_transcode_do_not_stop_it(
    origin_client, settings, tmp_path
) -> None:
    """Every connection of the worker's pool is terminated (pg_terminate_backend) every
    0.3 s while it transcodes and publishes: the pool reconnects, and the clip is
    published (a retried attempt records the connection error, never a lost lease)."""
    client = origin_client
    scene, (user,) = await new_scene(client)
    clip = make_clip(tmp_path / "c.mp4", width=640, height=360, fps=25, duration=4)
    seg = (await upload(client, scene, user, clip))["segmentId"]
    name = f"jobsafe_{os.getpid()}"
    blipped = dataclasses.replace(
        settings, database_url=f"{settings.database_url}?application_name={name}"
    )
    pool = client.server.app[keys.POOL]
    killed = 0

    async def terminate() -> None:
        nonlocal killed
        while True:
            killed += await pool.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                name,
            )
            await asyncio.sleep(0.3)

    async with running_workers(blipped):
        storm = asyncio.create_task(terminate())
        try:
            done = await wait_done(client, seg, timeout=120)
        finally:
            storm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await storm
    assert done["status"] == "ready", done
    assert killed >= 3, killed
    job = await queue.latest(pool, seg, "transcode")
    assert job is not None and job.status == "succeeded"
    assert all("lease expired" not in e["error"] for e in job.errors), job.errors


async def test_an_ffmpeg_whose_input_stalls_is_killed_by_the_stall_timeout(tmp_path) -> None:
    clip = make_clip(tmp_path / "c.ts", width=320, height=240, duration=6, container="ts")
    info = await ffmpeg.probe(clip)
    fifo = tmp_path / "stalled.ts"
    os.mkfifo(fifo)
    data, release = clip.read_bytes(), threading.Event()

    def feed() -> None:  # a third of the clip, then nothing (the writer stays open)
        with contextlib.suppress(OSError), fifo.open("wb") as f:
            f.write(data[: len(data) // 3])
            f.flush()
            release.wait(30)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    started = time.monotonic()
    try:
        with pytest.raises(ffmpeg.Stalled) as raised:
            await ffmpeg.transcode(fifo, tmp_path / "out", info, stall_seconds=1.5)
    finally:
        release.set()
    assert 1.5 <= time.monotonic() - started < 10
    assert str(raised.value) == "ffmpeg made no progress for 1.5 s (input stalled?)"
    assert isinstance(raised.value, ffmpeg.TranscodeFailed)  # retried like any failure
    assert not processes_mentioning(str(fifo)), "the stalled ffmpeg was killed"
    feeder.join(5)


def crafted_picture(path: Path, audio_seconds: float = 0) -> Path:
    """Raw 64x64 pictures in an AVI whose headers declare 7680x4320 (at 2 fps: within
    the pixel-rate limit, so only the decoded picture can tell); with `audio_seconds`
    of a tone after them."""
    audio = (
        ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={audio_seconds}",
         "-c:a", "pcm_s16le"]
        if audio_seconds else []
    )  # fmt: skip
    subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", "testsrc2=size=64x64:rate=2:duration=3", *audio, "-c:v", "rawvideo",
         "-pix_fmt", "yuv420p", "-f", "avi", str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip
    data = bytearray(path.read_bytes())
    strf = data.index(b"strf") + 8  # BITMAPINFOHEADER: size, width, height
    data[strf + 4 : strf + 12] = struct.pack("<ii", 7680, 4320)
    avih = data.index(b"avih") + 8  # MainAVIHeader: width and height at 32
    data[avih + 32 : avih + 40] = struct.pack("<II", 7680, 4320)
    path.write_bytes(data)
    return path


async def test_a_stream_declaring_8k_over_64x64_of_data_is_refused(
    origin_client, settings, run_workers, tmp_path
) -> None:
    client = origin_client
    scene, (user,) = await new_scene(client)
    seg = (await upload(client, scene, user, crafted_picture(tmp_path / "8k.avi")))["segmentId"]
    run_workers()
    done = await wait_done(client, seg, timeout=60)
    assert done["status"] == "failed", done
    assert done["error"] == (
        "no picture could be decoded at the declared size 7680x4320: Invalid buffer size, "
        "packet size 6144 < expected frame_size 49766400"
    )
    storage = client.server.app[keys.STORAGE]
    assert [o async for o in storage.list(settings.videos_bucket, f"{scene}/")] == []


async def test_the_loudness_measured_beside_the_picture_check_stops_when_it_refuses(
    tmp_path,
) -> None:
    """The transcode's preflight measures the loudness while the first picture is
    checked; a refused picture is the verdict, and the measurement does not run on."""
    crafted = crafted_picture(tmp_path / "8k_with_sound.avi", audio_seconds=600)
    started = time.monotonic()
    with pytest.raises(ffmpeg.BadInput, match="^no picture could be decoded at the declared"):
        await ffmpeg.probe_and_measure(crafted, loudness=True)
    assert time.monotonic() - started < 10
    assert not processes_mentioning(str(crafted)), "the measurement was stopped"
    # an upload that passes: the same answers as probe, then the measurement
    clip = make_clip(tmp_path / "ok.mp4", width=320, height=240, duration=3)
    info, measured = await ffmpeg.probe_and_measure(clip, loudness=True)
    assert info == await ffmpeg.probe(clip)
    assert measured == await ffmpeg.measure_loudness(clip, info)
    assert await ffmpeg.probe_and_measure(clip, loudness=False) == (info, None)


async def test_only_directories_of_this_databases_unheld_jobs_are_swept(pg_dsn, tmp_path) -> None:
    pool = await db.connect_pool(pg_dsn, size=2)
    try:
        held = await queue.enqueue(pool, "webhook", {})
        claimed = await queue.claim(pool, ["webhook"], worker="alive", lease_seconds=60)
        assert claimed is not None and claimed.id == held.id
        free = await queue.enqueue(pool, "webhook", {}, delay=3600)  # queued, no lease
        unknown = layout.new_id("job")  # another installation's job sharing the directory
        dirs = {
            job_id: tmp_path / f"storyforge-{job_id}-k2x_9q1a"
            for job_id in (held.id, free.id, unknown)
        }
        for path in dirs.values():
            (path / "out").mkdir(parents=True)
            (path / "out" / "720p_0001.ts").write_bytes(b"\0" * 188)
        (tmp_path / "storyforge-voice-x1y2z3").mkdir()
        swept = await sweep_workdirs(pool, "sweeper", tmp_path)
        assert swept == [dirs[free.id]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [dirs[held.id].name, dirs[unknown].name, "storyforge-voice-x1y2z3"]
        )
        # no later test's worker may run these jobs of no real handler
        await pool.execute("DELETE FROM jobs WHERE id = ANY($1)", [held.id, free.id])
    finally:
        await pool.close()


async def test_a_capture_starting_mid_gop_passes_the_picture_check(tmp_path) -> None:
    """The first-picture check decodes key frames only: a recording cut in the middle of
    a GOP (no SPS/PPS before its first key frame) is accepted, as the transcode takes it."""
    whole = make_clip(
        tmp_path / "gop.ts", width=320, height=240, duration=6, container="ts",
        extra=["-g", "90", "-bf", "2"],
    )  # fmt: skip
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[188 * (len(data) // 188 // 4) :])  # from a quarter in, packet-aligned
    info = await ffmpeg.probe(cut)
    assert (info.coded_width, info.coded_height) == (320, 240)
