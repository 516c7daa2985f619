"""S3 multipart uploads for ``S3Storage``: the four calls of the Storage protocol
(create, upload a part, complete, abort) and the multipart put of large objects that
``S3Storage.put`` streams through them. A part is sent as one request body, so a part
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
    StorageError,
    UploadedPart,
    _body_kind,
    _check_part,
    _check_parts,
    _validate_put_args,
    validate_bucket,
    validate_key,
)
from core.storage.s3_boundary import quote_etag, s3_errors

MIN_PART_SIZE = 5 * MiB
"""S3's smallest part but the last (EntityTooSmall below it)."""


def write_args(
    content_type: str, cache_control: str | None, tags: Mapping[str, str]
) -> dict[str, str]:
    """PutObject / CreateMultipartUpload parameters for an object's HTTP metadata."""
    extra = {"ContentType": content_type}
    if cache_control is not None:
        extra["CacheControl"] = cache_control
    if tags:
        extra["Tagging"] = urllib.parse.urlencode(tags)
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

    async def create_multipart(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        cache_control: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        validate_bucket(bucket)
        validate_key(key)
        extra = write_args(
            content_type, cache_control, _validate_put_args(content_type, cache_control, tags)
        )
        return await self._create(bucket, key, extra)

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Body
    ) -> UploadedPart:
        validate_bucket(bucket)
        validate_key(key)
        _check_part(upload_id, number)
        return await self._upload_part(bucket, key, upload_id, number, await _part_bytes(body))

    async def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        _check_parts(upload_id, parts)
        await self._complete(bucket, key, upload_id, parts)
        head: ObjectInfo = await self.head(bucket, key)  # type: ignore[attr-defined]
        return head

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        _check_part(upload_id, 1)
        with (
            contextlib.suppress(NoSuchUpload),
            s3_errors("AbortMultipartUpload", bucket, key, object_op=False),
        ):
            await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    async def _create(self, bucket: str, key: str, extra: Mapping[str, str]) -> str:
        with s3_errors("CreateMultipartUpload", bucket, key, object_op=False):
            created = await self._client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        return str(created["UploadId"])

    async def _upload_part(
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
                parts.append(await self._upload_part(bucket, key, upload_id, number, block))
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
