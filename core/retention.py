"""History kept for a retention period (issue 29): finished jobs (JOB_RETENTION),
webhook events whose deliveries all ended, with those deliveries (OUTBOX_RETENTION),
and tus uploads that ended (UPLOAD_RETENTION after their expiry) are deleted in
batches of `BATCH` rows, each batch one short autocommit statement that skips locked
rows (core/sql/retention.sql); and the status deltas /metrics sums are folded
(`compact`). Every worker runs `maintain` from its reaper (a bounded number of
batches per pass); `storyforge gc --apply` runs `prune` to the end.

CDN invalidation counts need no retention: one row per backend and outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from core import db
from core.settings import Settings

BATCH = 1_000
#: batches per table and reaper pass (a worker's reaper runs every <= 30 s), so a
#: backlog (the first pass over months of history) is worked off without holding up
#: the reaper's other duties
BATCHES_PER_PASS = 10


@dataclass(frozen=True)
class Retention:
    """Seconds each kind of history is kept."""

    jobs: float
    events: float
    uploads: float

    @classmethod
    def of(cls, settings: Settings) -> Retention:
        return cls(settings.job_retention, settings.outbox_retention, settings.upload_retention)


def _deleted(status: str) -> int:
    """The row count of a `DELETE n` command tag."""
    return int(status.rsplit(" ", 1)[-1])


async def prune(
    pool: asyncpg.Pool,
    retention: Retention,
    *,
    batch: int = BATCH,
    max_batches: int | None = None,
) -> dict[str, int]:
    """Delete what is older than its retention, `batch` rows per statement, until a
    batch comes back short (or after `max_batches` per table); then fold the status
    counts. The rows deleted per table: `jobs`, `events` (their deliveries went with
    them), `uploads`."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    pruned: dict[str, int] = {}
    for table, query, seconds in (
        ("jobs", "prune_jobs", retention.jobs),
        ("events", "prune_events", retention.events),
        ("uploads", "prune_uploads", retention.uploads),
    ):
        total = batches = 0
        while max_batches is None or batches < max_batches:
            n = _deleted(await pool.execute(db.q(query), float(seconds), batch))
            total += n
            batches += 1
            if n < batch:
                break
        pruned[table] = total
    await compact(pool)
    return pruned


async def compact(pool: asyncpg.Pool) -> None:
    """Fold the status deltas into one row per table, kind and status."""
    await pool.execute(db.q("status_counts_compact"))


async def maintain(pool: asyncpg.Pool, retention: Retention) -> dict[str, int]:
    """One reaper pass: at most `BATCHES_PER_PASS` batches per table, then the fold."""
    return await prune(pool, retention, max_batches=BATCHES_PER_PASS)
