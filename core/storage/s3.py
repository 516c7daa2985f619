"""``S3Storage``: the Storage protocol on S3 or any S3-compatible endpoint, through one
long-lived aiobotocore client (path-style addressing), and ``open_s3`` that creates it.

Large uploads go multipart; reads are one GetObject that carries the request's Range and
the preconditions S3 evaluates exactly as RFC 9110 does, checked afterwards by
``core.conditional.decide`` (``S3Storage.conditional_get``).

Requests and answers are translated at the boundary by ``s3_boundary``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from core.conditional import decide
from core.storage.base import (
    DELETE_BATCH,
    MAX_PARTS,
    Body,
    DeleteResult,
    GiB,
    MiB,
    ObjectInfo,
    PutMeta,
    Storage,
    StorageError,
    StreamedObject,
    Unsent,
    _body_kind,
    _delete_with_retries,
    validate_bucket,
    validate_key,
    validate_prefix,
)
from core.storage.s3_boundary import (
    CONTENT_RANGE_RE,
    S3Body,
    client_error_parts,
    get_object_args,
    quote_etag,
    refusal,
    s3_errors,
    utc,
)
from core.storage.s3_multipart import MIN_PART_SIZE, S3Multipart, write_args

PART_SIZE = 16 * MiB
"""S3 uploads bigger than one part (files and streams) go multipart, in parts of this size."""

MAX_COPY_OBJECT_SIZE = 5 * GiB
"""CopyObject's limit; bigger objects are copied with UploadPartCopy."""

COPY_PART_SIZE = 512 * MiB


async def _blocks(source: AsyncIterable[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Re-cut an async byte stream into blocks of exactly ``size`` bytes (the last may be
    shorter, and is empty only if the stream was). Holds at most ~2 blocks."""
    buf = bytearray()
    async for chunk in source:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"stream yielded {type(chunk).__name__}, expected bytes")
        buf += chunk
        while len(buf) >= size:
            with memoryview(buf) as view:
                block = bytes(view[:size])
            del buf[:size]
            yield block
            del block
    yield bytes(buf)


class S3Storage(S3Multipart, Storage):
    """Storage on S3 or an S3-compatible endpoint, through one aiobotocore client.

    Build it with ``open_s3``; ``aclose()`` closes the client (and its connection pool).
    """

    def __init__(
        self,
        client: Any,
        stack: contextlib.AsyncExitStack,
        *,
        region: str,
        part_size: int = PART_SIZE,
        copy_threshold: int = MAX_COPY_OBJECT_SIZE,
        copy_part_size: int = COPY_PART_SIZE,
        ping_timeout: float = 5.0,
    ) -> None:
        if part_size < MIN_PART_SIZE or copy_part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 parts must be at least {MIN_PART_SIZE} bytes")
        self._client = client
        self._stack = stack
        self._region = region
        self.part_size = part_size
        self.copy_threshold = copy_threshold
        self.copy_part_size = copy_part_size
        self.ping_timeout = ping_timeout
        self._ping_bucket: str | None = None
        self._closed = False

    @property
    def client(self) -> Any:
        """The underlying aiobotocore S3 client (presigning, tests); owned by this object."""
        return self._client

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._stack.aclose()

    # -- writes

    async def _put(self, bucket: str, key: str, body: Body, meta: PutMeta) -> ObjectInfo:
        extra = write_args(meta)
        kind = _body_kind(body)
        if kind == "bytes":
            data = body if isinstance(body, bytes) else bytes(body)  # type: ignore[arg-type]
            await self._put_object(bucket, key, data, extra)
        elif kind == "path":
            await self._put_file(bucket, key, Path(body), extra)  # type: ignore[arg-type]
        else:
            await self._put_stream(bucket, key, body, extra)  # type: ignore[arg-type]
        return await self.head(bucket, key)

    async def _put_object(
        self, bucket: str, key: str, data: bytes, extra: Mapping[str, str]
    ) -> None:
        with s3_errors("PutObject", bucket, key, object_op=False):
            await self._client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    async def _put_file(self, bucket: str, key: str, path: Path, extra: Mapping[str, str]) -> None:
        f: IO[bytes] = await asyncio.to_thread(open, path, "rb")
        try:
            size = os.fstat(f.fileno()).st_size
            if size <= self.part_size:
                data = await asyncio.to_thread(f.read)
                await self._put_object(bucket, key, data, extra)
                return
            part_size = max(self.part_size, -(-size // MAX_PARTS))

            async def parts() -> AsyncIterator[bytes]:
                while block := await asyncio.to_thread(f.read, part_size):
                    yield block
                    del block

            await self._multipart(bucket, key, extra, parts())
        finally:
            await asyncio.to_thread(f.close)

    async def _put_stream(
        self, bucket: str, key: str, body: AsyncIterable[bytes], extra: Mapping[str, str]
    ) -> None:
        blocks = _blocks(body, self.part_size)
        try:
            first = await anext(blocks)
            if len(first) < self.part_size:
                # Short blocks come only at the end: the whole stream fit in one.
                await self._put_object(bucket, key, first, extra)
                return

            async def all_blocks() -> AsyncIterator[bytes]:
                nonlocal first
                block, first = first, b""
                yield block
                del block
                async for block in blocks:
                    if block:
                        yield block
                    del block

            await self._multipart(bucket, key, extra, all_blocks())
        finally:
            await blocks.aclose()

    # -- reads

    @staticmethod
    def _info(key: str, response: Mapping[str, Any], size: int) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=size,
            etag=quote_etag(response["ETag"]),
            last_modified=utc(response["LastModified"]),
            content_type=response.get("ContentType"),
            cache_control=response.get("CacheControl"),
        )

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        with s3_errors("HeadObject", bucket, key):
            response = await self._client.head_object(Bucket=bucket, Key=key)
        return self._info(key, response, int(response["ContentLength"]))

    async def conditional_get(
        self, bucket: str, key: str, conditions: Mapping[str, str]
    ) -> StreamedObject | Unsent:
        validate_bucket(bucket)
        validate_key(key)
        outcome = await self._get_object(bucket, key, conditions, get_object_args(conditions))
        if outcome is None:
            # RFC 9110 §13.1.5: the If-Range did not hold (or S3 found the Range
            # unsatisfiable, which counts only if it did), so the Range must be ignored.
            # S3 knows no If-Range: the whole object takes a second request. Only a
            # client resuming a copy of an object that changed since gets here.
            outcome = await self._get_object(
                bucket, key, conditions, get_object_args(conditions, ranged=False)
            )
            assert outcome is not None  # no Range was sent
        return outcome

    async def _get_object(
        self, bucket: str, key: str, conditions: Mapping[str, str], args: Mapping[str, Any]
    ) -> StreamedObject | Unsent | None:
        """One GetObject with ``args``, its answer checked against ``conditions`` by
        ``decide`` (what S3 was not asked to evaluate is decided here, on the object it
        returned). None when S3 applied a Range that the If-Range says to ignore."""
        try:
            response = await self._client.get_object(Bucket=bucket, Key=key, **args)
        except ClientError as exc:
            unsent = refusal(exc)
            if unsent is None:
                with s3_errors("GetObject", bucket, key):
                    raise
            if unsent.status != 416:
                return unsent
            if "Range" in args and conditions.get("If-Range") is not None:
                return None  # §13.1.5: only a matching If-Range makes the Range count
            if unsent.size is None:  # S3 reports ActualObjectSize; others may not
                return Unsent(416, size=(await self.head(bucket, key)).size)
            return unsent
        except (BotoCoreError, aiohttp.ClientError):
            with s3_errors("GetObject", bucket, key):
                raise
        body = response["Body"]
        outcome: StreamedObject | Unsent | None = None
        try:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            match = CONTENT_RANGE_RE.fullmatch(response.get("ContentRange") or "")
            if status == 206 and match and match.group(3) != "*":
                sent: tuple[int, int] | None = (int(match.group(1)), int(match.group(2)))
                size = int(match.group(3))
            else:  # the whole object (asked for, or the server ignored the Range)
                sent = None
                size = int(response["ContentLength"])
            info = self._info(key, response, size)
            decision = decide(
                "GET", conditions, etag=info.etag, last_modified=info.last_modified, size=size
            )
            if decision.status in (304, 412, 416):
                outcome = Unsent(decision.status, info.etag, info.last_modified, size)
            elif sent is None:
                outcome = StreamedObject(
                    info,
                    decision.start,
                    decision.end,
                    S3Body(body, bucket, key, skip=decision.start),
                    partial=decision.status == 206,
                )
            elif decision.status == 206:
                if sent != (decision.start, decision.end):
                    raise StorageError(
                        f"s3://{bucket}/{key}: asked for bytes {decision.start}-{decision.end}"
                        f" of {size}, sent {sent[0]}-{sent[1]}"
                    )
                outcome = StreamedObject(
                    info, sent[0], sent[1], S3Body(body, bucket, key), partial=True
                )
        finally:
            if not isinstance(outcome, StreamedObject):
                body.close()
        return outcome

    async def tags(self, bucket: str, key: str) -> dict[str, str]:
        validate_bucket(bucket)
        validate_key(key)
        with s3_errors("GetObjectTagging", bucket, key):
            response = await self._client.get_object_tagging(Bucket=bucket, Key=key)
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        validate_bucket(bucket)
        validate_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        with s3_errors("ListObjectsV2", bucket, prefix, object_op=False):
            async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=quote_etag(item["ETag"]),
                        last_modified=utc(item["LastModified"]),
                        content_type=None,
                        cache_control=None,
                    )

    async def local_path(self, bucket: str, key: str) -> Path | None:
        validate_bucket(bucket)
        validate_key(key)
        return None

    # -- deletes and copies

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        with s3_errors("DeleteObject", bucket, key, object_op=False):
            await self._client.delete_object(Bucket=bucket, Key=key)

    async def _delete_objects(self, bucket: str, keys: Sequence[str]) -> tuple[int, dict[str, str]]:
        with s3_errors("DeleteObjects", bucket, keys[0], object_op=False):
            response = await self._client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
        failed = {
            e["Key"]: f"{e.get('Code', 'Error')}: {e.get('Message', '')}".rstrip(": ")
            for e in response.get("Errors", ())
        }
        return len(keys) - len(failed), failed

    async def delete_prefix(self, bucket: str, prefix: str) -> DeleteResult:
        validate_bucket(bucket)
        validate_prefix(prefix, allow_empty=False)
        deleted = 0
        errors: dict[str, str] = {}
        start_after: str | None = None
        while True:
            # StartAfter (not a continuation token) stays correct while we delete what
            # we have listed, whatever the server's token scheme.
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": DELETE_BATCH}
            if start_after is not None:
                kwargs["StartAfter"] = start_after
            with s3_errors("ListObjectsV2", bucket, prefix, object_op=False):
                page = await self._client.list_objects_v2(**kwargs)
            keys = [item["Key"] for item in page.get("Contents", ())]
            if not keys:
                break
            done, failed = await _delete_with_retries(
                keys, lambda batch: self._delete_objects(bucket, batch)
            )
            deleted += done
            errors.update(failed)
            if not page.get("IsTruncated"):
                break
            start_after = keys[-1]
        return DeleteResult(deleted=deleted, errors=tuple(sorted(errors.items())))

    async def _copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo:
        source = await self.head(src_bucket, src_key)
        if source.size > self.copy_threshold:
            await self._multipart_copy(src_bucket, source, dst_bucket, dst_key)
        else:
            with s3_errors("CopyObject", src_bucket, src_key):
                await self._client.copy_object(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    CopySource={"Bucket": src_bucket, "Key": src_key},
                    CopySourceIfMatch=source.etag,
                    MetadataDirective="COPY",
                    TaggingDirective="COPY",
                )
        return await self.head(dst_bucket, dst_key)

    async def _multipart_copy(
        self, src_bucket: str, source: ObjectInfo, dst_bucket: str, dst_key: str
    ) -> None:
        tags = await self.tags(src_bucket, source.key)
        meta = PutMeta(
            source.content_type or "application/octet-stream", source.cache_control, tags
        )
        upload_id = await self._create(dst_bucket, dst_key, write_args(meta))
        part_size = max(self.copy_part_size, -(-source.size // MAX_PARTS))
        parts: list[dict[str, Any]] = []
        try:
            for number, first in enumerate(range(0, source.size, part_size), start=1):
                last = min(first + part_size, source.size) - 1
                with s3_errors("UploadPartCopy", src_bucket, source.key):
                    response = await self._client.upload_part_copy(
                        Bucket=dst_bucket,
                        Key=dst_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": src_bucket, "Key": source.key},
                        CopySourceIfMatch=source.etag,
                        CopySourceRange=f"bytes={first}-{last}",
                    )
                parts.append({"ETag": response["CopyPartResult"]["ETag"], "PartNumber": number})
            with s3_errors("CompleteMultipartUpload", dst_bucket, dst_key, object_op=False):
                await self._client.complete_multipart_upload(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            await self._abort(dst_bucket, dst_key, upload_id)
            raise

    # -- buckets and health

    async def ensure_buckets(self, names: Iterable[str]) -> None:
        names = [validate_bucket(name) for name in names]
        for name in names:
            try:
                await self._client.head_bucket(Bucket=name)
                continue
            except ClientError as exc:
                code, _, status = client_error_parts(exc)
                if status != 404 and code not in ("NoSuchBucket", "NotFound", "404"):
                    with s3_errors("HeadBucket", name, object_op=False):
                        raise
            except (BotoCoreError, aiohttp.ClientError):
                with s3_errors("HeadBucket", name, object_op=False):
                    raise
            kwargs: dict[str, Any] = {"Bucket": name}
            if self._region and self._region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
            try:
                with s3_errors("CreateBucket", name, object_op=False):
                    await self._client.create_bucket(**kwargs)
            except StorageError as exc:
                cause = exc.__cause__
                if not (
                    isinstance(cause, ClientError)
                    and client_error_parts(cause)[0] == "BucketAlreadyOwnedByYou"
                ):
                    raise
        if names and self._ping_bucket is None:
            self._ping_bucket = names[0]

    async def ping(self) -> None:
        """HeadBucket on the first ensured bucket (else ListBuckets, where AccessDenied
        still proves the endpoint and credentials work), within ``ping_timeout``."""
        bucket = self._ping_bucket
        try:
            async with asyncio.timeout(self.ping_timeout):
                if bucket is not None:
                    with s3_errors("HeadBucket", bucket, object_op=False):
                        await self._client.head_bucket(Bucket=bucket)
                    return
                try:
                    await self._client.list_buckets()
                except ClientError as exc:
                    if client_error_parts(exc)[0] != "AccessDenied":
                        with s3_errors("ListBuckets", "*", object_op=False):
                            raise
                except (BotoCoreError, aiohttp.ClientError):
                    with s3_errors("ListBuckets", "*", object_op=False):
                        raise
        except TimeoutError:
            raise StorageError(f"S3 did not answer within {self.ping_timeout}s") from None


async def open_s3(
    endpoint_url: str | None,
    region: str,
    access_key: str | None,
    secret_key: str | None,
    *,
    part_size: int = PART_SIZE,
    max_pool_connections: int = 64,
) -> S3Storage:
    """Create the process's S3 client: path-style addressing (any S3-compatible
    endpoint), standard retries, no optional checksums (which some S3-compatible
    servers reject). Without keys, botocore's default credential chain applies."""
    if (access_key is None) != (secret_key is None):
        raise ValueError("give both access_key and secret_key, or neither")
    config = AioConfig(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=max_pool_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    stack = contextlib.AsyncExitStack()
    try:
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url or None,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )
        )
        return S3Storage(
            client,
            stack,
            region=region,
            part_size=part_size,
        )
    except BaseException:
        await stack.aclose()
        raise
