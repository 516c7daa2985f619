"""Users, scenes, segments and renditions in PostgreSQL: the queries of
`sql/catalog.sql` as typed async functions returning frozen dataclasses, with
driver errors turned into domain ones here."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from origin import db, layout
from origin.playlists import Clip, Rendition, StoryboardCue


class Conflict(Exception):
    """A uniqueness rule refused the write (taken username, taken sequence)."""


@dataclass(frozen=True)
class User:
    id: str
    username: str


@dataclass(frozen=True)
class Scene:
    id: str
    title: str
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class SceneClip:
    """A ready segment of a scene as the stitcher and the playlist JSON see it."""

    clip: Clip
    sequence: int
    contributor: User


@dataclass(frozen=True)
class SceneView:
    scene: Scene
    clips: tuple[SceneClip, ...]


async def create_user(conn: asyncpg.Connection, username: str) -> User:
    try:
        row = await conn.fetchrow(db.q("create_user"), layout.new_id("usr"), username)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"username {username!r} is taken") from None
    return User(row["id"], row["username"])


async def get_user(conn: asyncpg.Connection, user_id: str) -> User | None:
    row = await conn.fetchrow(db.q("get_user"), user_id)
    return User(row["id"], row["username"]) if row else None


async def create_scene(conn: asyncpg.Connection, title: str) -> Scene:
    row = await conn.fetchrow(db.q("create_scene"), layout.new_id("scn"), title)
    return _scene(row)


async def get_live_scene(conn: asyncpg.Connection, scene_id: str) -> Scene | None:
    row = await conn.fetchrow(db.q("get_live_scene"), scene_id)
    return _scene(row) if row else None


def _scene(row: asyncpg.Record) -> Scene:
    return Scene(row["id"], row["title"], row["version"], row["updated_at"])


async def insert_segment(
    conn: asyncpg.Connection,
    segment_id: str,
    scene_id: str,
    sequence: int | None,
    contributor_id: str,
) -> int:
    """Insert a `processing` segment; returns its sequence. Conflict if taken."""
    try:
        row = await conn.fetchrow(
            db.q("insert_segment"), segment_id, scene_id, sequence, contributor_id
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"sequence {sequence} is taken in scene {scene_id}") from None
    return int(row["sequence"])


async def segment_status(conn: asyncpg.Connection, segment_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(db.q("get_segment_status"), segment_id)
    return dict(row) if row else None


async def scene_view(
    conn: asyncpg.Connection, scene_id: str, *, storyboard: bool = False
) -> SceneView | None:
    """The live scene and its ready clips in sequence order, or None if no live scene.
    Storyboard cues are read only when asked for (only the storyboard VTT needs them)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        scene_row = await conn.fetchrow(db.q("get_live_scene"), scene_id)
        if scene_row is None:
            return None
        rows = await conn.fetch(db.q("scene_clips"), scene_id, storyboard)
    return SceneView(_scene(scene_row), tuple(_clips(rows)))


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a synchronous build of many small
    objects (nothing else runs meanwhile: there is no await inside). Reference
    counting frees them as usual. Without the pause, the collections their allocation
    triggers walk the whole heap again and again: a 10,000-clip scene cost twice as
    much per clip as a 100-clip one."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _clips(rows: list[asyncpg.Record]) -> list[SceneClip]:
    with cyclic_gc_paused():
        return _clips_of(rows)


def _clips_of(rows: list[asyncpg.Record]) -> list[SceneClip]:
    out: list[SceneClip] = []
    current: str | None = None
    renditions: dict[str, Rendition] = {}
    first: asyncpg.Record | None = None

    def flush() -> None:
        if first is None:
            return
        cues = tuple(
            StoryboardCue(c["start"], c["end"], c["x"], c["y"], c["w"], c["h"], c["sheet"])
            for c in (json.loads(first["storyboard"]) if first["storyboard"] else [])
        )
        out.append(
            SceneClip(
                Clip(first["id"], float(first["duration"]), dict(renditions), cues),
                first["sequence"],
                User(first["contributor_id"], first["username"]),
            )
        )

    for row in rows:
        if row["id"] != current:
            flush()
            current, first, renditions = row["id"], row, {}
        renditions[row["profile"]] = Rendition(
            profile=row["profile"],
            width=row["width"],
            height=row["height"],
            frame_rate=row["frame_rate"],
            codecs=row["codecs"],
            durations=tuple(row["durations"]),
            sizes=tuple(row["sizes"]),
            bandwidth_peak=row["bandwidth_peak"],
            bandwidth_average=row["bandwidth_average"],
        )
    flush()
    return out


async def ready_segment_exists(conn: asyncpg.Connection, scene_id: str, segment_id: str) -> bool:
    return await conn.fetchval(db.q("ready_segment_exists"), segment_id, scene_id) is not None


async def live_scene_version(conn: asyncpg.Connection, scene_id: str) -> int | None:
    return await conn.fetchval(db.q("live_scene_version"), scene_id)


async def segment_clip(conn: asyncpg.Connection, scene_id: str, segment_id: str) -> Clip | None:
    """A ready segment of a live scene as a Clip (renditions and storyboard cues), or
    None."""
    rows = await conn.fetch(db.q("segment_clip"), segment_id, scene_id)
    clips = _clips_of(rows)
    return clips[0].clip if clips else None
