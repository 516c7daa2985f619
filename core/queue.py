"""The job queue: thin typed functions over the named SQL of `core/sql/jobs.sql`.

Every function takes an asyncpg pool or connection. `enqueue` and `lock_lease` are
meant to run inside a caller's transaction; `claim` and `heartbeat` must run in
autocommit (a pool, or a connection outside any transaction) so the lease is
committed before any work starts.

Writes to a running job are fenced by its lease token: when the fence matches no
row the job is no longer ours and `LeaseLost` is raised. Driver errors are
converted here: `QueueUnavailable` when the database cannot be reached (worth
waiting and retrying), `QueueError` for anything else the database refused.

A scene deleted or a clip removed `cancel`s its jobs: a running one keeps its lease
token, so every fenced write fails and its worker stops, then `let_go`es; until it
does (or the lease expires) `holders` counts it, so the deleting job knows when
nobody writes under the scene any more. `requeue` gives a failed or dead job a
fresh attempt budget and `cancel_one` ends one job, each under the row lock of
`lock` (core/lifecycle.py: the API's retry and `storyforge jobs`).

Every statement that makes a job due now (`enqueue`, `release`, `requeue_expired`,
`requeue`) also sends a Postgres NOTIFY on `NOTIFY_CHANNEL` with the job's kind as payload, in
its own transaction, so it is delivered when that commits (never for a rollback).
Idle workers listen (workers/runtime/wakeup.py, through core/listen.py) and claim at
once; polling stays their fallback.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from core import layout
from core.db import DatabaseError, Unavailable, is_connection_error, q

#: Kinds the jobs table accepts (its CHECK constraint): `transcode`, `delete_scene`,
#: `remove_segment`, `webhook` (one event to one endpoint) and `expire_upload`
#: (removing an abandoned upload's parts), `export` (a scene or a moment of it as one
#: MP4) and `refine` (a published clip re-encoded at the quality settings) have
#: handlers (workers/runtime/main.py). A new kind comes with a migration widening the
#: constraint.
JOB_KINDS: tuple[str, ...] = (
    "transcode",
    "export",
    "delete_scene",
    "remove_segment",
    "webhook",
    "expire_upload",
    "refine",
)


def progress_fraction(value: float | None) -> float:
    """A job's progress as every reader and writer takes it: the fraction done, in
    [0, 1] (migration 0008; out-of-range values, such as the percentages a worker of
    the previous release still writes during a roll-out, are clamped)."""
    return min(max(float(value or 0.0), 0.0), 1.0)


def progress_shown(status: str, value: float | None) -> float:
    """The progress an API answers for a job's clip or export in `status`: 1 once
    ready, under 1 while processing (the last step is the publication), else the
    job's own fraction; to 3 decimals."""
    if status == "ready":
        return 1.0
    done = round(progress_fraction(value), 3)
    return min(done, 0.99) if status == "processing" else done


#: Claim order (migration 0007): the highest priority first, then the oldest due. A
#: refinement only improves what already plays, so it waits for every other kind.
PRIORITIES: Mapping[str, int] = {"refine": 0}
DEFAULT_PRIORITY = 100
STATUSES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
IN_FLIGHT = ("queued", "running")
MAX_ERROR_CHARS = 4000  # longer messages (ffmpeg's stderr tail, say) are cut
NOTIFY_CHANNEL = "storyforge_jobs"  # payload: the kind of a job that became due

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


class QueueError(DatabaseError):
    """The database refused a queue operation."""


class QueueUnavailable(QueueError):
    """The database could not be reached (connection lost, shutting down, full)."""


class LeaseLost(Exception):
    """A fenced write matched no row: the job's lease is no longer ours."""

    def __init__(self, job_id: str, action: str = "write") -> None:
        super().__init__(f"lease lost on job {job_id} ({action}): the job is no longer ours")
        self.job_id = job_id
        self.action = action


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    payload: dict[str, Any]
    status: str
    attempts: int
    max_attempts: int
    run_after: datetime
    lease_token: str | None
    lease_expires_at: datetime | None
    worker: str | None
    progress: float
    errors: list[dict[str, Any]]
    last_error: str | None
    dedupe_key: str | None
    scene_id: str | None
    segment_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    priority: int = DEFAULT_PRIORITY

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT

    @property
    def attempts_left(self) -> int:
        return max(self.max_attempts - self.attempts, 0)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        token = row["lease_token"]
        return cls(
            id=row["id"],
            kind=row["kind"],
            payload=_json(row["payload"]),
            status=row["status"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            run_after=row["run_after"],
            lease_token=str(token) if token is not None else None,
            lease_expires_at=row["lease_expires_at"],
            worker=row["worker"],
            progress=progress_fraction(row["progress"]),
            errors=list(_json(row["errors"])),
            last_error=row["last_error"],
            dedupe_key=row["dedupe_key"],
            scene_id=row["scene_id"],
            segment_id=row["segment_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            priority=row.get("priority", DEFAULT_PRIORITY),
        )


def _json(value: Any) -> Any:
    # jsonb arrives as text unless someone registered a codec; accept both.
    return json.loads(value) if isinstance(value, str | bytes) else value


def error_text(message: str) -> str:
    """An error as stored in the job row: bounded length, never empty."""
    message = message.strip() or "unknown error"
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return message


def unavailable(exc: BaseException) -> bool:
    """Is `exc` the database being out of reach (connection lost or refused, server
    restarting, `db.is_connection_error`), or short of resources (SQLSTATE class 53),
    which waiting and trying again can cure, rather than a refusal of the statement?"""
    if isinstance(exc, QueueUnavailable | Unavailable):
        return True
    if is_connection_error(exc, connecting=True):
        return True
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] == "53"


@contextmanager
def _converted(action: str) -> Iterator[None]:
    """Turn asyncpg / socket errors into ours at this boundary."""
    try:
        yield
    except (LeaseLost, QueueError):
        raise
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    ) as exc:
        if unavailable(exc):
            raise QueueUnavailable(f"job queue unavailable ({action}): {exc}") from exc
        raise QueueError(f"job queue error ({action}): {exc}") from exc


def _require_autocommit(conn: Conn, action: str) -> None:
    if isinstance(conn, asyncpg.Connection | PoolConnectionProxy) and conn.is_in_transaction():
        raise QueueError(
            f"{action} must run outside a transaction (its write is committed at once)"
        )


async def enqueue(
    conn: Conn,
    kind: str,
    payload: Mapping[str, Any],
    *,
    dedupe_key: str | None = None,
    scene_id: str | None = None,
    segment_id: str | None = None,
    max_attempts: int = 5,
    job_id: str | None = None,
    delay: float = 0.0,
) -> Job:
    """Queue a job and return it; works inside the caller's transaction. It is due
    `delay` seconds from now, at its kind's priority (`PRIORITIES`).

    With `dedupe_key`, when a queued or running job already holds the key that job
    is returned instead (whatever its kind); a finished job does not block a new one.
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    if not delay >= 0:
        raise ValueError("delay must be >= 0")
    job_id = job_id or layout.new_id("job")
    if not layout.is_id(job_id, "job"):
        raise ValueError(f"invalid job id {job_id!r}")
    body = json.dumps(dict(payload), separators=(",", ":"))
    with _converted("enqueue"):
        # A conflicting in-flight job may finish between our INSERT and SELECT:
        # then the key is free again and the next INSERT goes through.
        for _ in range(5):
            row = await conn.fetchrow(
                q("job_enqueue"),
                job_id,
                kind,
                body,
                max_attempts,
                dedupe_key,
                scene_id,
                segment_id,
                NOTIFY_CHANNEL,
                float(delay),
                PRIORITIES.get(kind, DEFAULT_PRIORITY),
            )
            if row is not None:
                return Job.from_row(row)
            row = await conn.fetchrow(q("job_get_in_flight_by_dedupe_key"), dedupe_key)
            if row is not None:
                return Job.from_row(row)
    raise QueueError(f"enqueue: could not settle dedupe key {dedupe_key!r} (too much contention)")


async def claim(
    conn: Conn,
    kinds: Sequence[str] | None,
    *,
    worker: str,
    lease_seconds: float,
) -> Job | None:
    """Take the due queued job of `kinds` (None: any) with the highest priority,
    the oldest first among equals, leased to `worker`.

    One autocommitted statement (`FOR UPDATE SKIP LOCKED`): concurrent claimers
    never get the same job. Returns None when nothing is due.
    """
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be > 0")
    _require_autocommit(conn, "claim")
    token = uuid.uuid4()
    kind_list = list(kinds) if kinds is not None else None
    with _converted("claim"):
        row = await conn.fetchrow(q("job_claim"), token, float(lease_seconds), worker, kind_list)
    return Job.from_row(row) if row is not None else None


async def heartbeat(
    conn: Conn,
    job_id: str,
    lease_token: str,
    *,
    lease_seconds: float,
    progress: float | None = None,
) -> bool:
    """Extend our lease by `lease_seconds` from now and record `progress` (a fraction,
    clamped to [0, 1]).

    Returns False when the job is no longer ours (nothing was written).
    """
    _require_autocommit(conn, "heartbeat")
    done = None if progress is None else progress_fraction(progress)
    with _converted("heartbeat"):
        row = await conn.fetchrow(
            q("job_heartbeat"), job_id, _uuid(lease_token), float(lease_seconds), done
        )
    return row is not None


async def lock_lease(conn: Conn, job_id: str, lease_token: str) -> None:
    """Inside the caller's transaction, lock our running job row (fence for a publish).

    Raises LeaseLost when the job is no longer ours; while the transaction lasts,
    nobody else can re-queue or take the job.
    """
    with _converted("lock lease"):
        row = await conn.fetchrow(q("job_lock_lease"), job_id, _uuid(lease_token))
    if row is None:
        raise LeaseLost(job_id, "lock")


async def _fenced(conn: Conn, query: str, action: str, job_id: str, *args: Any) -> Job:
    with _converted(action):
        row = await conn.fetchrow(q(query), job_id, *args)
    if row is None:
        raise LeaseLost(job_id, action)
    return Job.from_row(row)


async def complete(conn: Conn, job_id: str, lease_token: str) -> Job:
    """Mark our running job succeeded (progress 1, lease cleared)."""
    return await _fenced(conn, "job_complete", "complete", job_id, _uuid(lease_token))


async def fail_permanent(conn: Conn, job_id: str, lease_token: str, error: str) -> Job:
    """Mark our running job failed for good (bad input), keeping the reason."""
    return await _finish_with_error(conn, job_id, lease_token, error, "failed", "fail")


async def bury(conn: Conn, job_id: str, lease_token: str, error: str) -> Job:
    """Mark our running job dead now, attempts left or not, keeping the error."""
    return await _finish_with_error(conn, job_id, lease_token, error, "dead", "bury")


async def _finish_with_error(
    conn: Conn, job_id: str, lease_token: str, error: str, status: str, action: str
) -> Job:
    return await _fenced(
        conn,
        "job_finish_with_error",
        action,
        job_id,
        _uuid(lease_token),
        error_text(error),
        status,
    )


async def retry_or_dead(
    conn: Conn, job_id: str, lease_token: str, error: str, *, backoff: float
) -> Job:
    """Record a failed attempt: queued again after `backoff` seconds, or dead when
    the job has used `max_attempts`. The error is appended to the job's errors."""
    return await _fenced(
        conn,
        "job_retry_or_dead",
        "retry",
        job_id,
        _uuid(lease_token),
        error_text(error),
        max(float(backoff), 0.0),
    )


async def defer(
    conn: Conn, job_id: str, lease_token: str, *, delay: float, payload: Mapping[str, Any]
) -> Job:
    """Our running job continues later: queued again in `delay` seconds with
    `payload` merged into its own; the attempt is not counted."""
    body = json.dumps(dict(payload), separators=(",", ":"))
    return await _fenced(
        conn,
        "job_requeue_uncounted",
        "defer",
        job_id,
        _uuid(lease_token),
        max(float(delay), 0.0),
        body,
        None,
    )


async def release(conn: Conn, job_id: str, lease_token: str) -> Job:
    """Hand our running job back (shutdown): queued now, the attempt not counted."""
    return await _fenced(
        conn,
        "job_requeue_uncounted",
        "release",
        job_id,
        _uuid(lease_token),
        0.0,
        "{}",
        NOTIFY_CHANNEL,
    )


#: What happens beside a job that its lease's expiry made dead, in the same
#: transaction (`requeue_expired`).
OnDead: TypeAlias = Callable[[asyncpg.Connection, "Job"], Awaitable[None]]


async def requeue_expired(pool: asyncpg.Pool, on_dead: OnDead | None = None) -> list[Job]:
    """Re-queue (or kill, when out of attempts) running jobs whose lease expired. With
    `on_dead`, it runs for each job made dead, in the transaction that makes it so:
    what such a job was for ends with it, or neither happens."""
    with _converted("requeue expired"):
        async with pool.acquire() as conn, conn.transaction():
            jobs = [
                Job.from_row(r) for r in await conn.fetch(q("job_requeue_expired"), NOTIFY_CHANNEL)
            ]
            if on_dead is not None:
                for job in jobs:
                    if job.status == "dead":
                        await on_dead(conn, job)
    return jobs


async def counts(conn: Conn) -> dict[tuple[str, str], int]:
    """(kind, status) -> number of jobs, for /metrics."""
    with _converted("count jobs"):
        rows = await conn.fetch(q("job_counts"))
    return {(r["kind"], r["status"]): r["n"] for r in rows}


async def oldest_due(conn: Conn) -> dict[str, float]:
    """kind -> seconds the oldest due queued job of that kind has waited, for /metrics."""
    with _converted("read job ages"):
        rows = await conn.fetch(q("oldest_due_jobs"))
    return {r["kind"]: max(0.0, r["age"]) for r in rows}


async def get_job(conn: Conn, job_id: str) -> Job | None:
    with _converted("get job"):
        row = await conn.fetchrow(q("job_get"), job_id)
    return Job.from_row(row) if row is not None else None


async def cancel(
    conn: Conn, *, scene_id: str | None = None, segment_id: str | None = None, reason: str
) -> list[Job]:
    """Cancel the queued and running jobs of a scene or of a segment (delete_scene
    jobs excepted); works inside the caller's transaction. Returns them."""
    if scene_id is None and segment_id is None:
        raise ValueError("cancel needs a scene_id or a segment_id")
    with _converted("cancel"):
        rows = await conn.fetch(q("job_cancel"), scene_id, segment_id, error_text(reason))
    return [Job.from_row(r) for r in rows]


async def lock_in_flight(
    conn: Conn, *, scene_id: str | None = None, segment_id: str | None = None
) -> None:
    """Inside the caller's transaction, lock the queued and running jobs of a scene
    or segment before touching its rows (the lock order of a publish: job, segment,
    scene), so a cancel and a publish serialise instead of deadlocking."""
    with _converted("lock jobs"):
        await conn.fetch(q("job_lock_in_flight"), scene_id, segment_id)


async def let_go(conn: Conn, job_id: str, lease_token: str) -> bool:
    """The worker of a cancelled job has stopped writing for it: give up the lease.
    False when there was nothing to give up (not cancelled, or not ours)."""
    with _converted("let go"):
        return await conn.fetchrow(q("job_let_go"), job_id, _uuid(lease_token)) is not None


async def holders(conn: Conn, *, scene_id: str | None = None, segment_id: str | None = None) -> int:
    """Cancelled jobs of the scene or segment whose worker may still be writing."""
    with _converted("count holders"):
        return int(await conn.fetchval(q("job_holders"), scene_id, segment_id))


async def job_ids_of(
    conn: Conn, *, scene_id: str | None = None, segment_id: str | None = None, but: str = ""
) -> list[str]:
    """Ids of every job of the scene or segment, but `but` (the caller's own)."""
    with _converted("list jobs"):
        return [r["id"] for r in await conn.fetch(q("job_ids_of"), scene_id, segment_id, but)]


async def latest(conn: Conn, segment_id: str, kind: str) -> Job | None:
    """The newest job of `kind` for a segment."""
    with _converted("get latest job"):
        row = await conn.fetchrow(q("job_latest"), segment_id, kind)
    return Job.from_row(row) if row is not None else None


async def lock(conn: Conn, job_id: str) -> Job | None:
    """Inside the caller's transaction, lock a job's row whatever its status (the first
    lock of a retry or a cancel, core/lifecycle.py); None: no such job."""
    with _converted("lock job"):
        row = await conn.fetchrow(q("job_lock"), job_id)
    return Job.from_row(row) if row is not None else None


async def lock_latest(conn: Conn, segment_id: str, kind: str) -> Job | None:
    """`lock` for the newest job of `kind` of a segment."""
    with _converted("lock latest job"):
        row = await conn.fetchrow(q("job_lock_latest"), segment_id, kind)
    return Job.from_row(row) if row is not None else None


async def lock_latest_of_scene(conn: Conn, scene_id: str, kind: str) -> Job | None:
    """`lock` for the newest job of `kind` of a scene."""
    with _converted("lock latest job"):
        row = await conn.fetchrow(q("job_lock_latest_of_scene"), scene_id, kind)
    return Job.from_row(row) if row is not None else None


async def cancel_one(conn: Conn, job_id: str, reason: str) -> Job | None:
    """Cancel one queued, running or failed job (a running one keeps its lease token,
    so its worker is fenced out); None when it is in none of these statuses."""
    with _converted("cancel job"):
        row = await conn.fetchrow(q("job_cancel_one"), job_id, error_text(reason))
    return Job.from_row(row) if row is not None else None


async def requeue(conn: Conn, job_id: str) -> Job | None:
    """Queue a failed or dead job again with a fresh attempt budget (its errors
    kept). None when it is not failed or dead, or another job in flight holds its
    dedupe key."""
    with _converted("requeue"):
        try:
            row = await conn.fetchrow(q("job_requeue_finished"), job_id, NOTIFY_CHANNEL)
        except asyncpg.UniqueViolationError:
            return None
    return Job.from_row(row) if row is not None else None


async def unheld(conn: Conn, job_ids: Sequence[str]) -> set[str]:
    """Those of `job_ids` that are jobs of this database with no live lease: no worker
    is working on them (or writing in their temporary directories)."""
    with _converted("find unheld jobs"):
        return {r["id"] for r in await conn.fetch(q("job_unheld"), list(job_ids))}


def _uuid(token: str | uuid.UUID) -> uuid.UUID:
    if isinstance(token, uuid.UUID):
        return token
    try:
        return uuid.UUID(token)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid lease token {token!r}") from exc
