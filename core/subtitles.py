"""Caption rows (issue 27, `sql/captions.sql`): a clip's normalised WebVTT per
language written or deleted in one transaction with the scene's version bump (a new
scene version: every document built from the old one is rebuilt) and the
`captions.updated` event; the languages of a clip. Parsing and checking are
core/captions.py's; the rows go with their clip (ON DELETE CASCADE, migration 0010).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core import captions, catalog, db, outbox


@dataclass(frozen=True)
class Language:
    language: str
    cues: int
    revision: int
    updated_at: datetime


@dataclass(frozen=True)
class Written:
    scene_id: str
    language: Language
    created: bool
    dropped: int  # cues that started after the clip's end (ready clips only)
    version: int  # the scene's new version


class NoClip(LookupError):
    """No such clip (or it was removed, or its scene deleted)."""


async def _lock_clip(conn: asyncpg.Connection, segment_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(db.q("captions_segment_lock"), segment_id)
    if row is None:
        raise NoClip(segment_id)
    return row


def _event(
    segment_id: str, scene_id: str, language: str, revision: int | None
) -> dict[str, object]:
    """`captions.updated` data: `revision` None when the language was deleted."""
    return {
        "segmentId": segment_id,
        "sceneId": scene_id,
        "language": language,
        "revision": revision,
        "deleted": revision is None,
    }


async def put(
    conn: asyncpg.Connection,
    segment_id: str,
    language: str,
    cues: list[captions.Cue],
    *,
    webhooks: Sequence[str],
) -> Written:
    """Store `cues` as the clip's captions in `language` (clamped to the clip when it
    is ready: its duration is known), bump the scene's version and write the event,
    in one transaction. NoClip: nothing written."""
    async with conn.transaction():
        row = await _lock_clip(conn, segment_id)
        kept = cues
        if row["duration"] is not None:
            kept = captions.clamp(cues, round(row["duration"] * 1000))
        stored = await conn.fetchrow(
            db.q("captions_upsert"), segment_id, language, captions.to_vtt(kept), len(kept)
        )
        version = await catalog.bump_scene_version(conn, row["scene_id"])
        data = _event(segment_id, row["scene_id"], language, stored["revision"])
        await outbox.emit(conn, webhooks, "captions.updated", scene_id=row["scene_id"], data=data)
    found = Language(language, len(kept), stored["revision"], stored["updated_at"])
    return Written(row["scene_id"], found, stored["created"], len(cues) - len(kept), version)


async def delete(
    conn: asyncpg.Connection, segment_id: str, language: str, *, webhooks: Sequence[str]
) -> str | None:
    """Delete the clip's captions in `language`, bump the scene's version, write the
    event: the scene's id, or None when there were none. NoClip: no such clip."""
    async with conn.transaction():
        row = await _lock_clip(conn, segment_id)
        if await conn.fetchval(db.q("captions_delete"), segment_id, language) is None:
            return None
        scene_id: str = row["scene_id"]
        await catalog.bump_scene_version(conn, scene_id)
        data = _event(segment_id, scene_id, language, None)
        await outbox.emit(conn, webhooks, "captions.updated", scene_id=scene_id, data=data)
    return scene_id


async def languages(conn: asyncpg.Connection, segment_id: str) -> list[Language]:
    """The clip's captions, by language (empty for a clip without any, or none)."""
    rows = await conn.fetch(db.q("captions_of_segment"), segment_id)
    return [Language(r["language"], r["cues"], r["revision"], r["updated_at"]) for r in rows]


async def text(conn: asyncpg.Connection, segment_id: str, language: str) -> tuple[str, int] | None:
    """The clip's captions in `language` as stored (normalised WebVTT) and their
    revision, or None."""
    row = await conn.fetchrow(db.q("captions_text"), segment_id, language)
    return None if row is None else (row["vtt"], row["revision"])
