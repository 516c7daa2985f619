"""S3 multipart uploads for ``S3Storage``: what the four multipart calls of the Storage
protocol (create, upload a part, complete, abort) do on S3 once ``Storage`` has checked
their arguments, and the multipart put of large objects that ``S3Storage.put`` streams
through them. A part is sent as one request body, so a part
is in memory while it is sent (S3 needs its length and, over plain HTTP, its SHA-256)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.storage.base import (
    MAX_PARTS,
    Body,
    MiB,
    NoSuchUpload,
    ObjectInfo,
    PutMeta,
    StorageError,
    UploadedPart,
    _body_kind,
)
from core.storage.s3_boundary import quote_etag, s3_errors

MIN_PART_SIZE = 5 * MiB
"""S3's smallest part but the last (EntityTooSmall below it)."""


def write_args(meta: PutMeta) -> dict[str, str]:
    """PutObject / CreateMultipartUpload parameters for an object's HTTP metadata."""
    extra = {"ContentType": meta.content_type}
    if meta.cache_control is not None:
        extra["CacheControl"] = meta.cache_control
    if meta.tags:
        extra["Tagging"] = urllib.parse.urlencode(meta.tags)
    return extra


async def _part_bytes(body: Body) -> bytes:
    kind = _body_kind(body)
    if kind == "bytes":
        return body if isinstance(body, bytes) else bytes(body)  # type: ignore[arg-type]
    if kind == "path":
        return await asyncio.to_thread(Path(body).read_bytes)  # type: ignore[arg-type]
    out = bytearray()
    async for chunk in body:  # type: ignore[union-attr]
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"stream yielded {type(chunk).__name__}, expected bytes")
        out += chunk
    return bytes(out)


class S3Multipart:
    """The multipart half of ``S3Storage`` (which sets ``_client``)."""

    _client: Any
    min_part_size: int = MIN_PART_SIZE

    async def _create_multipart(self, bucket: str, key: str, meta: PutMeta) -> str:
        return await self._create(bucket, key, write_args(meta))

    async def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Body
    ) -> UploadedPart:
        return await self._send_part(bucket, key, upload_id, number, await _part_bytes(body))

    async def _complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> ObjectInfo:
        await self._complete(bucket, key, upload_id, parts)
        head: ObjectInfo = await self.head(bucket, key)  # type: ignore[attr-defined]
        return head

    async def _abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        with (
            contextlib.suppress(NoSuchUpload),
            s3_errors("AbortMultipartUpload", bucket, key, object_op=False),
        ):
            await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    async def _create(self, bucket: str, key: str, extra: Mapping[str, str]) -> str:
        with s3_errors("CreateMultipartUpload", bucket, key, object_op=False):
            created = await self._client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        return str(created["UploadId"])

    async def _send_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes
    ) -> UploadedPart:
        with s3_errors("UploadPart", bucket, key, object_op=False):
            uploaded = await self._client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return UploadedPart(number, quote_etag(uploaded["ETag"]), len(data))

    async def _complete(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> None:
        listed = [{"ETag": p.etag, "PartNumber": p.number} for p in parts]
        with s3_errors("CompleteMultipartUpload", bucket, key, object_op=False):
            await self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
            )

    async def _multipart(
        self, bucket: str, key: str, extra: Mapping[str, str], blocks: AsyncIterator[bytes]
    ) -> None:
        """Put ``key`` from ``blocks`` (parts of at least MIN_PART_SIZE but the last);
        aborted on any failure."""
        upload_id = await self._create(bucket, key, extra)
        parts: list[UploadedPart] = []
        try:
            async for block in blocks:
                number = len(parts) + 1
                if number > MAX_PARTS:
                    raise StorageError(f"s3://{bucket}/{key}: more than {MAX_PARTS} parts")
                parts.append(await self._send_part(bucket, key, upload_id, number, block))
                del block
            await self._complete(bucket, key, upload_id, parts)
        except BaseException:
            await self._abort(bucket, key, upload_id)
            raise

    async def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        # Shielded so a cancelled upload still gives its parts back; failures to abort
        # are left to the bucket's AbortIncompleteMultipartUpload lifecycle rule.
        with contextlib.suppress(Exception):
            await asyncio.shield(
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            )
