"""Contract tests for core.storage: one suite, run against LocalStorage (a temp
directory) and S3Storage (moto's S3 server over real HTTP), plus a few tests of what
only one backend has (multipart details, the directory layout, path containment)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import resource
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from core.storage import (
    CHUNK_SIZE,
    DeleteResult,
    LocalStorage,
    NoSuchUpload,
    ObjectInfo,
    ObjectNotFound,
    RangeNotSatisfiable,
    S3Storage,
    Storage,
    StorageError,
    StreamedObject,
    Unsent,
    UploadedPart,
    open_s3,
    open_storage,
)
from core.storage.base import _delete_with_retries
from tests.helpers.objects import put_many
from tests.helpers.s3calls import s3_calls

MiB = 1024 * 1024
REGION = "us-east-1"


@dataclass
class Backend:
    kind: str
    storage: Storage
    bucket: str
    other: str
    root: Path | None


@pytest.fixture(params=["local", "s3"])
def backend_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    if request.param == "s3":
        return {"kind": "s3", "endpoint_url": request.getfixturevalue("moto_endpoint")}
    if request.param == "local-in-memory":
        return {"kind": "local", "root": request.getfixturevalue("memory_dir") / "store"}
    return {"kind": "local", "root": tmp_path / "store"}


# LocalStorage fsyncs every object, its sidecar and both directories: for tests of
# thousands of objects that check listing and deleting, not durability, a directory
# in memory (tmpfs, where fsync waits on no disk) when the machine has one
MANY_OBJECTS_BACKENDS = pytest.mark.parametrize(
    "backend_config", ["local-in-memory", "s3"], ids=["local", "s3"], indirect=True
)


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="storyforge-storage-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _open(config: dict[str, object]) -> Storage:
    if config["kind"] == "s3":
        return await open_storage(
            "s3",
            endpoint_url=str(config["endpoint_url"]),
            region=REGION,
            access_key="test",
            secret_key="test",
        )
    return await open_storage("local", root=Path(str(config["root"])))


@pytest.fixture
async def backend(backend_config: dict[str, object]) -> AsyncIterator[Backend]:
    storage = await _open(backend_config)
    token = uuid.uuid4().hex[:12]
    bucket, other = f"sf-test-{token}", f"sf-other-{token}"
    root = backend_config.get("root")
    try:
        await storage.ensure_buckets([bucket, other])
        yield Backend(
            str(backend_config["kind"]), storage, bucket, other, Path(str(root)) if root else None
        )
    finally:
        try:
            if backend_config["kind"] == "s3":  # give moto its memory back
                for name in (bucket, other):
                    heads = {info.key.split("/")[0] async for info in storage.list(name)}
                    for head in heads:
                        await storage.delete_prefix(name, head)
        finally:
            await storage.aclose()


async def read_all(obj: StreamedObject) -> bytes:
    async with obj:
        return b"".join([chunk async for chunk in obj])


async def collect(items: AsyncIterator[ObjectInfo]) -> list[ObjectInfo]:
    return [item async for item in items]


def quoted_md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


# --------------------------------------------------------------------------- contract


async def test_put_get_head_round_trip(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    data = b"#EXTM3U\n#EXT-X-VERSION:3\n" * 40
    before = datetime.now(UTC) - timedelta(seconds=2)
    put = await s.put(
        b,
        "scene1/seg1/720p.m3u8",
        data,
        content_type="application/vnd.apple.mpegurl",
        cache_control="public, max-age=31536000, immutable",
        tags={"type": "hls"},
    )
    head = await s.head(b, "scene1/seg1/720p.m3u8")
    assert put == head
    assert head.key == "scene1/seg1/720p.m3u8"
    assert head.size == len(data)
    assert head.etag == quoted_md5(data)
    assert head.content_type == "application/vnd.apple.mpegurl"
    assert head.cache_control == "public, max-age=31536000, immutable"
    assert head.last_modified.tzinfo is not None
    assert head.last_modified.utcoffset() == timedelta(0)
    assert before <= head.last_modified <= datetime.now(UTC) + timedelta(seconds=2)
    assert await s.tags(b, "scene1/seg1/720p.m3u8") == {"type": "hls"}

    obj = await s.get(b, "scene1/seg1/720p.m3u8")
    assert (obj.start, obj.end, obj.length) == (0, len(data) - 1, len(data))
    assert obj.info == head
    assert await read_all(obj) == data
    assert obj.closed

    # Same bytes again: same ETag. New bytes: new ETag, size, metadata.
    again = await s.put(
        b, "scene1/seg1/720p.m3u8", data, content_type="application/vnd.apple.mpegurl"
    )
    assert again.etag == head.etag
    changed = await s.put(
        b, "scene1/seg1/720p.m3u8", b"other", content_type="text/plain", tags={"type": "internal"}
    )
    assert changed.etag == quoted_md5(b"other") != head.etag
    assert (changed.size, changed.content_type, changed.cache_control) == (5, "text/plain", None)
    assert await s.tags(b, "scene1/seg1/720p.m3u8") == {"type": "internal"}
    assert await (await s.get(b, "scene1/seg1/720p.m3u8")).read() == b"other"


async def test_empty_object_and_no_tags(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    info = await s.put(b, "empty.txt", b"", content_type="text/plain")
    assert (info.size, info.etag) == (0, quoted_md5(b""))
    assert await s.tags(b, "empty.txt") == {}
    obj = await s.get(b, "empty.txt")
    assert (obj.start, obj.end, obj.length) == (0, -1, 0)
    assert await read_all(obj) == b""
    for kwargs in ({"start": 0}, {"end": 5}, {"suffix": 5}):
        with pytest.raises(RangeNotSatisfiable) as caught:
            await s.get(b, "empty.txt", **kwargs)
        assert caught.value.size == 0, kwargs


async def test_missing_objects_and_buckets(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    for call in (
        s.head(b, "nope/x.ts"),
        s.get(b, "nope/x.ts"),
        s.get(b, "nope/x.ts", start=5),
        s.tags(b, "nope/x.ts"),
        s.copy(b, "nope/x.ts", b, "y.ts"),
        s.head("sf-no-such-bucket", "x.ts"),
    ):
        with pytest.raises(ObjectNotFound):
            await call
    assert issubclass(ObjectNotFound, StorageError)
    await s.delete(b, "nope/x.ts")  # deleting nothing is fine, as in S3
    with pytest.raises(StorageError):
        await s.put("sf-no-such-bucket", "x.ts", b"x", content_type="text/plain")
    with pytest.raises(StorageError):
        await collect(s.list("sf-no-such-bucket"))


async def test_range_reads(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    data = bytes(range(256)) * 4  # 1,024 bytes, every position distinguishable
    info = await s.put(b, "v/1080p_0001.ts", data, content_type="video/mp2t")
    cases = [
        ({"start": 0, "end": 0}, 0, 0),  # first byte
        ({"start": 100, "end": 299}, 100, 299),  # middle
        ({"start": 1000, "end": 5000}, 1000, 1023),  # end clamped to the object
        ({"start": 1023, "end": 1023}, 1023, 1023),  # last byte
        ({"start": 1000}, 1000, 1023),  # open-ended
        ({"end": 9}, 0, 9),  # from the start
        ({"suffix": 10}, 1014, 1023),  # last N bytes
        ({"suffix": 5000}, 0, 1023),  # suffix longer than the object
    ]
    for kwargs, first, last in cases:
        obj = await s.get(b, "v/1080p_0001.ts", **kwargs)
        assert (obj.start, obj.end, obj.length) == (first, last, last - first + 1), kwargs
        assert obj.info.size == 1024 and obj.info.etag == info.etag, kwargs
        assert obj.info.content_type == "video/mp2t"
        assert await read_all(obj) == data[first : last + 1], kwargs
    for kwargs in ({"start": 1024}, {"start": 5000, "end": 6000}, {"suffix": 0}):
        with pytest.raises(RangeNotSatisfiable) as caught:
            await s.get(b, "v/1080p_0001.ts", **kwargs)
        assert caught.value.size == 1024, kwargs
    for kwargs in ({"start": 10, "end": 5}, {"start": -1}, {"suffix": 5, "start": 1}):
        with pytest.raises(ValueError):
            await s.get(b, "v/1080p_0001.ts", **kwargs)


def _http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)


async def test_conditional_get_preconditions(backend: Backend) -> None:
    """RFC 9110 §13.2.2 on both backends: S3 evaluates what it can in the one GetObject,
    the rest is decided on the object it returns."""
    s, b = backend.storage, backend.bucket
    data = bytes(range(256)) * 4
    info = await s.put(b, "v/720p_0001.ts", data, content_type="video/mp2t")
    etag, mtime = info.etag, info.last_modified
    at, before, after = (_http_date(mtime + timedelta(hours=h)) for h in (0, -1, 1))
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 200),
        # §13.1.2 If-None-Match, weak comparison
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f"W/{etag}"}, 304),
        ({"If-None-Match": f'"x", {etag}'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-None-Match": '"x", "y"'}, 200),
        # §13.1.3 If-Modified-Since, ignored when If-None-Match is present
        ({"If-Modified-Since": at}, 304),
        ({"If-Modified-Since": after}, 304),
        ({"If-Modified-Since": before}, 200),
        ({"If-Modified-Since": "garbage"}, 200),
        ({"If-None-Match": '"other"', "If-Modified-Since": after}, 200),
        # §13.1.1 If-Match, strong comparison; §13.1.4 If-Unmodified-Since
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": f'"x", {etag}'}, 200),
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": f"W/{etag}"}, 412),
        ({"If-Unmodified-Since": before}, 412),
        ({"If-Unmodified-Since": at}, 200),
        ({"If-Match": etag, "If-Unmodified-Since": before}, 200),
        # §13.2.2 order: 412 before 304, both before Range
        ({"If-Match": '"other"', "If-None-Match": etag}, 412),
        ({"If-Match": '"x", "y"', "If-None-Match": etag}, 412),
        ({"If-None-Match": etag, "Range": "bytes=0-0"}, 304),
        ({"If-Match": '"other"', "Range": "bytes=5000-"}, 412),
    ]
    for conditions, status in cases:
        outcome = await s.conditional_get(b, "v/720p_0001.ts", conditions)
        if status == 200:
            assert isinstance(outcome, StreamedObject), (conditions, outcome)
            assert not outcome.partial and outcome.info == info, conditions
            assert await read_all(outcome) == data, conditions
        else:
            assert isinstance(outcome, Unsent) and outcome.status == status, (conditions, outcome)
        if status == 304:  # a 304 repeats the ETag (RFC 9110 §15.4.5); Last-Modified
            assert outcome.etag == etag, conditions  # is optional there (moto drops it)
            assert outcome.last_modified in (mtime, None), conditions
    with pytest.raises(ObjectNotFound):
        await s.conditional_get(b, "v/missing.ts", {"If-None-Match": etag})


async def test_conditional_get_ranges(backend: Backend) -> None:
    """RFC 9110 §14: one byte range is sent as 206, anything else we do not serve as the
    whole body (§14.2), an unsatisfiable one as 416; If-Range (§13.1.5) decides whether
    the Range counts at all."""
    s, b = backend.storage, backend.bucket
    data = bytes(range(256)) * 4  # 1,024 bytes, every position distinguishable
    info = await s.put(b, "v/1080p_0001.ts", data, content_type="video/mp2t")
    at, before = _http_date(info.last_modified), _http_date(info.last_modified - timedelta(1))
    cases: list[tuple[dict[str, str], int, int, int]] = [
        ({"Range": "bytes=0-0"}, 206, 0, 0),
        ({"Range": "bytes=100-299"}, 206, 100, 299),
        ({"Range": "bytes=1000-5000"}, 206, 1000, 1023),
        ({"Range": "bytes=-10"}, 206, 1014, 1023),
        ({"Range": "bytes=-5000"}, 206, 0, 1023),
        ({"Range": "bytes=0-"}, 206, 0, 1023),
        # several ranges, invalid or foreign ones: the whole body (§14.2)
        ({"Range": "bytes=0-1,5-6"}, 200, 0, 1023),
        ({"Range": "bytes=0-1, 2000-"}, 200, 0, 1023),
        ({"Range": "bytes=9-3"}, 200, 0, 1023),
        ({"Range": "items=0-1"}, 200, 0, 1023),
        # If-Range: a strong tag or the exact date keeps the Range, anything else drops it
        ({"Range": "bytes=0-0", "If-Range": info.etag}, 206, 0, 0),
        ({"Range": "bytes=0-0", "If-Range": at}, 206, 0, 0),
        ({"Range": "bytes=0-0", "If-Range": '"old"'}, 200, 0, 1023),
        ({"Range": "bytes=0-0", "If-Range": f"W/{info.etag}"}, 200, 0, 1023),
        ({"Range": "bytes=0-0", "If-Range": before}, 200, 0, 1023),
        ({"Range": "bytes=5000-", "If-Range": '"old"'}, 200, 0, 1023),
        ({"If-Range": '"old"'}, 200, 0, 1023),
    ]
    for conditions, status, first, last in cases:
        obj = await s.conditional_get(b, "v/1080p_0001.ts", conditions)
        assert isinstance(obj, StreamedObject), (conditions, obj)
        assert (obj.partial, obj.start, obj.end) == (status == 206, first, last), conditions
        assert obj.info == info, conditions
        assert await read_all(obj) == data[first : last + 1], conditions
    for conditions in (
        {"Range": "bytes=1024-"},
        {"Range": "bytes=5000-6000"},
        {"Range": "bytes=-0"},
        {"Range": "bytes=1024-", "If-Range": info.etag},
    ):
        outcome = await s.conditional_get(b, "v/1080p_0001.ts", conditions)
        assert isinstance(outcome, Unsent), (conditions, outcome)
        assert (outcome.status, outcome.size) == (416, 1024), conditions


async def test_stream_closes_early_and_reads_once(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    data = random.Random(3).randbytes(3 * MiB)
    await s.put(b, "big.bin", data, content_type="application/octet-stream")
    for _ in range(3):  # an abandoned read must not leak the connection or file
        async with await s.get(b, "big.bin") as obj:
            async for chunk in obj:
                assert 0 < len(chunk) <= CHUNK_SIZE
                break
        assert obj.closed
    obj = await s.get(b, "big.bin", start=MiB)
    assert await obj.read() == data[MiB:]
    with pytest.raises(StorageError):
        await obj.read()


@pytest.mark.slow
@MANY_OBJECTS_BACKENDS
async def test_list_paginates_and_delete_prefix_batches(backend: Backend) -> None:
    """One population of >2,000 keys serves both: listing must page past 1,000 keys
    (twice) and delete_prefix must batch DeleteObjects (<= 1,000 keys each)."""
    s, b = backend.storage, backend.bucket
    doomed = [f"scene-x/{i % 10}/seg_{i:05d}.ts" for i in range(2_050)]
    kept = ["scene-x2/keep.ts", "scene-x.ts", "scene-/keep.ts", "other/scene-x/keep.ts"]
    await put_many(s, [(b, key) for key in (*doomed, *kept)])

    listed = await collect(s.list(b, "scene-x/"))
    assert [i.key for i in listed] == sorted(doomed)
    assert all(i.size == len(i.key) and i.etag == quoted_md5(i.key.encode()) for i in listed)
    assert all(i.last_modified.tzinfo is not None for i in listed)
    # A prefix is a string prefix, not a directory (as in S3).
    assert [i.key for i in await collect(s.list(b, "scene-x"))] == sorted(
        [*doomed, "scene-x.ts", "scene-x2/keep.ts"]
    )
    assert [i.key for i in await collect(s.list(b, "scene-x/3/seg_0003"))] == [
        "scene-x/3/seg_00033.ts"
    ]
    assert await collect(s.list(b, "nothing/")) == []
    assert len(await collect(s.list(b))) == 2_054

    result = await s.delete_prefix(b, "scene-x/")
    assert result == DeleteResult(deleted=2_050, errors=())
    assert await collect(s.list(b, "scene-x/")) == []
    assert sorted(i.key for i in await collect(s.list(b))) == sorted(kept)
    for key in kept:
        assert (await s.head(b, key)).size == len(key)
    assert await s.delete_prefix(b, "scene-x/") == DeleteResult(deleted=0, errors=())
    if backend.root is not None:  # empty directories are pruned
        assert not (backend.root / b / "scene-x").exists()
        assert not (backend.root / ".meta" / b / "scene-x").exists()


async def test_delete_prefix_refuses_empty_and_bad_prefixes(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    await s.put(b, "a/b.ts", b"x", content_type="video/mp2t")
    for prefix in ("", "/", "/a", "../", "a//", "a\\b", "a/../"):
        with pytest.raises(ValueError):
            await s.delete_prefix(b, prefix)
    assert (await s.head(b, "a/b.ts")).size == 1


async def test_delete(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    await s.put(b, "a/b/c.ts", b"x", content_type="video/mp2t")
    await s.put(b, "a/b/d.ts", b"y", content_type="video/mp2t")
    await s.delete(b, "a/b/c.ts")
    with pytest.raises(ObjectNotFound):
        await s.head(b, "a/b/c.ts")
    await s.delete(b, "a/b/c.ts")
    assert [i.key for i in await collect(s.list(b, "a/"))] == ["a/b/d.ts"]


async def test_copy_keeps_metadata_and_tags(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    data = b"\x00\x01jpeg" * 1000
    src = await s.put(
        b,
        "scenes/s1/poster.jpg",
        data,
        content_type="image/jpeg",
        cache_control="public, max-age=86400",
        tags={"type": "thumbnail", "scene": "s1"},
    )
    for dst_bucket, dst_key in ((backend.other, "copied/poster.jpg"), (b, "scenes/s2/poster.jpg")):
        copied = await s.copy(b, "scenes/s1/poster.jpg", dst_bucket, dst_key)
        assert copied == await s.head(dst_bucket, dst_key)
        assert (copied.size, copied.etag, copied.content_type, copied.cache_control) == (
            src.size,
            src.etag,
            "image/jpeg",
            "public, max-age=86400",
        )
        assert await s.tags(dst_bucket, dst_key) == {"type": "thumbnail", "scene": "s1"}
        assert await (await s.get(dst_bucket, dst_key)).read() == data
    assert await s.copy(b, "scenes/s1/poster.jpg", b, "scenes/s1/poster.jpg") == src


async def test_put_from_file_and_async_generator(backend: Backend, tmp_path: Path) -> None:
    s, b = backend.storage, backend.bucket
    data = random.Random(5).randbytes(3 * MiB + 17)
    source = tmp_path / "upload.mp4"
    source.write_bytes(data)
    from_file = await s.put(b, "jobs/j1/raw_output.mp4", source, content_type="video/mp4")
    assert from_file.size == len(data) and from_file.etag == quoted_md5(data)
    assert await (await s.get(b, "jobs/j1/raw_output.mp4")).read() == data

    async def pieces() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), 100_003):  # odd sizes
            await asyncio.sleep(0)
            piece = data[offset : offset + 100_003]
            yield piece

    from_stream = await s.put(
        b, "jobs/j1/stream.mp4", pieces(), content_type="video/mp4", tags={"type": "internal"}
    )
    assert from_stream.size == len(data) and from_stream.etag == quoted_md5(data)
    assert await (await s.get(b, "jobs/j1/stream.mp4")).read() == data
    assert await s.tags(b, "jobs/j1/stream.mp4") == {"type": "internal"}

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    assert (await s.put(b, "jobs/j1/empty", nothing(), content_type="text/plain")).size == 0
    with pytest.raises(FileNotFoundError):
        await s.put(b, "jobs/j1/missing", tmp_path / "missing", content_type="video/mp4")
    with pytest.raises(TypeError):
        await s.put(b, "jobs/j1/str", str(source), content_type="video/mp4")  # type: ignore[arg-type]


async def test_failed_stream_leaves_no_object(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * MiB
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await s.put(b, "jobs/j2/raw_output.mp4", broken(), content_type="video/mp4")
    with pytest.raises(ObjectNotFound):
        await s.head(b, "jobs/j2/raw_output.mp4")
    assert await collect(s.list(b)) == []


async def test_invalid_names_are_rejected_before_io(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    bad_keys = ["../x", "a/../../x", "..", "/abs", "/etc/passwd", "a//b", "a\\b", "..\\x",
                "", "a/", "./x", "a/./b", "a\x00b", "a\nb", "x" * 1025]  # fmt: skip
    for key in bad_keys:
        calls = [
            s.put(b, key, b"x", content_type="text/plain"),
            s.get(b, key),
            s.head(b, key),
            s.tags(b, key),
            s.delete(b, key),
            s.local_path(b, key),
            s.copy(b, key, b, "ok"),
            s.copy(b, "ok", b, key),
        ]
        for call in calls:
            with pytest.raises(ValueError):
                await call
    for bucket in ("../x", "A", "ab", "a/b", ".meta", "a..b", ""):
        with pytest.raises(ValueError):
            await s.head(bucket, "ok")
        with pytest.raises(ValueError):
            await s.put(bucket, "ok", b"x", content_type="text/plain")
    with pytest.raises(ValueError):
        await s.put(
            b, "ok", b"x", content_type="text/plain", tags={f"k{i}": "v" for i in range(11)}
        )
    with pytest.raises(ValueError):
        await s.put(b, "ok", b"x", content_type="")
    assert await collect(s.list(b)) == []


async def test_local_path_buckets_and_ping(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    await s.put(b, "a/thumb.jpg", b"jpeg", content_type="image/jpeg")
    path = await s.local_path(b, "a/thumb.jpg")
    if backend.kind == "local":
        assert path is not None and path.read_bytes() == b"jpeg"
        missing = await s.local_path(b, "a/missing.jpg")  # a path; the caller stats it
        assert missing is not None and not missing.exists()
    else:
        assert path is None
    await s.ensure_buckets([b, backend.other])  # idempotent
    await s.ping()
    assert isinstance(s, Storage)


async def test_large_object_streams_with_bounded_memory(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    size, chunk = 200 * MiB, MiB
    base = random.Random(11).randbytes(chunk)
    expected = hashlib.sha256()

    async def produce() -> AsyncIterator[bytes]:
        for i in range(size // chunk):
            piece = i.to_bytes(8, "big") + base[8:]
            expected.update(piece)
            yield piece

    baseline = _start_peak_measurement()
    info = await s.put(b, "scene/seg/source.mp4", produce(), content_type="video/mp4")
    assert info.size == size
    actual = hashlib.sha256()
    received = 0
    async with await s.get(b, "scene/seg/source.mp4") as obj:
        assert obj.length == size
        async for piece in obj:
            actual.update(piece)
            received += len(piece)
    growth = _peak_rss() - baseline
    assert received == size
    assert actual.hexdigest() == expected.hexdigest()
    assert growth < 80 * MiB, f"peak RSS grew by {growth / MiB:.0f} MiB streaming 200 MiB"
    await s.delete(b, "scene/seg/source.mp4")


def _start_peak_measurement() -> int:
    """Reset the kernel's peak-RSS mark if possible and return the baseline in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return _peak_rss()  # cannot reset: measure growth of the lifetime peak
    return _current_rss()


def _current_rss() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def test_open_storage_factory(tmp_path: Path) -> None:
    local = await open_storage("local", root=tmp_path)
    assert isinstance(local, LocalStorage)
    await local.aclose()
    with pytest.raises(ValueError):
        await open_storage("local", root=None)
    with pytest.raises(ValueError):
        await open_storage("gcs", root=tmp_path)


async def test_delete_retries_failed_keys_then_reports_them() -> None:
    calls: list[list[str]] = []

    async def attempt(keys: Iterable[str]) -> tuple[int, dict[str, str]]:
        keys = list(keys)
        calls.append(keys)
        failed = {k: "SlowDown: try again" for k in keys if k == "stuck"}
        if "flaky" in keys and len(calls) < 3:
            failed["flaky"] = "InternalError"
        return len(keys) - len(failed), failed

    deleted, failed = await _delete_with_retries(["a", "flaky", "stuck"], attempt, backoff=0.001)
    assert deleted == 2
    assert failed == {"stuck": "SlowDown: try again"}
    assert calls == [["a", "flaky", "stuck"], ["flaky", "stuck"], ["flaky", "stuck"], ["stuck"]]


# --------------------------------------------------------------------------- S3 only


@pytest.fixture
async def small_parts_s3(moto_endpoint: str) -> AsyncIterator[tuple[S3Storage, str]]:
    storage = await open_s3(moto_endpoint, REGION, "test", "test", part_size=5 * MiB)
    bucket = f"sf-parts-{uuid.uuid4().hex[:12]}"
    try:
        await storage.ensure_buckets([bucket])
        yield storage, bucket
    finally:
        try:
            await storage.delete_prefix(bucket, "m")
        finally:
            await storage.aclose()


async def test_s3_multipart_from_file_and_stream(
    small_parts_s3: tuple[S3Storage, str], tmp_path: Path
) -> None:
    s, b = small_parts_s3
    data = random.Random(9).randbytes(12 * MiB + 5)
    source = tmp_path / "clip.mov"
    source.write_bytes(data)

    async def pieces() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), 3 * MiB):
            yield data[offset : offset + 3 * MiB]

    for key, body in (("m/file.mov", source), ("m/stream.mov", pieces())):
        info = await s.put(
            b,
            key,
            body,
            content_type="video/quicktime",
            cache_control="no-store",
            tags={"type": "source"},
        )
        assert info.size == len(data)
        assert info.etag.startswith('"') and info.etag.endswith('-3"'), info.etag  # 5+5+2 MiB
        assert (info.content_type, info.cache_control) == ("video/quicktime", "no-store")
        assert await s.tags(b, key) == {"type": "source"}
        assert (
            await (await s.get(b, key, start=5 * MiB - 1, end=5 * MiB)).read()
            == data[5 * MiB - 1 : 5 * MiB + 1]
        )
        assert (
            hashlib.sha256(await (await s.get(b, key)).read()).digest()
            == hashlib.sha256(data).digest()
        )

    # Bigger than the CopyObject limit (lowered here): copied with UploadPartCopy.
    s.copy_threshold, s.copy_part_size = 5 * MiB, 5 * MiB
    copied = await s.copy(b, "m/file.mov", b, "m/copy.mov")
    assert copied.size == len(data) and copied.content_type == "video/quicktime"
    assert copied.cache_control == "no-store"
    assert await s.tags(b, "m/copy.mov") == {"type": "source"}
    assert await (await s.get(b, "m/copy.mov")).read() == data


async def test_s3_failed_multipart_is_aborted(small_parts_s3: tuple[S3Storage, str]) -> None:
    s, b = small_parts_s3

    async def broken() -> AsyncIterator[bytes]:
        for _ in range(7):
            yield b"y" * MiB  # the first 5 MiB part is uploaded before the failure
        raise RuntimeError("upload interrupted")

    with pytest.raises(RuntimeError, match="upload interrupted"):
        await s.put(b, "m/broken.mp4", broken(), content_type="video/mp4")
    with pytest.raises(ObjectNotFound):
        await s.head(b, "m/broken.mp4")
    uploads = await s.client.list_multipart_uploads(Bucket=b)
    assert uploads.get("Uploads", []) == []


async def test_s3_conditional_get_is_one_get_object(moto_endpoint: str) -> None:
    """No HEAD before the GET: S3 evaluates the Range and the preconditions itself. Only a
    Range whose If-Range names another version of the object takes a second request."""
    storage = await open_s3(moto_endpoint, REGION, "test", "test")
    bucket = f"sf-calls-{uuid.uuid4().hex[:12]}"
    try:
        await storage.ensure_buckets([bucket])
        info = await storage.put(bucket, "a/720p_0001.ts", b"x" * 100, content_type="video/mp2t")
        modified = _http_date(info.last_modified)
        one_call: list[dict[str, str]] = [
            {},
            {"Range": "bytes=10-19"},
            {"Range": "bytes=-5"},
            {"Range": "bytes=0-1,5-6"},
            {"Range": "bytes=100-"},
            {"If-None-Match": info.etag},
            {"If-None-Match": '"other"'},
            {"If-Modified-Since": modified},
            {"If-Match": '"other"'},
            {"If-Unmodified-Since": _http_date(info.last_modified - timedelta(1))},
            {"Range": "bytes=10-19", "If-Range": info.etag},
            {"Range": "bytes=10-19", "If-None-Match": info.etag},
        ]
        for conditions in one_call:
            with s3_calls(storage.client) as calls:
                outcome = await storage.conditional_get(bucket, "a/720p_0001.ts", conditions)
                if isinstance(outcome, StreamedObject):
                    await read_all(outcome)
            assert calls == ["GetObject"], conditions
        with s3_calls(storage.client) as calls:
            outcome = await storage.conditional_get(
                bucket, "a/720p_0001.ts", {"Range": "bytes=10-19", "If-Range": '"old"'}
            )
            assert isinstance(outcome, StreamedObject) and not outcome.partial
            await read_all(outcome)
        assert calls == ["GetObject", "GetObject"]
    finally:
        try:
            await storage.delete_prefix(bucket, "a/")
        finally:
            await storage.aclose()


async def test_s3_ping_fails_fast_when_unreachable() -> None:
    storage = await open_s3("http://127.0.0.1:9", REGION, "test", "test")
    storage.ping_timeout = 2.0
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(StorageError):
            await storage.ping()
        assert asyncio.get_running_loop().time() - started < 3.0
    finally:
        await storage.aclose()


# --------------------------------------------------------------------------- local only


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[LocalStorage, Path]]:
    root = tmp_path / "store"
    storage = LocalStorage(root)
    await storage.ensure_buckets(["sf-videos"])
    try:
        yield storage, root
    finally:
        await storage.aclose()


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


async def test_local_layout_atomic_writes_and_hidden_files(
    local: tuple[LocalStorage, Path],
) -> None:
    s, root = local
    await s.put(
        "sf-videos", "s1/g1/720p_0001.ts", b"ts", content_type="video/mp2t", tags={"type": "hls"}
    )
    await s.put("sf-videos", "s1/g1/720p_0001.ts", b"ts2", content_type="video/mp2t")
    assert (root / "sf-videos/s1/g1/720p_0001.ts").read_bytes() == b"ts2"
    assert (root / ".meta/sf-videos/s1/g1/720p_0001.ts").is_file()
    assert _tree(root / "sf-videos") == {"s1", "s1/g1", "s1/g1/720p_0001.ts"}  # no temp files
    # A crashed write (temp file, or object without its sidecar) stays invisible.
    (root / "sf-videos/s1/g1/.sf\\dead.tmp").write_bytes(b"partial")
    (root / "sf-videos/s1/g1/orphan.ts").write_bytes(b"orphan")
    assert [i.key for i in await collect(s.list("sf-videos"))] == ["s1/g1/720p_0001.ts"]
    with pytest.raises(ObjectNotFound):
        await s.head("sf-videos", "s1/g1/orphan.ts")
    result = await s.delete_prefix("sf-videos", "s1/")
    assert result.deleted == 2 and result.errors == ()  # the orphan is cleaned up too
    assert not (root / "sf-videos/s1/g1/orphan.ts").exists()


async def test_local_paths_never_escape_root(
    local: tuple[LocalStorage, Path], tmp_path: Path
) -> None:
    s, root = local
    outside = tmp_path / "outside"
    outside.mkdir()
    before = _tree(tmp_path) - {p for p in _tree(tmp_path) if p.startswith("store")}
    for key in (
        "../x",
        "a/../../x",
        "../../outside/x",
        "/abs",
        f"/{outside}/x",
        "a//b",
        "a\\..\\x",
    ):
        with pytest.raises(ValueError):
            await s.put("sf-videos", key, b"evil", content_type="text/plain")
    # A symlink planted inside the root is resolved and refused as well.
    os.symlink(outside, root / "sf-videos" / "link")
    for call in (
        s.put("sf-videos", "link/x", b"evil", content_type="text/plain"),
        s.get("sf-videos", "link/x"),
        s.delete("sf-videos", "link/x"),
        s.local_path("sf-videos", "link/x"),
    ):
        with pytest.raises(ValueError):
            await call
    assert list(outside.iterdir()) == []
    after = _tree(tmp_path) - {p for p in _tree(tmp_path) if p.startswith("store")}
    assert after == before


async def test_local_ping_and_missing_bucket(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "absent")
    with pytest.raises(StorageError):
        await storage.ping()
    await storage.ensure_buckets(["sf-videos"])
    await storage.ping()
    with pytest.raises(StorageError, match="does not exist"):
        await storage.put("sf-exports", "a", b"x", content_type="text/plain")


# --------------------------------------------------------------------------- multipart


def s3_style_etag(parts: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


async def test_multipart_joins_listed_parts_only(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    first = os.urandom(s.min_part_size if s.min_part_size > 1 else 5 * MiB)
    second, last = os.urandom(5 * MiB + 3), b"tail bytes"
    key = "jobs/job_multipart01/raw_output.mp4"
    upload = await s.create_multipart(
        b, key, content_type="video/mp4", cache_control="private, no-store", tags={"type": "x"}
    )

    async def stream(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    p1 = await s.upload_part(b, key, upload, 1, first)
    stale = await s.upload_part(b, key, upload, 2, b"a part nobody lists")
    p3 = await s.upload_part(b, key, upload, 3, stream(second))
    p4 = await s.upload_part(b, key, upload, 4, last)
    assert (p1.number, p1.size, p1.etag) == (1, len(first), quoted_md5(first))
    assert p3.etag == quoted_md5(second) and stale.size == 19
    # nothing is visible before completion
    with pytest.raises(ObjectNotFound):
        await s.head(b, key)
    info = await s.complete_multipart(b, key, upload, [p1, p3, p4])
    assert info.size == len(first) + len(second) + len(last)
    assert info.etag == s3_style_etag([first, second, last])
    assert await read_all(await s.get(b, key)) == first + second + last
    head = await s.head(b, key)
    assert (head.content_type, head.cache_control) == ("video/mp4", "private, no-store")
    assert await s.tags(b, key) == {"type": "x"}
    # completing again: the same object (S3 may repeat its answer) or NoSuchUpload
    try:
        again = await s.complete_multipart(b, key, upload, [p1, p3, p4])
        assert again.etag == info.etag
    except NoSuchUpload:
        pass


async def test_multipart_refuses_wrong_parts_and_aborts(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    key = "jobs/job_multipart02/raw_output.mp4"
    upload = await s.create_multipart(b, key, content_type="video/mp4")
    part = await s.upload_part(b, key, upload, 1, b"only part")
    with pytest.raises(StorageError):  # an ETag that part never had
        await s.complete_multipart(
            b, key, upload, [UploadedPart(1, quoted_md5(b"other bytes"), part.size)]
        )
    with pytest.raises(ValueError):
        await s.complete_multipart(b, key, upload, [part, part])
    with pytest.raises(ValueError):
        await s.upload_part(b, key, upload, 0, b"x")
    with pytest.raises(ValueError):
        await s.upload_part(b, key, "../../etc", 1, b"x")
    if backend.kind == "local":  # (moto answers an unknown upload id with a 500)
        with pytest.raises(NoSuchUpload):
            await s.upload_part(b, "jobs/other/raw_output.mp4", upload, 1, b"x")
    await s.abort_multipart(b, key, upload)
    await s.abort_multipart(b, key, upload)  # again: nothing left, no error
    with pytest.raises(StorageError):  # NoSuchUpload (moto: a 500)
        await s.upload_part(b, key, upload, 2, b"after abort")
    with pytest.raises(ObjectNotFound):
        await s.head(b, key)
    if backend.root is not None:  # nothing left in the staging tree either
        assert not list((backend.root / ".uploads" / b).iterdir())


async def test_multipart_small_parts_only_where_the_backend_allows(backend: Backend) -> None:
    s, b = backend.storage, backend.bucket
    key = "jobs/job_multipart03/raw_output.mp4"
    upload = await s.create_multipart(b, key, content_type="video/mp4")
    parts = [await s.upload_part(b, key, upload, n, b"%d" % n * 10) for n in (1, 2)]
    if s.min_part_size > 10:
        assert backend.kind == "s3" and s.min_part_size == 5 * MiB
        with pytest.raises(StorageError, match="EntityTooSmall"):
            await s.complete_multipart(b, key, upload, parts)
        await s.abort_multipart(b, key, upload)
    else:
        info = await s.complete_multipart(b, key, upload, parts)
        assert await read_all(await s.get(b, key)) == b"1" * 10 + b"2" * 10 and info.size == 20


async def test_local_parts_append_in_place_and_a_superseded_writer_stops(tmp_path: Path) -> None:
    """LocalStorage appends parts stored one after another into one file that becomes
    the object (no copy); a part still being written when a higher-numbered one starts
    is refused at its next write and never lands in the newer part's bytes; a part
    below a stored higher one is refused."""
    s = LocalStorage(tmp_path / "store")
    await s.ensure_buckets(["sf-local-parts"])
    b, key = "sf-local-parts", "jobs/job_local01/raw_output.mp4"
    upload = await s.create_multipart(b, key, content_type="video/mp4")
    gate = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"A" * 1000
        await gate.wait()
        yield b"A" * 1000

    stale = asyncio.create_task(s.upload_part(b, key, upload, 1, stalled()))
    await asyncio.sleep(0.2)
    fresh = await s.upload_part(b, key, upload, 2, b"B" * 1500)
    gate.set()
    with pytest.raises(StorageError, match="superseded"):
        await stale
    with pytest.raises(StorageError, match="ascending order"):
        await s.upload_part(b, key, upload, 1, b"late")
    tail = await s.upload_part(b, key, upload, 3, b"C" * 10)
    staging = tmp_path / "store" / ".uploads" / b / upload
    inode = (staging / "data").stat().st_ino
    info = await s.complete_multipart(b, key, upload, [fresh, tail])
    assert await read_all(await s.get(b, key)) == b"B" * 1500 + b"C" * 10
    assert info.etag == s3_style_etag([b"B" * 1500, b"C" * 10])
    assert (tmp_path / "store" / b / key).stat().st_ino == inode  # renamed, not copied
    assert not staging.exists()
