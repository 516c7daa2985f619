"""tus uploads' state: the `uploads` row in Postgres (`sql/uploads.sql`) and what
the internal bucket holds for it, so any origin process can take an upload's next
request and the `expire_upload` job (workers/jobs/expire.py) can end it. The
protocol's work on that state (parked leases, request bodies, cutting parts,
finishing an upload into a clip) is origin/ingest/tus_service.py's.

An upload is one multipart upload of `layout.upload_key(jobId)` (the key the
transcode job reads), its job and segment ids chosen at creation, with an
`expire_upload` job due once it expires. A request writes only while it holds the
upload's lease (`Lease`: a token and an expiry in the row, taken by one UPDATE,
renewed while bytes arrive, released at the end). A lease rather than a row lock
held in an open transaction: a phone can take minutes over one PATCH, and a
transaction per request in flight would pin a pooled connection for as long. A
holder that dies lets its lease expire (`UPLOAD_LOCK_SECONDS`); part numbers are
allocated in the row, so a part stored late by a request that lost its lease
(`UploadLeaseLost`) is never listed. A request's last write may park its lease
(`Lease.commit(park=True)`): expired at once, so any request anywhere may take it,
with the next part number kept for whoever holds the token next.

An upload expires by the database's clock: `expires_in` / `expired` for everyone,
and `upload_claim`'s condition in the same statement as the claim.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core import db, layout, queue
from core.settings import Settings
from core.storage import Storage, UploadedPart

ID_LENGTH = 26  # upload ids are capabilities: 130 random bits
EXPIRY_GRACE_SECONDS = 60.0  # the expire job runs this long after an upload expires


@dataclass(frozen=True)
class Pending:
    """Bytes stored as an object of their own until they fill a part."""

    key: str
    size: int


@dataclass(frozen=True)
class Upload:
    id: str
    scene_id: str
    contributor_id: str
    sequence: int | None
    filename: str | None
    content_type: str
    metadata: str
    length: int
    received: int
    segment_id: str
    job_id: str
    multipart_id: str
    part_size: int
    parts: tuple[UploadedPart, ...]
    pending: tuple[Pending, ...]
    status: str  # open | completed | failed | terminated | expired
    error: str | None
    expires_at: datetime

    @property
    def key(self) -> str:
        """The object the upload becomes (the transcode job's input)."""
        return layout.upload_key(self.job_id)

    @property
    def whole(self) -> bool:
        return self.received == self.length

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Upload:
        return cls(
            id=row["id"],
            scene_id=row["scene_id"],
            contributor_id=row["contributor_id"],
            sequence=row["sequence"],
            filename=row["filename"],
            content_type=row["content_type"],
            metadata=row["metadata"],
            length=row["length"],
            received=row["received"],
            segment_id=row["segment_id"],
            job_id=row["job_id"],
            multipart_id=row["multipart_id"],
            part_size=row["part_size"],
            parts=tuple(UploadedPart(p["n"], p["etag"], p["size"]) for p in _json(row["parts"])),
            pending=tuple(Pending(p["key"], p["size"]) for p in _json(row["pending"])),
            status=row["status"],
            error=row["error"],
            expires_at=row["expires_at"],
        )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _parts_json(parts: tuple[UploadedPart, ...]) -> str:
    return json.dumps([{"n": p.number, "etag": p.etag, "size": p.size} for p in parts])


def _pending_json(pending: tuple[Pending, ...]) -> str:
    return json.dumps([{"key": p.key, "size": p.size} for p in pending])


@dataclass(frozen=True)
class NewUpload:
    """What a new upload's row is made of (a creation request, checked)."""

    scene_id: str
    contributor: str
    sequence: int | None
    filename: str | None
    content_type: str
    metadata: str
    length: int


async def get(conn: queue.Conn, upload_id: str) -> Upload | None:
    if not layout.is_id(upload_id, "upl"):
        return None
    row = await conn.fetchrow(db.q("upload_get"), upload_id)
    return Upload.from_row(row) if row else None


async def expires_in(conn: queue.Conn, upload_id: str) -> float | None:
    """Seconds until the upload expires, by the database's clock (<= 0: it has);
    None: no such upload."""
    if not layout.is_id(upload_id, "upl"):
        return None
    left = await conn.fetchval(db.q("upload_expires_in"), upload_id)
    return float(left) if left is not None else None


async def expired(conn: queue.Conn, upload_id: str) -> bool:
    """Has the upload expired (`expires_in`), or is there no such upload?"""
    left = await expires_in(conn, upload_id)
    return left is None or left <= 0


async def create(
    pool: asyncpg.Pool, storage: Storage, settings: Settings, new: NewUpload, *, part_size: int
) -> Upload:
    """Start the multipart upload, then the row (its bytes cut into parts of
    `part_size`) and its expiry job in one transaction (the multipart upload is
    aborted if that fails)."""
    job_id = layout.new_id("job")
    bucket = settings.internal_bucket
    multipart_id = await storage.create_multipart(
        bucket,
        layout.upload_key(job_id),
        content_type="application/octet-stream",
        cache_control="private, no-store",
        tags={"type": layout.INTERNAL_TAG},
    )
    upload_id = layout.new_id("upl", ID_LENGTH)
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                db.q("upload_insert"),
                upload_id,
                new.scene_id,
                new.contributor,
                new.sequence,
                new.filename,
                new.content_type,
                new.metadata,
                new.length,
                layout.new_id("seg"),
                job_id,
                multipart_id,
                part_size,
                float(settings.upload_expiry_seconds),
            )
            await queue.enqueue(
                conn,
                "expire_upload",
                {"upload_id": upload_id},
                dedupe_key=f"expire_upload:{upload_id}",
                scene_id=new.scene_id,
                max_attempts=settings.job_max_attempts,
                delay=settings.upload_expiry_seconds + EXPIRY_GRACE_SECONDS,
            )
    except BaseException:
        with contextlib.suppress(Exception):
            await storage.abort_multipart(bucket, layout.upload_key(job_id), multipart_id)
        raise
    return Upload.from_row(row)


class UploadLeaseLost(Exception):
    """A request's lease on an upload expired and another request took it, or the
    upload ended (a job's lease is core.queue's `LeaseLost`)."""


class Lease:
    """A request's exclusive right to write one upload (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        upload_id: str,
        token: uuid.UUID,
        seconds: float,
        part: int,
        *,
        unconfirmed: bool = False,
    ):
        self.pool = pool
        self.upload_id = upload_id
        self.token = token
        self.seconds = seconds
        self._renewed = time.monotonic()
        self._next_part: int | None = part  # allocated when the lease was taken
        self.released = False
        self.unconfirmed = unconfirmed  # a parked lease: not ours until a fenced write
        self.parked_part: int | None = None  # set when `commit` parks it

    @classmethod
    async def take(
        cls,
        pool: asyncpg.Pool,
        upload_id: str,
        seconds: float,
        *,
        offset: int | None,
        expired_too: bool = False,
    ) -> tuple[Lease, Upload] | None:
        """The lease and the upload as it is now, or None when the upload is not open,
        has expired (unless `expired_too`), is held by another request, or is not at
        `offset` (None: any)."""
        token = uuid.uuid4()
        row = await pool.fetchrow(
            db.q("upload_claim"), upload_id, token, float(seconds), offset, expired_too
        )
        if row is None:
            return None
        return cls(pool, upload_id, token, seconds, row["next_part"] - 1), Upload.from_row(row)

    async def _fenced(self, query: str, *args: Any) -> asyncpg.Record:
        row = await self.pool.fetchrow(db.q(query), self.upload_id, self.token, *args)
        if row is None:
            raise UploadLeaseLost(f"upload {self.upload_id}: lease lost")
        self._renewed = time.monotonic()
        return row

    async def renew_if_due(self) -> None:
        if time.monotonic() - self._renewed > self.seconds / 3:
            await self._fenced("upload_renew", float(self.seconds))

    async def allocate_part(self) -> int:
        if self._next_part is not None:
            number, self._next_part = self._next_part, None
            return number
        row = await self._fenced("upload_allocate_part", float(self.seconds))
        return int(row["number"])

    async def commit(self, upload: Upload, *, park: bool = False) -> Upload:
        """Record what is stored; with `park`, park the lease in the same write (the
        request's last one): `parked_part` is the part number kept for its next holder."""
        row = await self._fenced(
            "upload_commit",
            upload.received,
            _parts_json(upload.parts),
            _pending_json(upload.pending),
            float(self.seconds),
            "park" if park else "hold",
        )
        self.unconfirmed = False  # a fenced write confirmed it
        if park:
            self.released = True
            self.parked_part = int(row["next_part"]) - 1
        return Upload.from_row(row)

    async def held(self) -> bool:
        """Whether the lease is still this request's (one fenced write)."""
        try:
            await self._fenced("upload_renew", float(self.seconds))
        except UploadLeaseLost:
            return False
        return True

    async def end(self, conn: queue.Conn, status: str, error: str | None = None) -> Upload:
        row = await conn.fetchrow(db.q("upload_end"), self.upload_id, self.token, status, error)
        if row is None:
            raise UploadLeaseLost(f"upload {self.upload_id}: lease lost")
        self.released = True
        return Upload.from_row(row)

    async def release(self) -> None:
        if self.released:
            return
        with contextlib.suppress(Exception):
            await self.pool.execute(db.q("upload_release"), self.upload_id, self.token)


async def discard(storage: Storage, settings: Settings, upload: Upload) -> None:
    """Remove whatever storage holds for an upload that will not complete (idempotent):
    the multipart upload and its parts, pending objects, a joined object."""
    bucket = settings.internal_bucket
    if upload.status != "completed":  # (a completed one's parts are its object now)
        await storage.abort_multipart(bucket, upload.key, upload.multipart_id)
        await storage.delete_prefix(bucket, layout.job_prefix(upload.job_id))
    await storage.delete_prefix(bucket, layout.upload_pending_prefix(upload.id))
