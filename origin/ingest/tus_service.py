"""tus 1.0.0 uploads, the protocol's side (origin/ingest/routes.py answers the
requests; core/uploads.py keeps the state the expire_upload job shares): a creation
request checked, a request's lease taken (or refused as the protocol answers it), its
body stored at the upload's offset, the last byte turning the upload into a clip.

A PATCH that ends with bytes still to come parks its lease (`ParkedLeases`): expired,
so any request anywhere may take it, but the next PATCH at that offset reaching the
same process (a tus client's next chunk on its connection) writes without a claim;
its commit is fenced by the token like any other write.

Storage with a minimum part size (S3: 5 MiB) gets parts cut at multiples of the
upload's part size (`tus.part_size`); bytes past the last whole part are kept as
`pending` objects in the internal bucket (never in memory between requests) and
joined to the next part. Storage without one (LocalStorage) gets one part per
request, streamed.

When the last byte is stored the parts become the object and, in one transaction,
the upload is `completed` and a segment and its transcode job exist
(`intake.segment_and_transcode`, as for the raw POST).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace

import asyncpg

from core import captions, catalog, layout, subtitles, uploads
from core.settings import Settings
from core.storage import NoSuchUpload, ObjectNotFound, Storage, StorageError
from core.uploads import Lease, NewUpload, Pending, Upload, UploadLeaseLost
from origin.ingest import intake, tus
from origin.ingest.tus import TusError

log = logging.getLogger("storyforge.uploads")


CAPTIONS_KEY = "captions."  # Upload-Metadata `captions.{lang}`: the clip's captions


def metadata_captions(
    meta: Mapping[str, str], limits: captions.Limits
) -> dict[str, list[captions.Cue]]:
    """The captions an upload's metadata carries (`captions.en`, `captions.pt-BR`: a
    WebVTT or SRT file, told apart by WebVTT's signature), parsed and checked as the
    captions API does (core/captions.py); TusError with its status and line
    otherwise, 400 for a key that names no BCP 47 tag."""
    found: dict[str, list[captions.Cue]] = {}
    for key, text in meta.items():
        if not key.startswith(CAPTIONS_KEY):
            continue
        language = captions.language_tag(key.removeprefix(CAPTIONS_KEY))
        if language is None:
            raise TusError(400, "bad_language", f"Upload-Metadata {key!r}: not a BCP 47 tag")
        body = text.encode()
        vtt = text.lstrip("\ufeff").startswith("WEBVTT")
        kind = captions.VTT_TYPES[0] if vtt else captions.SRT_TYPES[0]
        try:
            found[language] = captions.parse(body, kind, limits)
        except captions.CaptionError as exc:
            raise TusError(exc.status, "bad_captions", f"Upload-Metadata {key!r}: {exc}") from None
    return found


def new_upload(
    headers: Mapping[str, str], max_upload_bytes: int, limits: captions.Limits
) -> NewUpload:
    """Creation §POST: Upload-Length (Upload-Defer-Length is not offered), and
    Upload-Metadata carrying sceneId, contributor, optional sequence, filename and
    filetype, checked as the raw POST checks its query, and optional captions
    (`metadata_captions`); TusError otherwise."""
    if "Upload-Defer-Length" in headers:
        raise TusError(
            400, "bad_request", "Upload-Defer-Length is not supported: send Upload-Length"
        )
    length = tus.parse_int("Upload-Length", headers.get("Upload-Length"))
    if length > max_upload_bytes:
        raise TusError(413, "too_large", f"the upload is larger than {max_upload_bytes} bytes")
    if length == 0:
        raise TusError(400, "empty_upload", "the upload is empty")
    raw_metadata = headers.get("Upload-Metadata", "")
    meta = tus.parse_metadata(raw_metadata)
    scene_id = meta.get("sceneId", "")
    if not layout.is_id(scene_id, "scn"):
        raise TusError(400, "bad_request", "Upload-Metadata 'sceneId' must be a scene id (scn_...)")
    contributor = meta.get("contributor", "")
    if not intake.contributor_ok(contributor):
        raise TusError(
            400, "bad_request", "Upload-Metadata 'contributor' must be a user id (usr_...)"
        )
    sequence = None
    if "sequence" in meta:
        try:
            sequence = intake.parse_sequence(meta["sequence"])
        except ValueError as exc:
            raise TusError(400, "bad_request", str(exc)) from None
    content_type = meta.get("filetype") or "application/octet-stream"
    if not intake.upload_type_ok(content_type):
        raise TusError(
            415, "unsupported_media_type", f"uploads must be a video, not {content_type!r}"
        )
    filename = (meta.get("filename") or "")[:255] or None
    metadata_captions(meta, limits)  # refused now, not once the bytes are in
    return NewUpload(
        scene_id, contributor, sequence, filename, content_type, raw_metadata.strip(), length
    )


async def create(
    pool: asyncpg.Pool, storage: Storage, settings: Settings, new: NewUpload
) -> Upload:
    """A new upload of a live scene by a known contributor (TusError 404 otherwise),
    its bytes to be cut into parts as this storage wants them."""
    async with pool.acquire() as conn:
        missing = await intake.missing_target(conn, new.scene_id, new.contributor)
    if missing is not None:
        raise TusError(404, "not_found", missing)
    part_size = tus.part_size(new.length, storage.min_part_size)
    upload = await uploads.create(pool, storage, settings, new, part_size=part_size)
    log.info("upload created", extra={"sf_upload": upload.id, "sf_bytes": upload.length})
    return upload


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


async def take_lease(
    pool: asyncpg.Pool,
    upload_id: str,
    seconds: float,
    *,
    offset: int | None,
    parked: ParkedLeases | None = None,
    expired_too: bool = False,
) -> tuple[Lease, Upload]:
    """The upload's lease and the upload as it is now, or the TusError refusing it. A
    lease this process parked at `offset` is taken without a round trip (unconfirmed
    until its first fenced write)."""
    if parked is not None and offset is not None:
        found = parked.take(upload_id, offset)
        if found is not None:
            token, upload, part = found
            return Lease(pool, upload_id, token, seconds, part, unconfirmed=True), upload
    taken = await Lease.take(pool, upload_id, seconds, offset=offset, expired_too=expired_too)
    if taken is None:
        raise await refusal(pool, upload_id, offset)
    return taken


async def refusal(pool: asyncpg.Pool, upload_id: str, offset: int | None) -> TusError:
    """Why a lease could not be taken, as the protocol answers it."""
    upload = await uploads.get(pool, upload_id)
    if upload is None or upload.status == "terminated":
        return TusError(404, "not_found", "no such upload")
    if upload.status in ("expired", "failed") or (
        upload.status == "open" and await uploads.expired(pool, upload_id)
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
                limits = captions.Limits(settings.captions_max_bytes, settings.captions_max_cues)
                carried = metadata_captions(tus.parse_metadata(upload.metadata), limits)
                for language, cues in carried.items():  # the clip and its captions at once
                    await subtitles.put(
                        conn, upload.segment_id, language, cues, webhooks=settings.webhook_urls
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


async def store(
    pool: asyncpg.Pool,
    storage: Storage,
    settings: Settings,
    parked: ParkedLeases,
    upload_id: str,
    offset: int,
    body: AsyncIterator[bytes],
    *,
    content_length: int | None,
    checksum: tus.Checksum | None,
    cut_short: tuple[type[BaseException], ...],
) -> Upload:
    """Take the upload's lease at `offset`, store `body`, finish the upload when its
    last byte came or park the lease for the next PATCH; the lease is released
    whatever happens. A body ended by one of `cut_short` (client gone, idle timeout)
    is committed as far as it came (tus §PATCH) and neither finished nor parked: the
    caller answers its cause."""
    lease, upload = await take_lease(
        pool, upload_id, settings.upload_lock_seconds, offset=offset, parked=parked
    )
    try:
        left = upload.length - upload.received
        if content_length is not None and content_length > left:
            raise TusError(
                413, "too_large", f"the body goes past Upload-Length ({left} bytes left)"
            )
        reader = Body(body, left, lease, checksum, cut_short)
        upload = await write(storage, settings, lease, upload, reader)
        if reader.interrupted:
            return upload
        if upload.whole:
            upload = await finish(pool, storage, settings, lease, upload)
        else:
            parked.put(lease, upload)
        return upload
    except (UploadLeaseLost, StorageError) as exc:
        if lease.unconfirmed and not await lease.held():
            # the parked lease was not this request's any more: the upload moved on
            # (another request, termination, expiry) while its bytes were stored
            raise await refusal(pool, upload_id, offset) from None
        if isinstance(exc, StorageError):
            raise
        raise TusError(
            409, "locked", "this request lost the upload to another one; retry"
        ) from None
    finally:
        await lease.release()


async def finish_interrupted(
    pool: asyncpg.Pool, storage: Storage, settings: Settings, upload: Upload
) -> Upload:
    """An upload whose bytes all arrived but whose completion was cut short is
    completed now (HEAD); unchanged when another request holds it."""
    taken = await Lease.take(pool, upload.id, settings.upload_lock_seconds, offset=None)
    if taken is None:
        return upload  # someone else is at it
    lease, upload = taken
    try:
        return await finish(pool, storage, settings, lease, upload)
    finally:
        await lease.release()


async def terminate(
    pool: asyncpg.Pool, storage: Storage, settings: Settings, parked: ParkedLeases, upload_id: str
) -> None:
    """Termination: the upload ends `terminated` (expired or not) and what storage
    holds for it goes; TusError when it cannot be taken."""
    lease, upload = await take_lease(
        pool, upload_id, settings.upload_lock_seconds, offset=None, expired_too=True
    )
    parked.forget(upload_id)
    try:
        upload = await lease.end(pool, "terminated")
    finally:
        await lease.release()
    await uploads.discard(storage, settings, upload)
