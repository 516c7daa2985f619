"""`storyforge jobs list|show|retry|cancel` as an operator runs it (a process on
DATABASE_URL for the table, the exit statuses and a cancel; the rest in this process), on a database of its own (`fresh_db`, migrated here): the table and
JSON, the refusals and exit statuses, and a running job cancelled under its worker,
whose fenced publish then fails."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from core import catalog, db, exports, layout, lifecycle, outbox, queue
from core.settings import DEFAULT_LADDER, Settings
from core.storage import open_configured_storage
from origin.ingest import intake
from storyforge import cli
from storyforge import jobs as storyforge_jobs
from storyforge.jobs import CANCEL_REASON
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, make_clip

STORYFORGE = [sys.executable, "-m", "storyforge.cli", "jobs"]


@pytest.fixture
def pool(fresh_pool: asyncpg.Pool) -> asyncpg.Pool:
    return fresh_pool


def _env(dsn: str, storage: Path | None) -> dict[str, str]:
    env = {"DATABASE_URL": dsn, "LOG_FORMAT": "text"}
    if storage is not None:
        env |= {"STORAGE": "local", "STORAGE_ROOT": str(storage)}
    return env


def command(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`storyforge jobs ARGS` as an operator runs it: a process of its own."""
    return subprocess.run(
        [*STORYFORGE, *args],
        env={**os.environ, **_env(dsn, None)},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def jobs(
    dsn: str, *args: str, storage: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The same in this process (a process start costs seconds on a busy machine):
    the command's own parser and `storyforge.jobs.run`, as `main` calls them."""
    settings = Settings.from_env(_env(dsn, storage))
    parsed = cli._parser().parse_args(["jobs", *args])
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return storyforge_jobs.run(settings, parsed)

    code = await asyncio.to_thread(call)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


async def clip_job(pool: asyncpg.Pool) -> tuple[str, str, str]:
    """A scene, a processing clip and its queued transcode job, as an upload makes them."""
    async with pool.acquire() as conn:
        user = await catalog.create_user(conn, "op-" + uuid.uuid4().hex[:8])
        scene = await catalog.create_scene(conn, "Operators")
        segment, job = layout.new_id("seg"), layout.new_id("job")
        async with conn.transaction():
            await intake.segment_and_transcode(
                conn,
                scene_id=scene.id,
                segment_id=segment,
                job_id=job,
                sequence=None,
                contributor=user.id,
                max_attempts=3,
            )
    return scene.id, segment, job


async def keep_upload(settings: Settings, job_id: str, data: bytes) -> None:
    """Store a transcode's upload where the upload API keeps it."""
    storage = await open_configured_storage(settings)
    try:
        await storage.ensure_buckets(settings.buckets)
        await storage.put(
            settings.internal_bucket,
            layout.upload_key(job_id),
            data,
            content_type="video/mp4",
            cache_control="no-store",
            tags={"type": "internal"},
        )
    finally:
        await storage.aclose()


async def test_list_show_and_refusals(fresh_db, pool, tmp_path):
    scene, segment, job_id = await clip_job(pool)
    other = await queue.enqueue(pool, "expire_upload", {"upload_id": "upl_000000000000"})

    table = command(fresh_db, "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "kind",
        "status",
        "attempts",
        "scene",
        "updated",
        "last",
        "error",
    ]
    assert [ln.split()[0] for ln in lines[1:]] == [other.id, job_id]  # newest first
    assert lines[2].split()[1:5] == ["transcode", "queued", "0/3", scene]

    listed = await jobs(fresh_db, "list", "--kind", "transcode", "--scene", scene, "--json")
    assert listed.returncode == 0, listed.stderr
    (only,) = json.loads(listed.stdout)
    assert only["id"] == job_id and only["segment_id"] == segment and only["status"] == "queued"
    assert only["payload"]["upload_key"] == layout.upload_key(job_id)
    assert json.loads((await jobs(fresh_db, "list", "--status", "dead", "--json")).stdout) == []

    # a failed attempt, then the job shown whole
    claimed = await queue.claim(pool, ["transcode"], worker="op-test", lease_seconds=30)
    assert claimed is not None and claimed.id == job_id
    await queue.fail_permanent(
        pool, job_id, str(claimed.lease_token), "not a video container (hls)"
    )
    await pool.execute(  # an error quoting an upload's bytes: a terminal escape sequence
        "UPDATE jobs SET errors = errors || jsonb_build_array(jsonb_build_object("
        "'attempt', 0, 'at', 'then', 'error', $2::text)) WHERE id = $1",
        job_id,
        "bad name \x1b]0;owned\x07",
    )
    async with pool.acquire() as conn:
        await catalog.fail_segment(conn, segment, "not a video container (hls)", webhooks=())
    shown = await jobs(fresh_db, "show", job_id)
    assert shown.returncode == 0, shown.stderr
    fields = dict(ln.split(None, 1) for ln in shown.stdout.splitlines() if ln[:1] != " ")
    assert fields["kind"] == "transcode" and fields["status"] == "failed"
    assert fields["attempts"] == "1 of 3" and fields["lease"] == "none"
    assert fields["last"] == "error  not a video container (hls)"
    assert fields["clip"] == "failed: not a video container (hls)"
    assert "attempt 1 at " in shown.stdout and shown.stdout.count("not a video container") == 3
    assert "attempt 0 at then: bad name ?]0;owned?" in shown.stdout and "\x1b" not in shown.stdout
    as_json = json.loads((await jobs(fresh_db, "show", job_id, "--json")).stdout)
    assert as_json["errors"][0]["error"] == "not a video container (hls)"
    assert as_json["errors"][1]["error"] == "bad name \x1b]0;owned\x07"  # JSON escapes it
    assert as_json["subject"] == {
        "segment_status": "failed",
        "segment_error": as_json["last_error"],
    }

    # refusals: one line on stderr, exit status 1; bad arguments: argparse's 2
    for args, why in [
        (("show", "job_000000000000"), "no job job_000000000000"),
        (("retry", other.id), f"job {other.id} is queued: only failed or dead jobs are retried"),
        (("cancel", "job_000000000000"), "no job job_000000000000"),
    ]:
        out = await jobs(fresh_db, *args)
        assert (out.returncode, out.stderr.strip()) == (1, f"storyforge jobs: {why}"), out
    bad = command(fresh_db, "show", "../etc/passwd")
    assert bad.returncode == 2 and "not a job id: '../etc/passwd'" in bad.stderr
    down = command("postgresql://127.0.0.1:9/none", "list")
    assert down.returncode == 2
    assert down.stderr.startswith("storyforge: cannot connect to the database"), down.stderr

    # retry: refused while the clip's upload is not kept; then queued again with
    # attempts reset, the clip processing again
    root = tmp_path / "storage"
    gone = await jobs(fresh_db, "retry", job_id, storage=root)
    assert gone.returncode == 1
    assert gone.stderr.strip().endswith("the clip's upload is no longer kept; upload it again")
    await keep_upload(
        Settings.from_env({}, database_url=fresh_db, storage_root=root), job_id, b"clip"
    )
    again = await jobs(fresh_db, "retry", job_id, storage=root)
    assert again.returncode == 0, again.stderr
    job = await queue.get_job(pool, job_id)
    assert job is not None and (job.status, job.attempts, job.finished_at) == ("queued", 0, None)
    assert len(job.errors) == 2  # kept
    assert (await catalog.segment_status(pool, segment) or {})["status"] == "processing"


async def test_a_clip_whose_worker_is_lost_on_its_last_attempt_fails(fresh_db, pool, tmp_path):
    """A transcode whose worker is lost on each of its attempts: the last lease's expiry
    makes the job dead and, in the reaper's transaction, fails its clip with a reason
    and a segment.failed event (it said `processing` for good); an operator's retry
    makes it processing again."""
    _scene, segment, job_id = await clip_job(pool)  # 3 attempts
    hooks = ("http://127.0.0.1:9/hook",)

    def on_dead(conn: asyncpg.Connection, job: queue.Job):
        return lifecycle.lost_for_good(conn, job, webhooks=hooks)

    for attempt in (1, 2, 3):
        claimed = await queue.claim(pool, ["transcode"], worker="lost", lease_seconds=0.05)
        assert claimed is not None and (claimed.id, claimed.attempts) == (job_id, attempt)
        await asyncio.sleep(0.1)  # the worker is gone: nobody renews the lease
        (reaped,) = await queue.requeue_expired(pool, on_dead)
        clip = await catalog.segment_status(pool, segment) or {}
        if attempt < 3:
            assert (reaped.status, clip["status"]) == ("queued", "processing")
    assert (reaped.status, reaped.last_error) == ("dead", "lease expired (worker lost)")
    reason = "transcoding failed after 3 attempts: lease expired (worker lost)"
    assert (clip["status"], clip["error"]) == ("failed", reason)
    (event,) = await pool.fetch("SELECT payload FROM webhook_events WHERE type = 'segment.failed'")
    assert json.loads(event["payload"])["data"]["error"] == reason
    assert await queue.requeue_expired(pool, on_dead) == []  # once

    root = tmp_path / "storage"
    await keep_upload(
        Settings.from_env({}, database_url=fresh_db, storage_root=root), job_id, b"clip"
    )
    assert (await jobs(fresh_db, "retry", job_id, storage=root)).returncode == 0
    assert (await catalog.segment_status(pool, segment) or {})["status"] == "processing"


async def test_cancel_running_job_fences_its_worker_out(fresh_db, pool):
    _scene, segment, job_id = await clip_job(pool)
    claimed = await queue.claim(pool, ["transcode"], worker="op-test", lease_seconds=30)
    assert claimed is not None and claimed.id == job_id and claimed.lease_token
    token = claimed.lease_token

    out = command(fresh_db, "cancel", job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{job_id} (transcode) cancelled"
    job = await queue.get_job(pool, job_id)
    assert job is not None and job.status == "cancelled"
    assert job.last_error == "cancelled by an operator (storyforge jobs cancel)"
    assert job.lease_token == token  # kept until the worker lets go: holders() sees it
    clip = await catalog.segment_status(pool, segment) or {}
    assert (clip["status"], clip["error"]) == ("failed", job.last_error)
    # the worker's writes are fenced out: no heartbeat, no publish, no completion
    assert not await queue.heartbeat(pool, job_id, token, lease_seconds=30)
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(queue.LeaseLost):
            await queue.lock_lease(conn, job_id, token)
    with pytest.raises(queue.LeaseLost):
        await queue.complete(pool, job_id, token)
    assert await queue.let_go(pool, job_id, token)

    # a cancelled job is final: neither cancelled again nor retried
    for action in ("cancel", "retry"):
        refused = await jobs(fresh_db, action, job_id)
        assert refused.returncode == 1 and f"job {job_id} is cancelled" in refused.stderr


async def test_cancel_and_retry_keep_exports_and_deliveries_consistent(fresh_db, pool):
    scene, _segment, _job = await clip_job(pool)
    async with pool.acquire() as conn:
        export_job = await queue.enqueue(conn, "export", {"scene_id": scene}, scene_id=scene)
        export_id = layout.new_id("exp")
        await conn.fetchrow(
            db.q("export_insert"), export_id, scene, "720p", 1, export_job.id, None, None
        )
        async with conn.transaction():
            await outbox.emit(
                conn, ["http://127.0.0.1:9/a"], "scene.deleted", scene_id=scene, data={}
            )
            await outbox.emit(
                conn, ["http://127.0.0.1:9/a"], "scene.deleted", scene_id=scene, data={}
            )
    (first_hook,) = json.loads((await jobs(fresh_db, "list", "--kind", "webhook", "--json")).stdout)

    # a queued webhook job cancelled: its delivery is dead and the next one gets a job
    assert (await jobs(fresh_db, "cancel", first_hook["id"])).returncode == 0
    hooks = json.loads((await jobs(fresh_db, "list", "--kind", "webhook", "--json")).stdout)
    assert sorted(h["status"] for h in hooks) == ["cancelled", "queued"]
    shown = json.loads((await jobs(fresh_db, "show", first_hook["id"], "--json")).stdout)
    assert shown["subject"]["delivery_status"] == "dead"

    # an export that failed: retried, it is processing again; cancelled, failed again
    claimed = await queue.claim(pool, ["export"], worker="op-test", lease_seconds=30)
    assert claimed is not None and claimed.id == export_job.id and claimed.lease_token
    await queue.fail_permanent(pool, claimed.id, claimed.lease_token, "the scene has no clip")
    async with pool.acquire() as conn:
        await exports.fail(conn, export_id, "the scene has no clip", webhooks=())
    assert (await jobs(fresh_db, "retry", export_job.id)).returncode == 0
    assert await pool.fetchval("SELECT status FROM exports WHERE id = $1", export_id) == (
        "processing"
    )
    assert (await jobs(fresh_db, "cancel", export_job.id)).returncode == 0
    row = await pool.fetchrow("SELECT status, error FROM exports WHERE id = $1", export_id)
    assert (row["status"], row["error"]) == ("failed", CANCEL_REASON)
    # a dead webhook delivery is not re-sent by hand; a delete_scene job is not cancelled
    deleting = await queue.enqueue(pool, "delete_scene", {"scene_id": scene}, scene_id=scene)
    refused = await jobs(fresh_db, "cancel", deleting.id)
    assert refused.returncode == 1 and "deletes a scene" in refused.stderr


async def _kept(_key: str) -> bool:
    return True


async def test_a_cancel_racing_a_publish_waits_for_it_and_is_decided_on_its_outcome(pool):
    """The cancel takes the job row first, as a publish does: while a worker's
    publishing transaction holds its fence, the cancel waits, then refuses the job the
    publish completed (it neither cancels a published job nor fails its clip)."""
    _scene, segment, job_id = await clip_job(pool)
    claimed = await queue.claim(pool, ["transcode"], worker="op-test", lease_seconds=30)
    assert claimed is not None and claimed.lease_token
    async with pool.acquire() as worker, pool.acquire() as operator:
        publish = worker.transaction()
        await publish.start()
        await queue.lock_lease(worker, job_id, claimed.lease_token)  # the publish's fence
        cancel = asyncio.create_task(
            lifecycle.cancel_job(operator, job_id, reason=CANCEL_REASON, webhooks=())
        )
        await asyncio.sleep(0.3)
        assert not cancel.done()  # waiting for the job row
        await worker.execute(
            "UPDATE segments SET status = 'ready', duration = 1 WHERE id = $1", segment
        )
        await queue.complete(worker, job_id, claimed.lease_token)
        await publish.commit()
        with pytest.raises(lifecycle.Declined) as refused:
            await cancel
    assert str(refused.value) == (
        f"job {job_id} is succeeded: only queued, running or failed jobs are cancelled"
    )
    assert (await catalog.segment_status(pool, segment) or {})["status"] == "ready"


async def test_retries_of_one_clip_at_once_queue_it_once(pool):
    """Two retries of a failed clip at once (the API's and an operator's): one queues
    the transcode again; the other, decided on the locked row, finds it queued."""
    _scene, segment, job_id = await clip_job(pool)
    claimed = await queue.claim(pool, ["transcode"], worker="op-test", lease_seconds=30)
    assert claimed is not None and claimed.lease_token
    await queue.fail_permanent(pool, job_id, claimed.lease_token, "not a video")
    async with pool.acquire() as conn:
        await catalog.fail_segment(conn, segment, "not a video", webhooks=())
    async with pool.acquire() as api, pool.acquire() as operator:
        outcomes = await asyncio.gather(
            lifecycle.retry_segment(api, segment, _kept),
            lifecycle.retry_job(operator, job_id, _kept),
            return_exceptions=True,
        )
    queued = [o for o in outcomes if isinstance(o, queue.Job)]
    declined = [str(o) for o in outcomes if isinstance(o, lifecycle.Declined)]
    assert len(queued) == 1 and queued[0].id == job_id and queued[0].status == "queued"
    assert declined in (
        ["the clip's transcode has not failed (it is queued or running)"],
        [f"job {job_id} is queued: only failed or dead jobs are retried"],
    )
    assert (await catalog.segment_status(pool, segment) or {})["status"] == "processing"


@pytest.fixture
def settings(settings, fresh_db):
    """The module's workers (run_workers) on the test's own database."""
    return dataclasses.replace(settings, database_url=fresh_db)


@pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)
# the full ladder: a transcode still running when the cancel lands (it is cut short)
@pytest.mark.parametrize("ladder", [DEFAULT_LADDER], ids=["full-ladder"])
async def test_cancel_stops_a_real_transcode_before_it_publishes(
    fresh_db, pool, settings, run_workers, tmp_path
):
    scene, segment, job_id = await clip_job(pool)
    # a 720p source (a clip smaller than a rung gets no rendition of it) long enough that
    # its transcode cannot finish before the cancel lands; killed early
    clip = make_clip(tmp_path / "long.mp4", width=1280, height=720, fps=15, duration=20)
    await keep_upload(settings, job_id, clip.read_bytes())
    run_workers()
    deadline = time.monotonic() + 60
    while (job := await queue.get_job(pool, job_id)) and job.progress <= 0.02:  # ffmpeg runs
        assert job.status in ("queued", "running") and time.monotonic() < deadline, job
        await asyncio.sleep(0.1)

    assert (await jobs(fresh_db, "cancel", job_id)).returncode == 0
    while (job := await queue.get_job(pool, job_id)) and job.lease_token is not None:
        assert time.monotonic() < deadline, "the worker never let go of its cancelled job"
        await asyncio.sleep(0.1)  # it does once its handler (and ffmpeg) stopped
    assert job is not None and (job.status, job.progress < 1) == ("cancelled", True)
    state = await catalog.segment_status(pool, segment) or {}
    assert (state["status"], state["error"]) == ("failed", CANCEL_REASON)
    assert (
        await pool.fetchval("SELECT count(*) FROM renditions WHERE segment_id = $1", segment) == 0
    )
    published = settings.storage_root / settings.videos_bucket / scene / segment
    assert not published.exists() or not any(published.iterdir())
