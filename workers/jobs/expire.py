"""The `expire_upload` job, queued for each tus upload when it is created and due
when it expires (UPLOAD_EXPIRY_SECONDS and a minute): an upload still open then is
`expired` (later requests get 410) and its parts and pending bytes are removed; for
any other ending (completed, terminated, failed) whatever storage still holds for it
is removed, so a crash halfway through a cleanup is finished here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from core import uploads
from core.settings import Settings
from core.storage import Storage
from workers.runtime.loop import JobContext, PermanentError, RetryAfter


def make_handler(settings: Settings, storage: Storage) -> Callable[[JobContext], Awaitable[None]]:
    async def handle(ctx: JobContext) -> None:
        await expire(ctx, settings, storage)

    return handle


async def expire(ctx: JobContext, settings: Settings, storage: Storage) -> None:
    upload_id = str(ctx.job.payload.get("upload_id", ""))
    upload = await uploads.get(ctx.pool, upload_id)
    if upload is None:
        raise PermanentError(f"no such upload: {upload_id!r}")
    if upload.status == "open":
        left = await uploads.expires_in(ctx.pool, upload.id) or 0.0
        if left > 0:
            raise RetryAfter("the upload has not expired yet", left + 1)
        taken = await uploads.Lease.take(
            ctx.pool, upload.id, settings.upload_lock_seconds, offset=None, expired_too=True
        )
        if taken is None:
            raise RetryAfter("a request is still writing the upload", settings.upload_lock_seconds)
        lease, upload = taken
        try:
            reason = "the upload expired before its last byte arrived; start a new one"
            upload = await lease.end(ctx.pool, "expired", reason)
        finally:
            await lease.release()
    await uploads.discard(storage, settings, upload)
