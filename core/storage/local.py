"""``LocalStorage``: the Storage protocol on a directory, so the origin can serve objects
with sendfile (the embedded default).

Objects live at ``root/bucket/key``; their metadata (ETag, content type, cache control,
tags) in a mirror tree of JSON sidecars under ``root/.meta/bucket/key``. Writes are
atomic, file I/O runs off the event loop, and conditional reads are decided by
``core.conditional.decide`` on the file's stat and sidecar. Multipart uploads keep
their parts in a staging tree (``local_parts``); with them this module is a little over
600 lines, kept whole because every method shares the same path and sidecar rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

from core.conditional import decide
from core.storage import local_parts
from core.storage.base import (
    CHUNK_SIZE,
    DELETE_BATCH,
    Body,
    DeleteResult,
    NoSuchUpload,
    ObjectInfo,
    ObjectNotFound,
    PutMeta,
    Storage,
    StorageError,
    StreamedObject,
    Unsent,
    UploadedPart,
    _body_kind,
    _delete_with_retries,
    multipart_etag,
    validate_bucket,
    validate_key,
    validate_prefix,
    write_all_but_last,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

META_DIR = ".meta"
"""LocalStorage's sidecar tree, ``root/.meta/bucket/key``; no bucket name starts with a dot."""

_TMP_SUFFIX = ".tmp"
_TMP_MARK = "\\"
"""Temp file names contain a backslash, which no valid key segment can, so they never
collide with an object and listings skip them."""


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, UTC)


_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _sidecar(meta: PutMeta) -> dict[str, Any]:
    """A write's metadata as its JSON sidecar records it (with the ETag and size)."""
    return {
        "content_type": meta.content_type,
        "cache_control": meta.cache_control,
        "tags": dict(meta.tags),
    }


class _AtomicFile:
    """A temp file beside ``final`` (same directory, so the rename is atomic): ``flush``
    fsyncs and closes it, ``replace`` renames it over ``final``, ``discard`` drops it."""

    def __init__(self, final: Path, *, hashed: bool) -> None:
        self.final = final
        self.temp = final.parent / f".sf{_TMP_MARK}{secrets.token_hex(8)}{_TMP_SUFFIX}"
        self.md5 = hashlib.md5(usedforsecurity=False) if hashed else None
        self.size = 0
        for attempt in range(3):
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.file: IO[bytes] = open(self.temp, "xb")
                break
            except FileNotFoundError:
                # A concurrent delete pruned the fresh directory; make it again.
                if attempt == 2:
                    raise

    @classmethod
    def adopt(cls, final: Path, temp: Path) -> _AtomicFile:
        """A finished file elsewhere on the same filesystem, to be renamed over ``final``."""
        self = cls.__new__(cls)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.final, self.temp, self.md5 = final, temp, None
        self.file = open(temp, "r+b")  # noqa: SIM115 (closed by flush or discard)
        self.size = os.fstat(self.file.fileno()).st_size
        return self

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)
        if self.md5 is not None:
            self.md5.update(data)
        if len(data) >= CHUNK_SIZE:  # a block, not a trickle: let the disk start on it
            self.file.flush()
            local_parts.start_writeback(self.file.fileno(), self.size, len(data))
        self.size += len(data)

    def copy_from(self, src: IO[bytes]) -> None:
        while block := src.read(CHUNK_SIZE * 4):
            self.write(block)

    def flush(self) -> os.stat_result:
        self.file.flush()
        os.fsync(self.file.fileno())
        st = os.fstat(self.file.fileno())
        self.file.close()
        return st

    def replace(self) -> None:
        os.replace(self.temp, self.final)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileChunks:
    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    async def read(self, n: int) -> bytes:
        try:
            return await asyncio.to_thread(self._f.read, n)
        except OSError as exc:
            raise StorageError(f"reading {self._f.name}: {exc}") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self._f.close)


class LocalStorage(Storage):
    """Storage in a directory: objects at ``root/bucket/key``, JSON sidecars with ETag,
    content type, cache control and tags at ``root/.meta/bucket/key``.

    An object exists when both files do; the sidecar is written last, so it marks the
    object committed (a crash mid-put leaves an invisible orphan that the next put or
    ``delete_prefix`` cleans up). Each file is replaced atomically, but the pair is not:
    a reader racing an overwrite of the same key may briefly see new bytes with the old
    metadata (segments are written once, so the origin never does this).

    Keys that are both an object and a "directory" (``a`` and ``a/b``) cannot coexist on
    a filesystem; the second put fails with StorageError. Files must not be edited in
    place behind its back (ETags are computed on write).
    """

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    async def aclose(self) -> None:
        return None

    # -- paths (sync; run in threads)

    def _real_root(self) -> str:
        return os.path.realpath(self._root)

    def _contained(self, path: Path) -> Path:
        root = self._real_root()
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(f"{path} resolves outside the storage root {root}")
        return path

    def _bucket_dirs(self, bucket: str) -> tuple[Path, Path]:
        return (
            self._contained(self._root / bucket),
            self._contained(self._root / META_DIR / bucket),
        )

    def _paths(self, bucket: str, key: str) -> tuple[Path, Path]:
        parts = key.split("/")
        return (
            self._contained(self._root.joinpath(bucket, *parts)),
            self._contained(self._root.joinpath(META_DIR, bucket, *parts)),
        )

    def _require_bucket(self, bucket: str) -> tuple[Path, Path]:
        data_dir, meta_dir = self._bucket_dirs(bucket)
        if not data_dir.is_dir():
            raise StorageError(f"bucket {bucket!r} does not exist under {self._root}")
        return data_dir, meta_dir

    @staticmethod
    def _read_meta(meta_path: Path, where: str) -> dict[str, Any]:
        try:
            raw = meta_path.read_bytes()
        except _MISSING:
            raise ObjectNotFound(f"{where} not found") from None
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict) or not isinstance(meta.get("etag"), str):
                raise ValueError("not an object with an etag")
        except ValueError as exc:
            raise StorageError(f"{where}: corrupt metadata {meta_path}: {exc}") from exc
        return meta

    @staticmethod
    def _object_info(key: str, st: os.stat_result, meta: Mapping[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=meta["etag"],
            last_modified=_mtime(st),
            content_type=meta.get("content_type"),
            cache_control=meta.get("cache_control"),
        )

    def _stat_object(self, bucket: str, key: str) -> tuple[os.stat_result, dict[str, Any], Path]:
        obj, meta_path = self._paths(bucket, key)
        where = f"{bucket}/{key}"
        meta = self._read_meta(meta_path, where)
        try:
            st = os.stat(obj)
        except _MISSING:
            raise ObjectNotFound(f"{where} not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"{where} not found")
        return st, meta, obj

    # -- writes

    def _write_sync(
        self,
        bucket: str,
        key: str,
        fill: Callable[[_AtomicFile], None] | None,
        writer: _AtomicFile | None,
        meta: Mapping[str, Any],
    ) -> ObjectInfo:
        """Create (or finish) the object's temp file, write the sidecar, rename both."""
        obj, meta_path = self._paths(bucket, key)
        if writer is None:
            self._require_bucket(bucket)
            writer = _AtomicFile(obj, hashed=True)
        sidecar: _AtomicFile | None = None
        try:
            if fill is not None:
                fill(writer)
            st = writer.flush()
            etag = meta.get("etag") or f'"{writer.md5.hexdigest()}"'  # type: ignore[union-attr]
            record = {**meta, "etag": etag, "size": writer.size}
            sidecar = _AtomicFile(meta_path, hashed=False)
            sidecar.write(json.dumps(record, sort_keys=True).encode())
            sidecar.flush()
            writer.replace()
            sidecar.replace()
            _fsync_dir(obj.parent)
            _fsync_dir(meta_path.parent)
        except BaseException:
            writer.discard()
            if sidecar is not None:
                sidecar.discard()
            raise
        return self._object_info(key, st, record)

    def _open_writer(self, bucket: str, key: str) -> _AtomicFile:
        self._require_bucket(bucket)
        obj, _ = self._paths(bucket, key)
        return _AtomicFile(obj, hashed=True)

    async def _put(self, bucket: str, key: str, body: Body, meta: PutMeta) -> ObjectInfo:
        record = _sidecar(meta)
        kind = _body_kind(body)
        where = f"{bucket}/{key}"
        src: IO[bytes] | None = None
        if kind == "path":
            # Problems with the caller's own file surface as the OSError they are.
            src = await asyncio.to_thread(open, Path(body), "rb")  # type: ignore[arg-type]
        try:
            if kind == "bytes":
                data = body

                def fill_bytes(w: _AtomicFile) -> None:
                    w.write(data)  # type: ignore[arg-type]

                return await asyncio.to_thread(
                    self._write_sync, bucket, key, fill_bytes, None, record
                )
            if src is not None:
                source = src
                return await asyncio.to_thread(
                    self._write_sync, bucket, key, lambda w: w.copy_from(source), None, record
                )
            return await self._put_stream(bucket, key, body, record)  # type: ignore[arg-type]
        except (StorageError, ValueError, TypeError):
            raise
        except OSError as exc:
            raise StorageError(f"writing {where}: {exc}") from exc
        finally:
            if src is not None:
                await asyncio.to_thread(src.close)

    async def _put_stream(
        self, bucket: str, key: str, body: AsyncIterable[bytes], meta: Mapping[str, Any]
    ) -> ObjectInfo:
        writer = await asyncio.to_thread(self._open_writer, bucket, key)
        try:
            last = await write_all_but_last(body, writer.write)
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise

        def fill(w: _AtomicFile) -> None:
            if last:
                w.write(last)

        return await asyncio.to_thread(self._write_sync, bucket, key, fill, writer, meta)

    # -- multipart uploads (local_parts.py)

    min_part_size = 1

    async def _create_multipart(self, bucket: str, key: str, meta: PutMeta) -> str:
        await self._run(self._require_bucket, bucket)
        upload_id = local_parts.new_upload_id()
        directory = self._contained(local_parts.staging_dir(self._root, bucket, upload_id))
        await self._run(local_parts.create, directory, key, _sidecar(meta))
        return upload_id

    async def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Body
    ) -> UploadedPart:
        directory = local_parts.staging_dir(self._root, bucket, upload_id)
        return await local_parts.write_part(local_parts.PartWriter(directory, key, number), body)

    async def _complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> ObjectInfo:
        directory = local_parts.staging_dir(self._root, bucket, upload_id)
        info = await self._run(self._complete_sync, bucket, key, directory, parts)
        await self._run(local_parts.remove, directory)
        return info

    def _complete_sync(
        self, bucket: str, key: str, directory: Path, parts: Sequence[UploadedPart]
    ) -> ObjectInfo:
        meta = local_parts.manifest(directory, key)
        ranges = local_parts.layout_of(directory, key, parts)
        obj, _ = self._paths(bucket, key)
        data = local_parts.data_path(directory)
        if local_parts.end_to_end(ranges):  # appended in order: the data file is the object
            os.truncate(data, sum(size for _, size in ranges))
            writer = _AtomicFile.adopt(obj, data)
            fill = None
        else:  # some part was stored in between and is not listed: copy the listed ranges
            writer = _AtomicFile(obj, hashed=False)

            def fill(w: _AtomicFile) -> None:
                w.size += local_parts.copy_ranges(w.file, data, ranges)

        record = {k: meta.get(k) for k in ("content_type", "cache_control", "tags")}
        return self._write_sync(
            bucket, key, fill, writer, {**record, "etag": multipart_etag(parts)}
        )

    async def _abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            directory = local_parts.staging_dir(self._root, bucket, upload_id)
        except NoSuchUpload:
            return
        await self._run(local_parts.remove, directory)

    # -- reads

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        st, meta, _ = await self._run(self._stat_object, bucket, key)
        return self._object_info(key, st, meta)

    async def tags(self, bucket: str, key: str) -> dict[str, str]:
        validate_bucket(bucket)
        validate_key(key)
        _, meta, _ = await self._run(self._stat_object, bucket, key)
        return dict(meta.get("tags") or {})

    async def local_path(self, bucket: str, key: str) -> Path | None:
        """The object's file, for sendfile. Not checked for existence (the caller's
        open/stat is the check that counts); paths that resolve out of root are refused."""
        validate_bucket(bucket)
        validate_key(key)
        obj, _ = await self._run(self._paths, bucket, key)
        return obj

    def _open_sync(self, bucket: str, key: str) -> tuple[IO[bytes], os.stat_result, dict[str, Any]]:
        obj, meta_path = self._paths(bucket, key)
        where = f"{bucket}/{key}"
        meta = self._read_meta(meta_path, where)
        try:
            f: IO[bytes] = open(obj, "rb")
        except _MISSING:
            raise ObjectNotFound(f"{where} not found") from None
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            f.close()
            raise ObjectNotFound(f"{where} not found")
        return f, st, meta

    async def conditional_get(
        self, bucket: str, key: str, conditions: Mapping[str, str]
    ) -> StreamedObject | Unsent:
        validate_bucket(bucket)
        validate_key(key)
        f, st, meta = await self._run(self._open_sync, bucket, key)
        outcome: StreamedObject | Unsent | None = None
        try:
            info = self._object_info(key, st, meta)
            decision = decide(
                "GET", conditions, etag=info.etag, last_modified=info.last_modified, size=info.size
            )
            if decision.status in (304, 412, 416):
                outcome = Unsent(decision.status, info.etag, info.last_modified, info.size)
            else:
                if decision.start:
                    f.seek(decision.start)
                outcome = StreamedObject(
                    info,
                    decision.start,
                    decision.end,
                    _FileChunks(f),
                    partial=decision.status == 206,
                )
        finally:
            if not isinstance(outcome, StreamedObject):
                await asyncio.to_thread(f.close)
        return outcome

    def _keys_sync(self, bucket: str, prefix: str, *, include_orphans: bool) -> Sequence[str]:
        """Keys under ``prefix``, sorted: sidecars, plus object files without one."""
        trees: tuple[Path, ...] = self._require_bucket(bucket)
        if not include_orphans:
            trees = trees[1:]
        keys: set[str] = set()
        directory = prefix.rpartition("/")[0]
        for tree in trees:
            top = tree.joinpath(*directory.split("/")) if directory else tree
            self._contained(top)
            for dirpath, dirnames, filenames in os.walk(top):
                rel = os.path.relpath(dirpath, tree)
                rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                dirnames[:] = [
                    d
                    for d in dirnames
                    if _TMP_MARK not in d
                    and (f"{rel}{d}/".startswith(prefix) or prefix.startswith(f"{rel}{d}/"))
                ]
                for name in filenames:
                    candidate = rel + name
                    if _TMP_MARK not in name and candidate.startswith(prefix):
                        with contextlib.suppress(ValueError):
                            keys.add(validate_key(candidate))
        return sorted(keys)

    def _infos_sync(self, bucket: str, keys: Sequence[str]) -> Sequence[ObjectInfo]:
        infos = []
        for key in keys:
            try:
                st, meta, _ = self._stat_object(bucket, key)
            except (ObjectNotFound, ValueError):
                continue  # deleted meanwhile, an uncommitted write, or a link out of root
            infos.append(
                ObjectInfo(
                    key=key,
                    size=st.st_size,
                    etag=meta["etag"],
                    last_modified=_mtime(st),
                    content_type=None,
                    cache_control=None,
                )
            )
        return infos

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        validate_bucket(bucket)
        validate_prefix(prefix)
        keys = await self._run(self._keys_sync, bucket, prefix, include_orphans=False)
        for offset in range(0, len(keys), DELETE_BATCH):
            batch = keys[offset : offset + DELETE_BATCH]
            for info in await self._run(self._infos_sync, bucket, batch):
                yield info

    # -- deletes and copies

    def _prune(self, directory: Path, stop: Path) -> None:
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _delete_sync(
        self, bucket: str, keys: Sequence[str], *, strict: bool = False
    ) -> tuple[int, dict[str, str]]:
        data_dir, meta_dir = self._bucket_dirs(bucket)
        deleted = 0
        failed: dict[str, str] = {}
        for key in keys:
            try:
                obj, meta_path = self._paths(bucket, key)
            except ValueError as exc:
                if strict:
                    raise
                failed[key] = str(exc)
                continue
            try:
                for path in (meta_path, obj):  # sidecar first: the object stops existing
                    with contextlib.suppress(*_MISSING):
                        os.unlink(path)
                self._prune(meta_path.parent, meta_dir)
                self._prune(obj.parent, data_dir)
                deleted += 1
            except OSError as exc:
                failed[key] = str(exc)
        return deleted, failed

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        _, failed = await self._run(self._delete_sync, bucket, [key], strict=True)
        if failed:
            raise StorageError(f"deleting {bucket}/{key}: {failed[key]}")

    async def delete_prefix(self, bucket: str, prefix: str) -> DeleteResult:
        validate_bucket(bucket)
        validate_prefix(prefix, allow_empty=False)
        keys = await self._run(self._keys_sync, bucket, prefix, include_orphans=True)
        deleted = 0
        errors: dict[str, str] = {}
        for offset in range(0, len(keys), DELETE_BATCH):
            done, failed = await _delete_with_retries(
                keys[offset : offset + DELETE_BATCH],
                lambda batch: self._run(self._delete_sync, bucket, batch),
            )
            deleted += done
            errors.update(failed)
        return DeleteResult(deleted=deleted, errors=tuple(sorted(errors.items())))

    def _copy_sync(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo:
        f, _, meta = self._open_sync(src_bucket, src_key)
        try:
            record = {k: meta.get(k) for k in ("content_type", "cache_control", "tags")}
            return self._write_sync(dst_bucket, dst_key, lambda w: w.copy_from(f), None, record)
        finally:
            f.close()

    async def _copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> ObjectInfo:
        return await self._run(self._copy_sync, src_bucket, src_key, dst_bucket, dst_key)

    # -- buckets and health

    def _ensure_sync(self, names: Sequence[str]) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        for name in names:
            for directory in self._bucket_dirs(name):
                directory.mkdir(parents=True, exist_ok=True)

    async def ensure_buckets(self, names: Iterable[str]) -> None:
        checked = [validate_bucket(name) for name in names]
        await self._run(self._ensure_sync, checked)

    def _ping_sync(self) -> None:
        if not self._root.is_dir():
            raise StorageError(f"storage root {self._root} is not a directory")
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise StorageError(f"storage root {self._root} is not writable")

    async def ping(self) -> None:
        await self._run(self._ping_sync)

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run blocking file work in a thread; OSErrors become StorageError."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as exc:
            raise StorageError(f"{self._root}: {exc}") from exc
