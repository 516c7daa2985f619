"""The job queue and the worker loop against a real PostgreSQL.

Each test gets a database of its own (`fresh_pool`), so no other
test's jobs can be claimed by ours or the other way round.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import asyncpg
import pytest

from core import listen, queue
from core.backoff import backoff_seconds
from core.queue import Job, LeaseLost, QueueUnavailable
from tests.helpers.polling import until
from workers.runtime.loop import JobContext, PermanentError, run_worker


@pytest.fixture
def pool(fresh_pool: asyncpg.Pool) -> asyncpg.Pool:
    return fresh_pool


async def job_status(pool: asyncpg.Pool, job_id: str, *statuses: str) -> bool:
    job = await queue.get_job(pool, job_id)
    return job is not None and job.status in statuses


async def get(pool: asyncpg.Pool, job_id: str) -> Job:
    job = await queue.get_job(pool, job_id)
    assert job is not None
    return job


def start_worker(pool: asyncpg.Pool, handlers, **kw) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    options = {"lease_seconds": 1.5, "poll_interval": 0.05, "grace_seconds": 1.0, "name": "w-test"}
    options.update(kw)
    task = asyncio.create_task(run_worker(pool, handlers, stop=stop, **options))
    return stop, task


# --- queue functions --------------------------------------------------------------


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (20, 300.0), (10_000, 300.0)]:
        values = [backoff_seconds(attempt, 2.0, 300.0, rng) for _ in range(200)]
        assert all(0.0 <= v <= ceiling for v in values)
        assert max(values) > ceiling * 0.8  # spread over the whole range
        assert min(values) < ceiling * 0.2
    assert backoff_seconds(3, base=0.0) == 0.0
    a = [backoff_seconds(5, rng=random.Random(1)) for _ in range(3)]
    assert a == [backoff_seconds(5, rng=random.Random(1))] * 3


async def test_enqueue_returns_job_and_get_job_reads_it(pool) -> None:
    job = await queue.enqueue(
        pool,
        "transcode",
        {"source": "jobs/x/raw_output.mp4", "n": 1},
        scene_id="scn_000000000001",
        segment_id="seg_000000000001",
        max_attempts=3,
    )
    assert job.id.startswith("job_") and job.kind == "transcode"
    assert job.status == "queued" and job.attempts == 0 and job.max_attempts == 3
    assert job.payload == {"source": "jobs/x/raw_output.mp4", "n": 1}
    assert job.errors == [] and job.lease_token is None and job.progress == 0
    assert await queue.get_job(pool, job.id) == job
    assert await queue.get_job(pool, "job_000000000000") is None
    with pytest.raises(ValueError):
        await queue.enqueue(pool, "nope", {})


async def test_enqueue_joins_the_callers_transaction(pool) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        job = await queue.enqueue(conn, "transcode", {}, job_id="job_aaaaaaaaaaaa")
        assert (await queue.get_job(conn, job.id)) is not None
        await tx.rollback()
    assert await queue.get_job(pool, "job_aaaaaaaaaaaa") is None
    async with pool.acquire() as conn, conn.transaction():
        await queue.enqueue(conn, "export", {"q": "720p"}, job_id="job_bbbbbbbbbbbb")
        with pytest.raises(queue.QueueError):  # a lease must be committed at once
            await queue.claim(conn, None, worker="w", lease_seconds=5)
    assert (await get(pool, "job_bbbbbbbbbbbb")).kind == "export"


async def test_two_claimers_never_get_the_same_job(pool) -> None:
    ids = {(await queue.enqueue(pool, "transcode", {"i": i})).id for i in range(50)}
    claimed: dict[str, list[str]] = {}

    async def claimer(name: str) -> None:
        async with pool.acquire() as conn:
            while job := await queue.claim(conn, ["transcode"], worker=name, lease_seconds=30):
                claimed.setdefault(job.id, []).append(name)
                assert job.status == "running" and job.attempts == 1 and job.worker == name
                await asyncio.sleep(0)

    await asyncio.gather(*(claimer(f"c{i}") for i in range(4)))
    assert set(claimed) == ids
    assert all(len(owners) == 1 for owners in claimed.values())
    assert len({o[0] for o in claimed.values()}) > 1  # the work really was shared


async def test_claim_takes_only_due_jobs_of_the_given_kinds_oldest_first(pool) -> None:
    first = await queue.enqueue(pool, "export", {})
    second = await queue.enqueue(pool, "export", {})
    other = await queue.enqueue(pool, "delete_scene", {})
    assert await queue.claim(pool, ["transcode"], worker="w", lease_seconds=5) is None
    got = await queue.claim(pool, ["export", "transcode"], worker="w", lease_seconds=5)
    assert got is not None and got.id == first.id
    # a retried job waits for its backoff
    await queue.retry_or_dead(pool, got.id, got.lease_token, "boom", backoff=60)
    got = await queue.claim(pool, ["export"], worker="w", lease_seconds=5)
    assert got is not None and got.id == second.id
    assert await queue.claim(pool, ["export"], worker="w", lease_seconds=5) is None
    got = await queue.claim(pool, None, worker="w", lease_seconds=5)
    assert got is not None and got.id == other.id


async def test_dedupe_returns_the_in_flight_job_and_allows_a_new_one_after(pool) -> None:
    a = await queue.enqueue(pool, "export", {"v": 1}, dedupe_key="export:scn_1:720p:v1")
    b = await queue.enqueue(pool, "export", {"v": 2}, dedupe_key="export:scn_1:720p:v1")
    assert b.id == a.id and b.payload == {"v": 1}
    running = await queue.claim(pool, ["export"], worker="w", lease_seconds=5)
    assert running is not None and running.id == a.id
    c = await queue.enqueue(pool, "export", {}, dedupe_key="export:scn_1:720p:v1")
    assert c.id == a.id and c.status == "running"
    # concurrent enqueues with a fresh key all land on one job
    same = await asyncio.gather(
        *(queue.enqueue(pool, "export", {}, dedupe_key="export:scn_2") for _ in range(8))
    )
    assert len({j.id for j in same}) == 1
    await queue.complete(pool, a.id, running.lease_token)
    d = await queue.enqueue(pool, "export", {}, dedupe_key="export:scn_1:720p:v1")
    assert d.id != a.id and d.status == "queued"
    n = await pool.fetchval("SELECT count(*) FROM jobs WHERE dedupe_key = 'export:scn_1:720p:v1'")
    assert n == 2


async def test_stale_lease_token_changes_nothing(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    mine = await queue.claim(pool, None, worker="w1", lease_seconds=30)
    assert mine is not None and mine.lease_token
    before = await get(pool, job.id)
    stale = str(uuid.uuid4())
    with pytest.raises(LeaseLost):
        await queue.complete(pool, job.id, stale)
    with pytest.raises(LeaseLost):
        await queue.fail_permanent(pool, job.id, stale, "x")
    with pytest.raises(LeaseLost):
        await queue.retry_or_dead(pool, job.id, stale, "x", backoff=0)
    with pytest.raises(LeaseLost):
        await queue.release(pool, job.id, stale)
    assert await queue.heartbeat(pool, job.id, stale, lease_seconds=30, progress=0.5) is False
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(LeaseLost):
            await queue.lock_lease(conn, job.id, stale)
    assert await get(pool, job.id) == before
    done = await queue.complete(pool, job.id, mine.lease_token)
    assert done.status == "succeeded" and done.progress == 1 and done.lease_token is None
    assert done.finished_at is not None
    with pytest.raises(LeaseLost):  # finished: the old token no longer fences anything
        await queue.complete(pool, job.id, mine.lease_token)


async def test_retries_then_dead_keeping_every_error(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {}, max_attempts=3)
    statuses = []
    for n in range(1, 4):
        got = await queue.claim(pool, None, worker="w", lease_seconds=30)
        assert got is not None and got.id == job.id and got.attempts == n
        after = await queue.retry_or_dead(pool, job.id, got.lease_token, f"boom {n}", backoff=0)
        statuses.append(after.status)
    assert statuses == ["queued", "queued", "dead"]
    dead = await get(pool, job.id)
    assert dead.attempts == 3 and dead.last_error == "boom 3" and dead.finished_at is not None
    assert [(e["attempt"], e["error"]) for e in dead.errors] == [
        (1, "boom 1"),
        (2, "boom 2"),
        (3, "boom 3"),
    ]
    assert all(e["at"] for e in dead.errors)
    assert await queue.claim(pool, None, worker="w", lease_seconds=30) is None


async def test_lease_expiry_requeues_and_another_worker_completes(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    lost = await queue.claim(pool, None, worker="w-dead", lease_seconds=0.3)
    assert lost is not None
    assert await queue.requeue_expired(pool) == []  # not yet expired
    await asyncio.sleep(0.4)
    requeued = await queue.requeue_expired(pool)
    assert [j.id for j in requeued] == [job.id]
    assert requeued[0].status == "queued" and requeued[0].lease_token is None
    assert requeued[0].errors[-1]["error"] == "lease expired (worker lost)"
    # the lost worker's late writes are refused
    assert not await queue.heartbeat(pool, job.id, lost.lease_token, lease_seconds=30)
    with pytest.raises(LeaseLost):
        await queue.complete(pool, job.id, lost.lease_token)

    # expiry found by a running worker's reaper; that worker completes the job
    job2 = await queue.enqueue(pool, "transcode", {"n": 2})
    await queue.claim(pool, None, worker="w-dead", lease_seconds=0.3)  # job (re-queued)
    got2 = await queue.claim(pool, None, worker="w-dead", lease_seconds=0.3)
    assert got2 is not None and got2.id == job2.id
    ran: list[str] = []

    async def handler(ctx: JobContext) -> None:
        ran.append(ctx.job.id)

    stop, task = start_worker(pool, {"transcode": handler}, reap_interval=0.1, name="w-alive")
    try:
        await until(lambda: job_status(pool, job2.id, "succeeded"))
        await until(lambda: job_status(pool, job.id, "succeeded"))
    finally:
        stop.set()
        await task
    assert sorted(ran) == sorted([job.id, job2.id])
    done = await get(pool, job.id)
    assert done.worker == "w-alive" and done.attempts == 3 and len(done.errors) == 2


async def test_expired_lease_out_of_attempts_is_dead(pool) -> None:
    job = await queue.enqueue(pool, "delete_scene", {}, max_attempts=1)
    assert await queue.claim(pool, None, worker="w", lease_seconds=0.1)
    await asyncio.sleep(0.2)
    [after] = await queue.requeue_expired(pool)
    assert after.id == job.id and after.status == "dead"
    assert after.last_error == "lease expired (worker lost)"


async def test_release_hands_back_without_consuming_an_attempt(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    got = await queue.claim(pool, None, worker="w", lease_seconds=30)
    assert got is not None
    back = await queue.release(pool, job.id, got.lease_token)
    assert back.status == "queued" and back.attempts == 0 and back.errors == []


async def test_unreachable_database_is_queue_unavailable(pool, fresh_db) -> None:
    conn = await asyncpg.connect(fresh_db)
    await conn.execute("SELECT 1")
    pid = conn.get_server_pid()
    await pool.execute("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.1)
    with pytest.raises(QueueUnavailable):
        await queue.get_job(conn, "job_000000000000")
    await conn.close()


# --- the worker loop --------------------------------------------------------------


async def test_worker_retries_with_backoff_then_dead(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {}, max_attempts=3)
    calls: list[int] = []

    async def handler(ctx: JobContext) -> None:
        calls.append(ctx.job.attempts)
        raise RuntimeError(f"ffmpeg exited 1 (attempt {ctx.job.attempts})")

    stop, task = start_worker(pool, {"transcode": handler}, backoff_base=0.05, backoff_cap=0.2)
    try:
        await until(lambda: job_status(pool, job.id, "dead"))
    finally:
        stop.set()
        await task
    dead = await get(pool, job.id)
    assert calls == [1, 2, 3]
    assert [e["error"] for e in dead.errors] == [
        f"RuntimeError: ffmpeg exited 1 (attempt {n})" for n in (1, 2, 3)
    ]
    assert "Traceback" not in dead.last_error


async def test_permanent_error_fails_at_once_with_its_reason(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {}, max_attempts=5)
    calls = 0

    async def handler(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("not a video: no video stream in upload")

    stop, task = start_worker(pool, {"transcode": handler})
    try:
        await until(lambda: job_status(pool, job.id, "failed"))
        await asyncio.sleep(0.2)  # would be picked up again if it had been retried
    finally:
        stop.set()
        await task
    failed = await get(pool, job.id)
    assert calls == 1 and failed.attempts == 1
    assert failed.last_error == "not a video: no video stream in upload"
    assert [e["error"] for e in failed.errors] == [failed.last_error]


async def test_concurrency_runs_that_many_jobs_at_once(pool) -> None:
    ids = [(await queue.enqueue(pool, "export", {"i": i})).id for i in range(5)]
    release = asyncio.Event()
    active = 0
    peak = 0

    async def handler(ctx: JobContext) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await release.wait()
        finally:
            active -= 1

    stop, task = start_worker(pool, {"export": handler}, concurrency=3)
    try:

        async def three_running() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'")
            return active == 3 and n == 3

        await until(three_running)
        await asyncio.sleep(0.2)  # no fourth job starts while three run
        assert active == 3 and peak == 3
        release.set()
        for job_id in ids:
            await until(lambda job_id=job_id: job_status(pool, job_id, "succeeded"))
    finally:
        stop.set()
        await task
    assert peak == 3


async def test_stop_lets_running_jobs_finish_within_grace(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    started = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(0.3)

    stop, task = start_worker(pool, {"transcode": handler}, grace_seconds=5)
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    done = await get(pool, job.id)
    assert done.status == "succeeded" and done.attempts == 1


async def test_job_exceeding_grace_is_handed_back(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()  # e.g. kill the ffmpeg child here
            raise

    stop, task = start_worker(pool, {"transcode": handler}, grace_seconds=0.2)
    await asyncio.wait_for(started.wait(), 5)
    # a second job queued now must not be claimed once stop is set
    later = await queue.enqueue(pool, "transcode", {})
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - t0 < 2
    assert cancelled.is_set()
    back = await get(pool, job.id)
    assert back.status == "queued" and back.attempts == 0 and back.lease_token is None
    assert back.errors == []
    assert (await get(pool, later.id)).attempts == 0


async def test_cancelling_the_worker_hands_jobs_back(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    started = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    _stop, task = start_worker(pool, {"transcode": handler}, grace_seconds=30)
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    back = await get(pool, job.id)
    assert back.status == "queued" and back.attempts == 0


async def test_heartbeat_records_progress_and_extends_the_lease(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    halfway = asyncio.Event()
    go_on = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        assert ctx.lease_token == ctx.job.lease_token and ctx.job.status == "running"
        await ctx.progress(0.425)
        halfway.set()
        await go_on.wait()
        await ctx.progress(1.2)  # clamped

    stop, task = start_worker(pool, {"transcode": handler}, lease_seconds=0.9, reap_interval=0.1)
    try:
        await asyncio.wait_for(halfway.wait(), 5)
        first = await get(pool, job.id)
        assert first.progress == pytest.approx(0.425)
        await asyncio.sleep(1.5)  # well past the first lease: the heartbeat kept it
        later = await get(pool, job.id)
        assert later.status == "running" and later.attempts == 1
        assert later.lease_expires_at > first.lease_expires_at
        assert later.lease_token == first.lease_token and later.errors == []
        go_on.set()
        await until(lambda: job_status(pool, job.id, "succeeded"))
    finally:
        stop.set()
        await task


async def test_lost_lease_cancels_the_handler_and_writes_nothing(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stop, task = start_worker(pool, {"transcode": handler}, lease_seconds=0.6)
    try:
        await asyncio.wait_for(started.wait(), 5)
        # someone else owns the job now (as if it had expired and been re-claimed)
        thief = str(uuid.uuid4())
        await pool.execute(
            "UPDATE jobs SET lease_token = $2, worker = 'w-other' WHERE id = $1", job.id, thief
        )
        await asyncio.wait_for(cancelled.wait(), 5)
        await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    after = await get(pool, job.id)
    assert after.status == "running" and after.lease_token == thief
    assert after.worker == "w-other" and after.errors == []


async def test_handler_publishing_in_a_fenced_transaction(pool) -> None:
    job = await queue.enqueue(pool, "transcode", {})
    stolen = await queue.enqueue(pool, "export", {})

    async def publish(ctx: JobContext) -> None:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await ctx.fence(conn)  # still ours, and nobody can take it until commit
            await queue.complete(conn, ctx.job_id, ctx.lease_token)  # published with the job

    async def too_late(ctx: JobContext) -> None:
        await ctx.pool.execute(
            "UPDATE jobs SET lease_token = gen_random_uuid() WHERE id = $1", ctx.job_id
        )
        async with ctx.pool.acquire() as conn, conn.transaction():
            await ctx.fence(conn)  # raises LeaseLost: nothing gets published

    stop, task = start_worker(pool, {"transcode": publish, "export": too_late})
    try:
        await until(lambda: job_status(pool, job.id, "succeeded"))
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    assert (await get(pool, job.id)).errors == []
    other = await get(pool, stolen.id)
    assert other.status == "running" and other.errors == []


async def test_heartbeats_after_a_handler_completed_its_job_cancel_nothing(pool, caplog) -> None:
    """A transcode completes its job in its publishing transaction, then writes the
    scene's poster: heartbeats in between must not take that for a lost lease (they
    did: the poster was lost, once in a while, with "lease lost" logged)."""
    job = await queue.enqueue(pool, "transcode", {})
    after_commit: list[str] = []

    async def publish_then_tidy(ctx: JobContext) -> None:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await ctx.fence(conn)
            await queue.complete(conn, ctx.job_id, ctx.lease_token)
        await asyncio.sleep(0.7)  # several heartbeats (every 0.2 s) after the commit
        await ctx.progress(1)  # records nothing, raises nothing
        after_commit.append("poster written")

    stop, task = start_worker(pool, {"transcode": publish_then_tidy}, lease_seconds=0.6)
    try:
        await until(lambda: job_status(pool, job.id, "succeeded"))
        await until(lambda: asyncio.sleep(0, bool(after_commit)))
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    assert after_commit == ["poster written"]
    done = await get(pool, job.id)
    assert done.status == "succeeded" and done.errors == []
    assert not [r for r in caplog.records if "lease lost" in r.getMessage()]


# --- waking on new work (LISTEN/NOTIFY) -------------------------------------------


async def listener_pids(pool: asyncpg.Pool) -> set[int]:
    """Backends of this database that LISTEN on the queue's channel."""
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query IN ('LISTEN ' || $1, 'LISTEN \"' || $1 || '\"')",
        queue.NOTIFY_CHANNEL,
    )
    return {r["pid"] for r in rows}


def start_recording_worker(
    pool: asyncpg.Pool, started: dict[str, float], **kw
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """A worker that polls only every 30 s; its handler notes when each job started."""

    async def handler(ctx: JobContext) -> None:
        started[ctx.job_id] = time.monotonic()

    return start_worker(pool, {"transcode": handler}, poll_interval=30.0, **kw)


async def seconds_to_start(pool: asyncpg.Pool, started: dict[str, float]) -> float:
    """Enqueue a job and wait (up to 5 s) for a worker to start it."""
    job = await queue.enqueue(pool, "transcode", {})
    enqueued = time.monotonic()

    async def begun() -> bool:
        return job.id in started

    await until(begun, timeout=5.0)
    return started[job.id] - enqueued


async def test_enqueue_notifies_its_kind_when_the_transaction_commits(pool) -> None:
    heard: list[str] = []

    async def heard_transcode() -> bool:
        return heard == ["transcode"]

    async with (
        pool.acquire() as listening,
        listen.listening(listening, queue.NOTIFY_CHANNEL, heard.append),
    ):
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await queue.enqueue(conn, "export", {})
            await asyncio.sleep(0.2)
            assert heard == []  # not before the commit
            await tx.rollback()
            await asyncio.sleep(0.2)
            assert heard == []  # nor for a rollback
            async with conn.transaction():
                await queue.enqueue(conn, "transcode", {})
        await until(heard_transcode, timeout=1.0)
        assert await listen.is_listening(listening, queue.NOTIFY_CHANNEL)
    with pytest.raises(TypeError, match="not a pool"):
        async with listen.listening(pool, queue.NOTIFY_CHANNEL, heard.append):
            pass


async def test_an_idle_worker_claims_a_new_job_at_once(pool) -> None:
    started: dict[str, float] = {}
    stop, task = start_recording_worker(pool, started)
    try:
        await until(lambda: listener_pids(pool))
        await asyncio.sleep(0.3)  # its first claim found nothing: it idles for 30 s now
        assert await seconds_to_start(pool, started) < 0.5
    finally:
        stop.set()
        await task


async def test_without_listening_an_idle_worker_waits_for_its_poll(pool) -> None:
    started: dict[str, float] = {}
    stop, task = start_recording_worker(pool, started, listen=False)
    try:
        await asyncio.sleep(0.3)
        assert not await listener_pids(pool)
        job = await queue.enqueue(pool, "transcode", {})
        await asyncio.sleep(1.5)
        assert job.id not in started and (await get(pool, job.id)).status == "queued"
    finally:
        stop.set()
        await task


async def test_a_terminated_listening_connection_is_reopened(pool) -> None:
    started: dict[str, float] = {}
    stop, task = start_recording_worker(pool, started)
    try:
        await until(lambda: listener_pids(pool))
        (first,) = await listener_pids(pool)
        await pool.execute("SELECT pg_terminate_backend($1)", first)
        # queued while nobody listens: found when the worker listens again (after at
        # most core.listen.RETRY_BASE s of backoff), long before its 30 s poll
        assert await seconds_to_start(pool, started) < 3.0

        async def listening_again() -> bool:
            return bool(await listener_pids(pool) - {first})

        await until(listening_again)
        assert await seconds_to_start(pool, started) < 0.5
        assert not task.done()
    finally:
        stop.set()
        await task


async def test_follow_reopens_a_lost_connection_and_resyncs_each_time(pool, fresh_db) -> None:
    """core.listen.follow on a connection of its own (the origin's scene changes): each
    (re)connection calls `on_connect` (the caller resyncs), notifications arrive before
    and after a terminated connection, and `stop` ends it without a listener left."""
    heard: list[str] = []
    connects: list[float] = []
    stop = asyncio.Event()

    async def listeners() -> set[int]:
        rows = await pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query IN ('LISTEN ' || $1, 'LISTEN \"' || $1 || '\"')",
            listen.CHANNEL,
        )
        return {r["pid"] for r in rows}

    task = asyncio.create_task(
        listen.follow(
            lambda: listen.connection(fresh_db),
            listen.CHANNEL,
            heard.append,
            stop,
            on_connect=lambda: connects.append(time.monotonic()),
            what="test: scene changes",
            rng=random.Random(3),
        )
    )
    try:

        async def heard_(*payloads: str) -> bool:
            return heard == list(payloads)

        await until(lambda: listeners())
        assert len(connects) == 1
        await pool.execute("SELECT pg_notify($1, 'scn_a')", listen.CHANNEL)
        await until(lambda: heard_("scn_a"), timeout=1.0)
        (first,) = await listeners()
        await pool.execute("SELECT pg_terminate_backend($1)", first)

        async def reconnected() -> bool:
            return len(connects) == 2 and bool(await listeners() - {first})

        await until(reconnected, timeout=3.0)  # at most RETRY_BASE s of backoff
        await pool.execute("SELECT pg_notify($1, 'scn_b')", listen.CHANNEL)
        await until(lambda: heard_("scn_a", "scn_b"), timeout=1.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)

    async def gone() -> bool:
        return not await listeners()

    await until(gone)
