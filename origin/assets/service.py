"""Writing the assets bucket (issue 15): avatars, topic icons and a scene's references.
An upload is turned into what is stored — images re-encoded by origin/assets/imaging.py in a
worker thread, the voice anchor checked and re-muxed by ffprobe and ffmpeg
(origin/assets/voice.py, core/procs.py) — a few at a time per process, then
written with its row in the `assets` table (sql/assets.sql) in one transaction that
holds the key's advisory lock and its owner's row, so that writes of one key take
turns, a scene's deletion never misses a reference being written, and a row exists
for every object this module keeps. Nothing is stored when the upload is refused.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from core import catalog, db, layout
from core.procs import run_capture
from core.storage import Storage
from origin.assets import imaging
from origin.assets import voice as voicerules
from origin.assets.rules import SNIFF_BYTES, AssetLimits, Processed, Refused, Target

PROCESSING_SLOTS = 2
"""Uploads decoded or re-muxed at once per origin process (the rest wait): a bound on
the memory and CPU that image decoding and ffmpeg take from the request path."""

PROBE_TIMEOUT = 20.0
REMUX_TIMEOUT = 60.0


class OwnerMissing(Exception):
    """The user or live scene an asset belongs to does not exist."""


@dataclass(frozen=True)
class Asset:
    """A stored asset as its row describes it."""

    key: str
    kind: str
    content_type: str
    size: int
    etag: str
    width: int | None
    height: int | None
    duration: float | None
    entity_id: str | None
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def _asset(row: asyncpg.Record) -> Asset:
    return Asset(
        key=row["key"],
        kind=row["kind"],
        content_type=row["content_type"],
        size=row["size"],
        etag=row["etag"],
        width=row["width"],
        height=row["height"],
        duration=row["duration"],
        entity_id=row["entity_id"],
        updated_at=row["updated_at"],
    )


class Processor:
    """Turns uploads into what is stored, at most PROCESSING_SLOTS at once."""

    def __init__(self, limits: AssetLimits, slots: int = PROCESSING_SLOTS) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(slots)
        imaging.configure(limits.max_pixels)

    async def process(self, target: Target, data: bytes) -> Processed:
        """The stored form of `data` for `target`, or Refused."""
        if len(data) > self.limits.max_bytes:
            raise Refused(
                413, "too_large", f"the upload is larger than {self.limits.max_bytes} bytes"
            )
        async with self._slots:
            rule = target.rule
            if rule is not None:
                return await asyncio.to_thread(imaging.reencode, data, rule, self.limits)
            return await self._voice(data)

    async def _ffprobe(self, path: Path) -> dict[str, Any]:
        try:
            done = await run_capture(voicerules.probe_command(path), timeout=PROBE_TIMEOUT)
        except TimeoutError:
            raise Refused(422, "damaged_audio", "the WAV file took too long to read") from None
        if done.returncode != 0:
            raise voicerules.failure(done.stderr, path)
        try:
            parsed = json.loads(done.stdout)
        except ValueError:
            raise Refused(422, "damaged_audio", "the WAV file cannot be read") from None
        return parsed if isinstance(parsed, dict) else {}

    async def _voice(self, data: bytes) -> Processed:
        voicerules.sniff_wav(data[:SNIFF_BYTES])
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="storyforge-voice-"))
        try:
            upload, stored = work / "upload.wav", work / layout.VOICE_ANCHOR
            await asyncio.to_thread(upload.write_bytes, data)
            info = voicerules.validate_probe(await self._ffprobe(upload), self.limits)
            command = voicerules.remux_command(upload, stored, info, self.limits)
            try:
                done = await run_capture(command, timeout=REMUX_TIMEOUT)
            except TimeoutError:
                raise Refused(
                    422, "damaged_audio", "the WAV file took too long to decode"
                ) from None
            if done.returncode != 0:
                raise voicerules.failure(done.stderr, upload)
            out = voicerules.check_output(await self._ffprobe(stored), self.limits)
            body = await asyncio.to_thread(stored.read_bytes)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return Processed(body, "audio/wav", duration=round(out.duration, 3))


async def owner_exists(conn: asyncpg.Connection, target: Target) -> bool:
    """Whether the asset's user or live scene exists (topics have no table)."""
    if target.user_id is not None:
        return await catalog.get_user(conn, target.user_id) is not None
    if target.scene_id is not None:
        return await catalog.get_live_scene(conn, target.scene_id) is not None
    return True


async def _hold_owner(conn: asyncpg.Connection, target: Target) -> bool:
    """`owner_exists`, holding the owner's row FOR SHARE until the transaction ends."""
    if target.user_id is not None:
        return await conn.fetchval(db.q("user_for_asset"), target.user_id) is not None
    if target.scene_id is not None:
        return await conn.fetchval(db.q("live_scene_for_asset"), target.scene_id) is not None
    return True


async def store(
    pool: asyncpg.Pool, storage: Storage, bucket: str, target: Target, processed: Processed
) -> tuple[Asset, bool]:
    """Write the object and its row; (the asset, whether it is new). OwnerMissing when
    the user or scene went away meanwhile (nothing is written then)."""
    meta = layout.asset_meta(target.key)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(db.q("lock_asset"), target.key)
        if not await _hold_owner(conn, target):
            raise OwnerMissing(target.key)
        info = await storage.put(
            bucket,
            target.key,
            processed.data,
            content_type=processed.content_type,
            cache_control=meta.cache_control,
            tags={"type": meta.tag},
        )
        row = await conn.fetchrow(
            db.q("upsert_asset"),
            target.key,
            target.kind,
            target.user_id,
            target.topic_id,
            target.scene_id,
            target.entity_id,
            processed.content_type,
            info.size,
            info.etag,
            processed.width,
            processed.height,
            processed.duration,
        )
    return _asset(row), bool(row["created"])


async def remove(pool: asyncpg.Pool, storage: Storage, bucket: str, target: Target) -> bool:
    """Delete the object and its row; False if there was no row (the object, if any,
    is deleted anyway)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(db.q("lock_asset"), target.key)
        found = await conn.fetchval(db.q("delete_asset"), target.key)
        await storage.delete(bucket, target.key)
    return found is not None


async def scene_references(conn: asyncpg.Connection, scene_id: str) -> list[Asset]:
    return [_asset(row) for row in await conn.fetch(db.q("scene_references"), scene_id)]
