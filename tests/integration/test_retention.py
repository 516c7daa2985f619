"""Bounded tables (issue 29) on the real database: the status counts /metrics reads
follow the jobs and deliveries tables through every kind of write (and stay a few
rows once folded); history past its retention is pruned in batches, and only that:
recent rows, unfinished work, a held lease and a processing export's job stay."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from core import catalog, db, layout, outbox, queue, retention
from workers.runtime.loop import run_worker

DAY = 86_400.0
WEEK = retention.Retention(7 * DAY, 7 * DAY, DAY)


async def _counted(pool: asyncpg.Pool) -> tuple[dict, dict]:
    """What /metrics reads, without the zeros."""
    async with pool.acquire() as conn:
        jobs = {k: n for k, n in (await queue.counts(conn)).items() if n}
        deliveries = {k: n for k, n in (await outbox.delivery_counts(conn)).items() if n}
    return jobs, deliveries


async def _actual(pool: asyncpg.Pool) -> tuple[dict, dict]:
    jobs = await pool.fetch("SELECT kind, status, count(*) AS n FROM jobs GROUP BY 1, 2")
    deliveries = await pool.fetch("SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY 1")
    return (
        {(r["kind"], r["status"]): r["n"] for r in jobs},
        {r["status"]: r["n"] for r in deliveries},
    )


async def _assert_counts_true(pool: asyncpg.Pool) -> None:
    assert await _counted(pool) == await _actual(pool)
    await retention.compact(pool)
    assert await _counted(pool) == await _actual(pool)


async def _event(pool: asyncpg.Pool, scene: str, seq: int, statuses: list[str], age: float) -> str:
    """A webhook event `age` seconds old with one delivery per status."""
    event = layout.new_id("evt")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_events (id, type, scene_id, seq, payload, created_at) "
            "VALUES ($1, 'segment.ready', $2, $3, '{}', now() - make_interval(secs => $4))",
            event,
            scene,
            seq,
            age,
        )
        for i, status in enumerate(statuses):
            await conn.execute(
                "INSERT INTO webhook_deliveries (event_id, endpoint, scene_id, seq, status) "
                "VALUES ($1, $2, $3, $4, $5)",
                event,
                f"https://hooks.example/{i}",
                scene,
                seq,
                status,
            )
    return event


async def _finished(pool: asyncpg.Pool, kind: str, status: str, age: float, **more) -> str:
    job = await queue.enqueue(pool, kind, {}, **more)
    await pool.execute(
        "UPDATE jobs SET status = $2, finished_at = now() - make_interval(secs => $3) "
        "WHERE id = $1",
        job.id,
        status,
        age,
    )
    return job.id


async def test_counts_follow_every_write(fresh_pool):
    pool = fresh_pool
    assert await _counted(pool) == ({}, {})
    jobs = [await queue.enqueue(pool, kind, {}) for kind in ("transcode", "export", "webhook")]
    await _assert_counts_true(pool)
    claimed = await queue.claim(pool, ["transcode"], worker="w", lease_seconds=60)
    assert claimed is not None
    await queue.heartbeat(
        pool, claimed.id, claimed.lease_token or "", lease_seconds=60, progress=0.5
    )
    await queue.complete(pool, claimed.id, claimed.lease_token or "")
    await queue.cancel_one(pool, jobs[2].id, "nobody listens")
    await pool.execute("UPDATE jobs SET status = 'dead' WHERE id = $1", jobs[1].id)
    await _assert_counts_true(pool)
    scene = (await catalog.create_scene(pool, "Counted")).id
    await _event(pool, scene, 1, ["delivered", "queued", "waiting"], 0)
    await pool.execute("UPDATE webhook_deliveries SET status = 'dead' WHERE status = 'waiting'")
    await _assert_counts_true(pool)
    await pool.execute("DELETE FROM jobs WHERE id = $1", jobs[2].id)
    await pool.execute("DELETE FROM webhook_events")  # the deliveries cascade
    await _assert_counts_true(pool)
    await pool.execute("TRUNCATE jobs CASCADE")
    assert await _counted(pool) == ({}, {})
    # folded, the table holds one row per kind and status whatever the history
    for _ in range(50):
        job = await queue.enqueue(pool, "export", {})
        await pool.execute("UPDATE jobs SET status = 'succeeded' WHERE id = $1", job.id)
    await retention.compact(pool)
    assert await pool.fetchval("SELECT count(*) FROM status_counts") == 1
    await _assert_counts_true(pool)


async def test_prune_takes_only_history_past_retention(fresh_pool):
    pool = fresh_pool
    old, recent = 8 * DAY, 6 * DAY
    gone = [await _finished(pool, "webhook", s, old) for s in ("succeeded", "failed", "dead")]
    gone.append(await _finished(pool, "transcode", "cancelled", old))
    kept = [await _finished(pool, "webhook", "succeeded", recent)]
    kept.append((await queue.enqueue(pool, "transcode", {})).id)  # queued: never pruned
    held = await _finished(pool, "export", "cancelled", old)  # its worker holds it still
    await pool.execute(
        "UPDATE jobs SET lease_token = gen_random_uuid(), lease_expires_at = now() + '1 min' "
        "WHERE id = $1",
        held,
    )
    kept.append(held)
    scene = (await catalog.create_scene(pool, "Pruned")).id
    export_job = await _finished(pool, "export", "dead", old)  # its export reads it
    await pool.execute(
        "INSERT INTO exports (id, scene_id, quality, scene_version, job_id) "
        "VALUES ($1, $2, '720p', 1, $3)",
        layout.new_id("exp"),
        scene,
        export_job,
    )
    kept.append(export_job)

    old_done = await _event(pool, scene, 1, ["delivered", "dead"], old)
    old_pending = await _event(pool, scene, 2, ["delivered", "queued"], old)
    new_done = await _event(pool, scene, 3, ["delivered"], recent)

    user = await pool.fetchval(
        "INSERT INTO users (id, username) VALUES ($1, 'pruner') RETURNING id", layout.new_id("usr")
    )
    uploads = {}
    for name, status, expired_ago in (
        ("ended", "completed", 2 * DAY),
        ("ended_lately", "expired", 0.5 * DAY),
        ("open", "open", 2 * DAY),
    ):
        uploads[name] = layout.new_id("upl", 26)
        await pool.execute(
            "INSERT INTO uploads (id, scene_id, contributor_id, content_type, length, "
            "segment_id, job_id, multipart_id, part_size, status, expires_at) "
            "VALUES ($1, $2, $3, 'video/mp4', 10, 'seg', 'job', 'm', 5, $4, "
            "now() - make_interval(secs => $5))",
            uploads[name],
            scene,
            user,
            status,
            expired_ago,
        )

    pruned = await retention.prune(pool, WEEK, batch=2)
    assert pruned == {"jobs": len(gone), "events": 1, "uploads": 1}
    left = {r["id"] for r in await pool.fetch("SELECT id FROM jobs")}
    assert left == set(kept)
    events = {r["id"] for r in await pool.fetch("SELECT id FROM webhook_events")}
    assert events == {old_pending, new_done}
    assert (
        await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE event_id = $1", old_done)
        == 0
    )
    assert {r["id"] for r in await pool.fetch("SELECT id FROM uploads")} == {
        uploads["ended_lately"],
        uploads["open"],
    }
    await _assert_counts_true(pool)
    assert await retention.prune(pool, WEEK) == {"jobs": 0, "events": 0, "uploads": 0}


async def test_workers_prune_on_their_reaper_pass(fresh_pool):
    pool = fresh_pool
    old = await _finished(pool, "webhook", "succeeded", 8 * DAY)
    fresh = await _finished(pool, "webhook", "succeeded", 60)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(pool, {}, stop=stop, name="pruner", reap_interval=0.2, retention=WEEK)
    )
    try:
        for _ in range(100):
            if await queue.get_job(pool, old) is None:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    assert await queue.get_job(pool, old) is None
    assert await queue.get_job(pool, fresh) is not None
    await _assert_counts_true(pool)


async def test_metrics_counts_read_a_bounded_table(fresh_pool):
    """The scrape's counts sum `status_counts`, not the jobs: after a fold its plan
    reads a handful of rows however many jobs there are."""
    pool = fresh_pool
    await pool.execute(
        "INSERT INTO jobs (id, kind, status, finished_at) "
        "SELECT 'job_' || lpad(i::text, 16, '0'), 'webhook', 'succeeded', now() "
        "FROM generate_series(1, 20000) AS i"
    )
    await retention.compact(pool)
    plan = json.loads(await pool.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + db.q("job_counts")))[
        0
    ]["Plan"]

    def rows_read(node: dict) -> int:
        own = node["Actual Rows"] if "Relation Name" in node else 0
        return own + sum(rows_read(child) for child in node.get("Plans", []))

    assert rows_read(plan) <= 10
    assert (await _counted(pool))[0] == {("webhook", "succeeded"): 20000}


async def test_a_clip_whose_jobs_were_pruned_still_answers(settings):
    """After JOB_RETENTION a clip may have no job row left: its status answers from
    the segment alone (no job id, no attempts), never a 500."""
    from aiohttp.test_utils import TestClient

    from origin.app import create_app
    from tests.helpers.scenes import published_scene
    from tests.helpers.servers import OriginTestServer

    async with TestClient(OriginTestServer(create_app(settings))) as client:
        _scene, (segment, *_) = await published_scene(client, settings)
        pool = await db.connect_pool(settings.database_url, size=1)
        try:
            job = await queue.enqueue(pool, "transcode", {}, segment_id=segment)
            await pool.execute(
                "UPDATE jobs SET status = 'succeeded', finished_at = now() - interval '8 days' "
                "WHERE id = $1",
                job.id,
            )
            before = await client.get(f"/api/v1/segments/{segment}")
            assert (await before.json())["jobId"] == job.id
            await retention.prune(pool, WEEK)
        finally:
            await pool.close()
        after = await client.get(f"/api/v1/segments/{segment}")
        assert after.status == 200
        body = await after.json()
        assert (body["status"], body["jobId"], body["attempts"]) == ("ready", None, None)
