"""LocalStorage's multipart uploads on disk: each upload is a staging directory
``root/.uploads/{bucket}/{uploadId}/`` holding ``upload.json`` (the key and HTTP
metadata) and one file per stored part, named ``{number:05d}-{md5}``; completing joins
the listed parts into the object with ``copy_file_range`` (a copy inside the kernel).

Parts are separate files rather than appends to one file so that a part written late
(say, by a resumable upload's request that lost its lock meanwhile) can never land in
the middle of bytes that another part owns: only the parts listed at completion count,
as on S3. Sync functions; LocalStorage runs them in threads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from origin.storage.base import (
    CHUNK_SIZE,
    Body,
    NoSuchUpload,
    StorageError,
    UploadedPart,
    _body_kind,
)

UPLOADS_DIR = ".uploads"
"""LocalStorage's staging tree, ``root/.uploads/bucket/uploadId``; no bucket starts with a dot."""

_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_MANIFEST = "upload.json"


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


class PartWriter:
    """A part being written: a temp file in the staging directory, hashed as it goes,
    renamed to its final name once complete and synced."""

    def __init__(self, directory: Path, number: int) -> None:
        self.directory = directory
        self.number = number
        self.temp = directory / f".part-{number:05d}-{secrets.token_hex(6)}.tmp"
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        try:
            self.file: IO[bytes] = open(self.temp, "xb")
        except FileNotFoundError:
            raise NoSuchUpload(f"no such multipart upload {directory.name}") from None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.write(data)
        self.md5.update(data)
        self.size += len(data)

    def finish(self) -> UploadedPart:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        digest = self.md5.hexdigest()
        os.replace(self.temp, self.directory / f"{self.number:05d}-{digest}")
        return UploadedPart(self.number, f'"{digest}"', self.size)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


async def write_part(writer: PartWriter, body: Body) -> UploadedPart:
    """Write ``body`` through ``writer`` off the event loop; the temp file goes on failure."""
    try:
        kind = _body_kind(body)
        if kind == "bytes":
            await asyncio.to_thread(writer.write, body)  # type: ignore[arg-type]
        elif kind == "path":
            data = await asyncio.to_thread(Path(body).read_bytes)  # type: ignore[arg-type]
            await asyncio.to_thread(writer.write, data)
        else:
            async for chunk in body:  # type: ignore[union-attr]
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise TypeError(f"stream yielded {type(chunk).__name__}, expected bytes")
                await asyncio.to_thread(writer.write, chunk)
        return await asyncio.to_thread(writer.finish)
    except BaseException:
        await asyncio.to_thread(writer.discard)
        raise


def part_paths(directory: Path, key: str, parts: Sequence[UploadedPart]) -> list[Path]:
    """The files of the listed parts, checked against their ETags and sizes."""
    manifest(directory, key)
    paths = []
    for part in parts:
        path = directory / f"{part.number:05d}-{part.etag.strip(chr(34))}"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise StorageError(
                f"part {part.number} of {key} with ETag {part.etag} was not stored"
            ) from None
        if size != part.size:
            raise StorageError(f"part {part.number} of {key} holds {size} bytes, not {part.size}")
        paths.append(path)
    return paths


def append_file(dst: IO[bytes], src: Path) -> int:
    """Append ``src`` to ``dst`` (kernel copy when the system has one); bytes copied."""
    dst.flush()
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        left = size
        try:
            while left > 0:
                done = os.copy_file_range(f.fileno(), dst.fileno(), min(left, 1 << 30))
                if done == 0:
                    break
                left -= done
        except OSError:
            pass  # not supported here (old kernel, other filesystem): copy below
        if left:
            f.seek(size - left)
            dst.seek(0, os.SEEK_END)
            while block := f.read(CHUNK_SIZE * 4):
                dst.write(block)
    return size


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
