"""`storyforge gc`: find, and with `apply` remove, objects that no row points to, for
operators who find orphans after a crash (a worker killed between an upload and its
row, a deletion that lost its job). The delete paths and the internal bucket's expiry
keep storage clean on their own; this is the backstop.

Every bucket is listed page by page; each key's owner (core/orphans.py) is looked
up in Postgres in batches. An owner whose row is missing and whose newest object is
older than `min_age` (default a day: an upload lands before its row commits) is an
orphan, and its whole prefix is deleted with `Storage.delete_prefix`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from core import db
from core.orphans import Owner, Role, Table, is_orphan, owner
from core.settings import Settings
from core.storage import Storage, StorageError

LOOKUP_BATCH = 1_000
_LOOKUPS: dict[Table, str] = {
    "scenes": "gc_scenes",
    "segments": "gc_segments",
    "users": "gc_users",
    "jobs": "gc_jobs",
}


@dataclass
class Found:
    """An orphaned owner: its objects (count, bytes) and the newest one's age."""

    bucket: str
    owner: Owner
    objects: int = 0
    bytes: int = 0
    newest: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    deleted: int = 0


async def _existing(
    conn: asyncpg.Connection, table: Table, ids: list[str]
) -> dict[str, str | None]:
    rows = await conn.fetch(db.q(_LOOKUPS[table]), ids)
    return {r["id"]: r["scene_id"] for r in rows}


async def _orphans_of(conn: asyncpg.Connection, candidates: dict[Owner, Found]) -> list[Found]:
    found: list[Found] = []
    by_table: dict[Table, list[Owner]] = {}
    for o in candidates:
        by_table.setdefault(o.table, []).append(o)
    for table, owners in by_table.items():
        for start in range(0, len(owners), LOOKUP_BATCH):
            chunk = owners[start : start + LOOKUP_BATCH]
            rows = await _existing(conn, table, sorted({o.id for o in chunk}))
            found.extend(candidates[o] for o in chunk if is_orphan(o, rows))
    return found


async def _owners(storage: Storage, role: Role, bucket: str) -> AsyncIterator[Found]:
    """The owners of a bucket's objects with their counts, each once it is complete:
    listings are sorted, and the keys under one prefix are contiguous in sorted order,
    so an owner is complete at the first key outside its prefix."""
    current: dict[Owner, Found] = {}
    async for info in storage.list(bucket):
        for done in [o for o in current if not info.key.startswith(o.prefix)]:
            yield current.pop(done)
        o = owner(role, info.key)
        if o is None:
            continue
        entry = current.get(o)
        if entry is None:
            entry = current[o] = Found(bucket, o)
        entry.objects += 1
        entry.bytes += info.size
        entry.newest = max(entry.newest, info.last_modified)
    for entry in current.values():
        yield entry


async def find_orphans(
    pool: asyncpg.Pool,
    storage: Storage,
    settings: Settings,
    *,
    min_age: timedelta = timedelta(days=1),
    now: datetime | None = None,
) -> list[Found]:
    """Every orphaned owner in the four buckets whose newest object is older than
    `min_age`."""
    cutoff = (now or datetime.now(UTC)) - min_age
    roles: Iterable[tuple[Role, str]] = (
        ("videos", settings.videos_bucket),
        ("assets", settings.assets_bucket),
        ("exports", settings.exports_bucket),
        ("internal", settings.internal_bucket),
    )
    orphans: list[Found] = []
    async with pool.acquire() as conn:
        for role, bucket in roles:
            batch: dict[Owner, Found] = {}
            async for entry in _owners(storage, role, bucket):
                if entry.newest >= cutoff:
                    continue
                batch[entry.owner] = entry
                if len(batch) >= LOOKUP_BATCH:
                    orphans.extend(await _orphans_of(conn, batch))
                    batch = {}
            orphans.extend(await _orphans_of(conn, batch))
    return sorted(orphans, key=lambda f: (f.bucket, f.owner.prefix))


async def remove(storage: Storage, orphans: Iterable[Found]) -> list[Found]:
    """Delete each orphan's prefix; StorageError (after trying them all) when keys
    could not be deleted."""
    done: list[Found] = []
    failed: list[str] = []
    for entry in orphans:
        result = await storage.delete_prefix(entry.bucket, entry.owner.prefix)
        entry.deleted = result.deleted
        failed.extend(f"{entry.bucket}/{key}: {error}" for key, error in result.errors)
        done.append(entry)
    if failed:
        raise StorageError(f"{len(failed)} objects could not be deleted: {'; '.join(failed[:3])}")
    return done
