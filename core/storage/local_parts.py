"""LocalStorage's multipart uploads on disk: each upload is a staging directory
``root/.uploads/{bucket}/{uploadId}/`` holding ``upload.json`` (the key and HTTP
metadata), ``data`` (the bytes), ``parts.json`` (each stored part: where it starts in
``data``, its size and MD5) and ``lock`` (flock). Completing renames ``data`` into
place when the listed parts lie end to end in it from byte 0, as they do when parts
are stored one after another; otherwise the listed ranges are copied out.

A part is written where the highest-numbered finished part below it ends, so storing
parts one after another appends (each byte is written once, and completing copies
nothing). A part that is still being written when a higher-numbered part starts is
superseded: its next write is refused, and it never lands in bytes the newer part
owns (each write holds the lock shared, registering a part takes it exclusively).
Parts are stored in ascending order: one below a higher-numbered stored part is
refused. Sync functions; LocalStorage runs them in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from core.storage.base import (
    CHUNK_SIZE,
    Body,
    NoSuchUpload,
    StorageError,
    UploadedPart,
    _body_kind,
    write_all_but_last,
)

UPLOADS_DIR = ".uploads"
"""LocalStorage's staging tree, ``root/.uploads/bucket/uploadId``; no bucket starts with a dot."""

_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_MANIFEST = "upload.json"
_INDEX = "parts.json"
_DATA = "data"
_LOCK = "lock"


def new_upload_id() -> str:
    return secrets.token_hex(16)


def staging_dir(root: Path, bucket: str, upload_id: str) -> Path:
    if not _UPLOAD_ID_RE.fullmatch(upload_id):
        raise NoSuchUpload(f"{bucket}: no such multipart upload {upload_id!r}")
    return root / UPLOADS_DIR / bucket / upload_id


def create(directory: Path, key: str, meta: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True)
    (directory / _MANIFEST).write_text(json.dumps({**meta, "key": key}, sort_keys=True))


def manifest(directory: Path, key: str) -> dict[str, Any]:
    """The upload's metadata; NoSuchUpload unless it exists for ``key``."""
    try:
        meta: dict[str, Any] = json.loads((directory / _MANIFEST).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        raise NoSuchUpload(f"no such multipart upload {directory.name} of {key}") from None
    if meta.get("key") != key:
        raise NoSuchUpload(f"multipart upload {directory.name} is not one of {key}")
    return meta


@contextlib.contextmanager
def _locked(directory: Path, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    try:
        fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise NoSuchUpload(f"no such multipart upload {directory.name}") from None
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def _index(directory: Path) -> dict[str, dict[str, Any]]:
    try:
        index: dict[str, dict[str, Any]] = json.loads((directory / _INDEX).read_bytes())
    except FileNotFoundError:
        return {}
    return index


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback, do not wait for it


@functools.cache
def _sync_file_range() -> Any:
    """libc's sync_file_range(2) (Linux), or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return fn


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting: the
    fsync that makes a finished file durable then finds little left to write (a 5 MiB
    tus chunk's fsync went from ~4 ms to ~0.2 ms here). Best effort: a no-op where
    sync_file_range(2) does not exist or fails."""
    fn = _sync_file_range()
    if fn is not None and length > 0:
        fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _save_index(directory: Path, index: Mapping[str, Any]) -> None:
    temp = directory / f".{_INDEX}.{secrets.token_hex(4)}.tmp"
    temp.write_text(json.dumps(index, sort_keys=True))
    os.replace(temp, directory / _INDEX)


class PartWriter:
    """A part being written into ``data`` at its place, hashed as it goes. Nothing is
    on disk until `open` (in a thread, while the body's first blocks arrive)."""

    def __init__(self, directory: Path, key: str, number: int) -> None:
        self.directory = directory
        self.key = key
        self.number = number
        self.token = secrets.token_hex(8)
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.start = 0
        self.fd = self.lock_fd = -1

    def open(self) -> None:
        """Check that the upload of ``key`` exists, take the part's place in ``data``
        (registered as being written) and open the files: one thread hop."""
        manifest(self.directory, self.key)
        try:
            self._register()
            self.fd = os.open(self.directory / _DATA, os.O_RDWR | os.O_CREAT, 0o600)
            self.lock_fd = os.open(self.directory / _LOCK, os.O_RDWR)
        except OSError as exc:
            raise StorageError(f"{self.directory}: {exc}") from exc

    def _register(self) -> None:
        directory, number = self.directory, self.number
        with _locked(directory):
            index = _index(directory)
            later = [int(n) for n, p in index.items() if int(n) > number]
            if later:
                raise StorageError(
                    f"part {number} of upload {directory.name} comes after part {max(later)}: "
                    "parts are stored in ascending order"
                )
            for p in index.values():
                if p["state"] == "writing":  # a writer that lost its turn
                    (directory / f"superseded-{p['token']}").touch()
            ends = [
                p["start"] + p["size"]
                for n, p in index.items()
                if int(n) < number and p["state"] == "done"
            ]
            self.start = max(ends, default=0)
            index[str(number)] = {"start": self.start, "state": "writing", "token": self.token}
            _save_index(directory, index)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        fcntl.flock(self.lock_fd, fcntl.LOCK_SH)
        try:
            if (self.directory / f"superseded-{self.token}").exists():
                raise StorageError(f"part {self.number} was superseded by a later part")
            begin = self.start + self.size
            while view:
                done = os.pwrite(self.fd, view, self.start + self.size)
                self.md5.update(view[:done])
                self.size += done
                view = view[done:]
            start_writeback(self.fd, begin, self.start + self.size - begin)
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def finish(self, last: bytes | bytearray | memoryview | None = None) -> UploadedPart:
        """Write ``last`` (the body's last block, in the same thread hop), make the part
        durable and register it as stored."""
        if last:
            self.write(last)
        os.fsync(self.fd)
        self._close()
        digest = self.md5.hexdigest()
        with _locked(self.directory):
            index = _index(self.directory)
            if index.get(str(self.number), {}).get("token") != self.token:
                raise StorageError(f"part {self.number} was superseded by a later part")
            index[str(self.number)] = {
                "start": self.start,
                "size": self.size,
                "md5": digest,
                "state": "done",
            }
            _save_index(self.directory, index)
        return UploadedPart(self.number, f'"{digest}"', self.size)

    def discard(self) -> None:
        self._close()
        with contextlib.suppress(StorageError, OSError), _locked(self.directory):
            index = _index(self.directory)
            if index.get(str(self.number), {}).get("token") == self.token:
                del index[str(self.number)]
                _save_index(self.directory, index)

    def _close(self) -> None:
        for fd in (self.fd, self.lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fd = self.lock_fd = -1


async def write_part(writer: PartWriter, body: Body) -> UploadedPart:
    """Open ``writer`` and write ``body`` through it off the event loop (a streamed
    body's first blocks are read while it opens); the part is dropped from the index
    on failure."""
    opening = asyncio.ensure_future(asyncio.to_thread(writer.open))
    try:
        kind = _body_kind(body)
        if kind == "bytes":
            await opening
            await asyncio.to_thread(writer.write, body)  # type: ignore[arg-type]
        elif kind == "path":
            data = await asyncio.to_thread(Path(body).read_bytes)  # type: ignore[arg-type]
            await opening
            await asyncio.to_thread(writer.write, data)
        else:
            last = await write_all_but_last(body, writer.write, opening)  # type: ignore[arg-type]
            return await asyncio.to_thread(writer.finish, last)
        return await asyncio.to_thread(writer.finish)
    except BaseException:
        with contextlib.suppress(BaseException):
            await opening  # (registered or not: discard after it, never before)
        await asyncio.to_thread(writer.discard)
        raise


def layout_of(directory: Path, key: str, parts: Sequence[UploadedPart]) -> list[tuple[int, int]]:
    """Where the listed parts lie in ``data`` ((start, size) each), checked against
    their ETags and sizes."""
    manifest(directory, key)
    with _locked(directory):
        index = _index(directory)
    ranges = []
    for part in parts:
        entry = index.get(str(part.number))
        if entry is None or entry["state"] != "done" or f'"{entry["md5"]}"' != part.etag:
            raise StorageError(f"part {part.number} of {key} with ETag {part.etag} was not stored")
        if entry["size"] != part.size:
            raise StorageError(
                f"part {part.number} of {key} holds {entry['size']} bytes, not {part.size}"
            )
        ranges.append((entry["start"], entry["size"]))
    return ranges


def end_to_end(ranges: Sequence[tuple[int, int]]) -> bool:
    """The ranges follow each other from byte 0 (``data`` can become the object)."""
    at = 0
    for start, size in ranges:
        if start != at:
            return False
        at += size
    return True


def data_path(directory: Path) -> Path:
    return directory / _DATA


def copy_ranges(dst: IO[bytes], src: Path, ranges: Sequence[tuple[int, int]]) -> int:
    """Append the byte ranges of ``src`` to ``dst``; bytes copied."""
    dst.flush()
    copied = 0
    with open(src, "rb") as f:
        for start, size in ranges:
            f.seek(start)
            left = size
            while left > 0:
                block = f.read(min(left, CHUNK_SIZE * 4))
                if not block:
                    raise StorageError(f"{src} ends before byte {start + size}")
                dst.write(block)
                left -= len(block)
            copied += size
    return copied


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
