"""tus uploads: their state in Postgres (`sql/uploads.sql`) and their bytes in the
internal bucket, so any origin process can take an upload's next request.

An upload is one multipart upload of `layout.upload_key(jobId)` (the key the
transcode job reads), its job and segment ids chosen at creation. A request writes
only while it holds the upload's lease (`Lease`: a token and an expiry in the row,
taken by one UPDATE, renewed while bytes arrive, released at the end; a request that
finds it held gets 409). A lease rather than a row lock held in an open transaction:
a phone can take minutes over one PATCH, and a transaction per request in flight
would pin a pooled connection for as long. A holder that dies lets its lease expire
(`UPLOAD_LOCK_SECONDS`); part numbers are allocated in the row, so a part stored
late by a request that lost its lease is never listed. A PATCH that ends with bytes
still to come parks its lease (`ParkedLeases`): expired, so any request anywhere
may take it, but the next PATCH at that offset reaching the same process (a tus
client's next chunk on its connection) writes without a claim; its commit is fenced
by the token like any other write.

Storage with a minimum part size (S3: 5 MiB) gets parts cut at multiples of the
upload's part size; bytes past the last whole part are kept as `pending` objects in
the internal bucket (never in memory between requests) and joined to the next part.
Storage without one (LocalStorage) gets one part per request, streamed.

When the last byte is stored the parts become the object and, in one transaction,
the upload is `completed` and a segment and its transcode job exist
(`intake.segment_and_transcode`, as for the raw POST).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from core import catalog, db, intake, layout, queue, tus
from core.settings import Settings
from core.storage import NoSuchUpload, ObjectNotFound, Storage, UploadedPart
from core.tus import TusError

log = logging.getLogger("storyforge.uploads")
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
    """What a creation request asked for, checked (tus.parse_metadata + intake)."""

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


async def create(
    pool: asyncpg.Pool, storage: Storage, settings: Settings, new: NewUpload
) -> Upload:
    """Start the multipart upload, then the row and its expiry job in one transaction
    (the multipart upload is aborted if that fails)."""
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
                tus.part_size(new.length, storage.min_part_size),
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


class LeaseLost(Exception):
    """The request's lease on the upload expired and another request took it."""


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
        self.unconfirmed = unconfirmed  # from ParkedLeases: not ours until a fenced write
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
        parked: ParkedLeases | None = None,
    ) -> tuple[Lease, Upload] | None:
        """The lease and the upload as it is now, or None when the upload is not open,
        has expired, is held by another request, or is not at `offset`. A lease this
        process parked at `offset` is taken without a round trip."""
        if parked is not None and offset is not None:
            found = parked.take(upload_id, offset)
            if found is not None:
                token, upload, part = found
                return cls(pool, upload_id, token, seconds, part, unconfirmed=True), upload
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
            raise LeaseLost(f"upload {self.upload_id}: lease lost")
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
        except LeaseLost:
            return False
        return True

    async def end(self, conn: queue.Conn, status: str, error: str | None = None) -> Upload:
        row = await conn.fetchrow(db.q("upload_end"), self.upload_id, self.token, status, error)
        if row is None:
            raise LeaseLost(f"upload {self.upload_id}: lease lost")
        self.released = True
        return Upload.from_row(row)

    async def release(self) -> None:
        if self.released:
            return
        with contextlib.suppress(Exception):
            await self.pool.execute(db.q("upload_release"), self.upload_id, self.token)


class ParkedLeases:
    """The leases this process parked (`Lease.commit(park=True)`), by upload: the token,
    the upload as committed, and the part number allocated for the next request. Kept
    for `seconds` at most, `limit` at most (the oldest go first): an entry is a shortcut,
    never the truth, and a stale one only costs its request a refused fenced write."""

    def __init__(
        self, seconds: float, limit: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seconds = seconds
        self._limit = limit
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, uuid.UUID, Upload, int]] = OrderedDict()

    def put(self, lease: Lease, upload: Upload) -> None:
        if lease.parked_part is None or upload.status != "open" or upload.whole:
            return
        self._entries.pop(upload.id, None)
        self._entries[upload.id] = (self._clock(), lease.token, upload, lease.parked_part)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def take(self, upload_id: str, offset: int) -> tuple[uuid.UUID, Upload, int] | None:
        """The parked lease of `upload_id` if it is at `offset`, fresh, and the upload is
        not about to expire (the claim checks expiry in the database: this checks it
        with a minute to spare)."""
        entry = self._entries.pop(upload_id, None)
        if entry is None:
            return None
        parked_at, token, upload, part = entry
        if (
            upload.received != offset
            or self._clock() - parked_at > self._seconds
            or upload.expires_at.timestamp() - time.time() < 60
        ):
            return None
        return token, upload, part

    def forget(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)


async def refusal(pool: asyncpg.Pool, upload_id: str, offset: int | None) -> TusError:
    """Why a lease could not be taken, as the protocol answers it."""
    upload = await get(pool, upload_id)
    if upload is None or upload.status == "terminated":
        return TusError(404, "not_found", "no such upload")
    if upload.status in ("expired", "failed") or (
        upload.status == "open" and upload.expires_at <= await pool.fetchval("SELECT now()")
    ):
        reason = upload.error or "the upload expired; start a new one"
        return TusError(410, "gone", reason)
    if upload.status == "completed":
        return TusError(409, "conflict", "the upload is complete")
    if offset is not None and offset != upload.received:
        return TusError(
            409, "conflict", f"Upload-Offset {offset} is not the upload's offset {upload.received}"
        )
    return TusError(409, "locked", "another request is writing this upload; retry shortly")


class Body:
    """A request body as the writer reads it: stops quietly where the client went away
    (what arrived is kept, tus §PATCH), refuses bytes past `limit` (413), hashes for
    Upload-Checksum, and renews the lease while bytes arrive."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        limit: int,
        lease: Lease,
        checksum: tus.Checksum | None,
        disconnects: tuple[type[BaseException], ...],
    ) -> None:
        self._chunks = chunks
        self._left = limit
        self._lease = lease
        self.checksum = checksum
        self._hash = checksum.hasher() if checksum else None
        self._disconnects = disconnects
        self.interrupted = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                if len(chunk) > self._left:
                    raise TusError(413, "too_large", "the PATCH goes past Upload-Length")
                self._left -= len(chunk)
                if self._hash is not None:
                    self._hash.update(chunk)
                await self._lease.renew_if_due()
                yield chunk
        except self._disconnects:
            self.interrupted = True

    def verified(self) -> bool:
        """Checksum extension: the whole body arrived and has the announced digest."""
        if self.checksum is None or self._hash is None:
            return True
        return not self.interrupted and self._hash.digest() == self.checksum.digest


async def write(
    storage: Storage, settings: Settings, lease: Lease, upload: Upload, body: Body
) -> Upload:
    """Store the body at the upload's offset and commit what was stored: after each
    part, or, when the body carries Upload-Checksum, once at the end if it matches
    (460 Checksum Mismatch otherwise, and nothing of the body counts)."""
    bucket = settings.internal_bucket
    before = upload
    if storage.min_part_size <= 1:
        # one part per request, streamed
        number = await lease.allocate_part()
        part = await storage.upload_part(bucket, upload.key, upload.multipart_id, number, body)
        if part.size:
            upload = replace(
                upload, parts=(*upload.parts, part), received=upload.received + part.size
            )
    else:
        upload = await _write_blocks(storage, bucket, lease, upload, body)
    if not body.verified():
        await _drop(storage, bucket, [p for p in upload.pending if p not in before.pending])
        if body.interrupted:
            return before
        raise TusError(460, "checksum_mismatch", "the body does not match its Upload-Checksum")
    return await lease.commit(upload, park=not upload.whole)


async def _write_blocks(
    storage: Storage, bucket: str, lease: Lease, upload: Upload, body: Body
) -> Upload:
    """Cut the bytes into parts at multiples of the part size; keep the rest pending.
    Without a checksum to verify first, each part is committed once stored."""
    per_part = body.checksum is None
    buffer = bytearray()
    joined: list[Pending] = []

    def pending_bytes() -> int:
        return sum(p.size for p in upload.pending)

    async def flush_part(take: int) -> None:
        nonlocal upload
        data = bytearray()
        for p in upload.pending:
            async with await storage.get(bucket, p.key) as obj:
                data += await obj.read()
        data += buffer[:take]
        number = await lease.allocate_part()
        part = await storage.upload_part(bucket, upload.key, upload.multipart_id, number, data)
        del data, buffer[:take]
        joined.extend(upload.pending)
        upload = replace(
            upload, parts=(*upload.parts, part), pending=(), received=upload.received + take
        )
        if per_part:
            upload = await lease.commit(upload)
            await _drop(storage, bucket, joined)

    async for chunk in body:
        buffer += chunk
        while pending_bytes() + len(buffer) >= upload.part_size:
            await flush_part(upload.part_size - pending_bytes())
    if upload.received + len(buffer) == upload.length and (buffer or upload.pending):
        await flush_part(len(buffer))  # the last part may be short
    elif buffer:
        key = layout.upload_pending_key(upload.id, upload.received, secrets.token_hex(4))
        await storage.put(
            bucket,
            key,
            bytes(buffer),
            content_type="application/octet-stream",
            cache_control="private, no-store",
            tags={"type": layout.INTERNAL_TAG},
        )
        upload = replace(
            upload,
            pending=(*upload.pending, Pending(key, len(buffer))),
            received=upload.received + len(buffer),
        )
    return upload


async def _drop(storage: Storage, bucket: str, pending: list[Pending]) -> None:
    """Pending objects joined into a committed part are no longer needed."""
    for p in pending:
        with contextlib.suppress(Exception):
            await storage.delete(bucket, p.key)
    pending.clear()


async def finish(
    pool: asyncpg.Pool, storage: Storage, settings: Settings, lease: Lease, upload: Upload
) -> Upload:
    """All bytes are stored: the parts become the object, then in one transaction the
    upload is completed and the segment and its transcode job are created. Idempotent
    (a retry after a crash finds the object already joined). A taken sequence or a
    deleted scene ends the upload `failed` with the reason (TusError 409 / 404)."""
    bucket = settings.internal_bucket
    try:
        await storage.complete_multipart(bucket, upload.key, upload.multipart_id, upload.parts)
    except NoSuchUpload:
        try:
            info = await storage.head(bucket, upload.key)
        except ObjectNotFound:
            info = None
        if info is None or info.size != upload.length:
            raise
    refused: TusError | None = None
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                missing = await intake.missing_target(conn, upload.scene_id, upload.contributor_id)
                if missing is not None:
                    raise TusError(404, "not_found", missing)
                await intake.segment_and_transcode(
                    conn,
                    scene_id=upload.scene_id,
                    segment_id=upload.segment_id,
                    job_id=upload.job_id,
                    sequence=upload.sequence,
                    contributor=upload.contributor_id,
                    max_attempts=settings.job_max_attempts,
                )
                done = await lease.end(conn, "completed")
        except catalog.Conflict as exc:
            refused = TusError(409, "conflict", f"{exc}: the upload cannot become a clip")
        except TusError as exc:
            refused = exc
        if refused is not None:
            await lease.end(conn, "failed", refused.message)
    await storage.delete_prefix(bucket, layout.upload_pending_prefix(upload.id))
    if refused is not None:
        await storage.delete_prefix(bucket, layout.job_prefix(upload.job_id))
        raise refused
    log.info("upload completed", extra={"sf_upload": upload.id, "sf_segment": upload.segment_id})
    return done


async def discard(storage: Storage, settings: Settings, upload: Upload) -> None:
    """Remove whatever storage holds for an upload that will not complete (idempotent):
    the multipart upload and its parts, pending objects, a joined object."""
    bucket = settings.internal_bucket
    if upload.status != "completed":  # (a completed one's parts are its object now)
        await storage.abort_multipart(bucket, upload.key, upload.multipart_id)
        await storage.delete_prefix(bucket, layout.job_prefix(upload.job_id))
    await storage.delete_prefix(bucket, layout.upload_pending_prefix(upload.id))
