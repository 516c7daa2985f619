"""Writing many small objects at once, for tests that need thousands of them in place
(S3's 1,000-key pages, batched deletes) before the behaviour they check."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from core.storage import S3Storage, Storage
from core.storage.base import PutMeta
from core.storage.s3_multipart import write_args

Tags = Callable[[str], Mapping[str, str]]


async def put_many(
    storage: Storage,
    objects: Iterable[tuple[str, str]],
    *,
    content_type: Callable[[str], str] = lambda key: "text/plain",
    tags: Tags = lambda key: {},
    concurrency: int = 48,
) -> None:
    """Store every (bucket, key), the key's bytes as its body, `concurrency` at a time,
    with `content_type(key)` and `tags(key)`. On S3 one PutObject each, with the
    parameters S3Storage.put sends (write_args), but not the HeadObject that put
    reads its answer back with: half of moto's requests, which cost a few ms of CPU
    each. The tests read back what is stored (listings, heads) all the same."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(bucket: str, key: str) -> None:
        async with semaphore:
            if isinstance(storage, S3Storage):
                meta = PutMeta(content_type(key), None, tags(key))
                await storage.client.put_object(
                    Bucket=bucket, Key=key, Body=key.encode(), **write_args(meta)
                )
            else:
                await storage.put(
                    bucket, key, key.encode(), content_type=content_type(key), tags=tags(key)
                )

    await asyncio.gather(*(one(bucket, key) for bucket, key in objects))
