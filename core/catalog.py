"""Users, scenes, segments and renditions in PostgreSQL: the queries of
`sql/catalog.sql` as typed async functions returning frozen dataclasses, with
driver errors turned into domain ones here. The API creates users, scenes and
processing segments; the transcode job publishes (or fails) them; the read path
builds scenes from them."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import Any

import asyncpg

from core import db, layout, outbox
from core.playlists import Clip, Rendition, StoryboardCue


class Conflict(Exception):
    """A uniqueness rule refused the write (taken username, taken sequence)."""


class SceneGone(Exception):
    """The scene does not exist or is deleted."""


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
class Segment:
    """A clip of a scene as its transcode job sees it."""

    id: str
    scene_id: str
    sequence: int
    contributor_id: str
    status: str  # processing | ready | failed
    scene_live: bool  # False once the scene is deleted


@dataclass(frozen=True)
class Loudness:
    """What loudness matching measured and did to a clip's audio (workers/media/loudness.py),
    kept on each of its renditions: the mode (linear, dynamic, silent, no_audio, off),
    the input's integrated loudness (LUFS) and true peak (dBTP), and the gain (dB)."""

    mode: str
    input_loudness: float | None = None
    input_true_peak: float | None = None
    gain: float | None = None


@dataclass(frozen=True)
class RefineTarget:
    """A clip as its `refine` job sees it: refinable while ready in a live scene."""

    id: str
    scene_id: str
    sequence: int
    status: str
    generation: int
    duration: float | None
    metadata: dict[str, Any]
    scene_live: bool

    @property
    def refinable(self) -> bool:
        return self.status == "ready" and self.scene_live


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
    # the clips' captions as stored, when asked for: segment id -> language -> WebVTT
    captions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


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
    """Insert a `processing` segment; returns its sequence. Conflict if taken,
    SceneGone if the scene is deleted meanwhile. Inside the caller's transaction (a
    savepoint, or one of its own), the scene's row is held from here on: clips added at
    once without a sequence get consecutive ones, and a deletion waits for the clip's
    job to exist (and cancels it)."""
    async with conn.transaction():
        if await conn.fetchval(db.q("lock_live_scene"), scene_id) is None:
            raise SceneGone(f"no such scene: {scene_id}")
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


async def segment_for_job(conn: asyncpg.Connection, segment_id: str) -> Segment | None:
    row = await conn.fetchrow(db.q("get_segment_for_job"), segment_id)
    if row is None:
        return None
    return Segment(
        row["id"],
        row["scene_id"],
        row["sequence"],
        row["contributor_id"],
        row["status"],
        row["scene_live"],
    )


async def fail_segment(
    conn: asyncpg.Connection, segment_id: str, reason: str, *, webhooks: Sequence[str]
) -> bool:
    """A processing segment becomes failed with a readable reason, and its
    `segment.failed` event is written to the outbox (to `webhooks`, the configured
    endpoints) in the same transaction. False (nothing written) when it was not
    processing."""
    async with conn.transaction():
        row = await conn.fetchrow(db.q("fail_segment"), segment_id, reason)
        if row is None:
            return False
        data = {"segmentId": segment_id, "sceneId": row["scene_id"], "error": reason}
        data |= {"sequence": row["sequence"], "contributorId": row["contributor_id"]}
        await outbox.emit(conn, webhooks, "segment.failed", scene_id=row["scene_id"], data=data)
    return True


async def publish_segment(
    conn: asyncpg.Connection,
    segment_id: str,
    *,
    duration: float,
    metadata: Mapping[str, Any],
    renditions: Sequence[Rendition],
    webhooks: Sequence[str],
    loudness: Loudness | None = None,
) -> int | None:
    """Publish a processing segment: ready with its metadata, its renditions written,
    the scene's version bumped, its `segment.ready` event in the outbox (to `webhooks`,
    the configured endpoints). Runs in the caller's transaction, which must hold the
    transcode job's lease fence (`core.queue.lock_lease`) and complete the job, so
    the segment becomes visible exactly when its job succeeds.

    Returns the scene's new version, or None (nothing written) when the segment is
    not processing: published by an earlier attempt, or failed.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("publish_segment must run inside the transaction holding the fence")
    row = await conn.fetchrow(
        db.q("mark_segment_ready"), segment_id, round(duration, 3), json.dumps(dict(metadata))
    )
    if row is None:
        return None
    await conn.executemany(db.q("insert_rendition"), _rendition_rows(segment_id, renditions))
    if loudness is not None:
        await _set_loudness(conn, segment_id, loudness)
    version: int = await conn.fetchval(db.q("bump_scene_version"), row["scene_id"])
    data = {"segmentId": segment_id, "sceneId": row["scene_id"], "sequence": row["sequence"]}
    data |= {"contributorId": row["contributor_id"], "duration": round(duration, 3)}
    await outbox.emit(conn, webhooks, "segment.ready", scene_id=row["scene_id"], data=data)
    return version


async def bump_scene_version(conn: asyncpg.Connection, scene_id: str) -> int:
    """A new version of the scene (in the caller's transaction): its documents are
    built again from the rows (origin/playback/scenes.py)."""
    version: int = await conn.fetchval(db.q("bump_scene_version"), scene_id)
    return version


async def refine_target(conn: asyncpg.Connection, segment_id: str) -> RefineTarget | None:
    row = await conn.fetchrow(db.q("get_segment_for_refine"), segment_id)
    if row is None:
        return None
    meta = row["metadata"]
    return RefineTarget(
        row["id"],
        row["scene_id"],
        row["sequence"],
        row["status"],
        row["generation"],
        row["duration"],
        json.loads(meta) if isinstance(meta, str) else dict(meta or {}),
        row["scene_live"],
    )


async def publish_generation(
    conn: asyncpg.Connection,
    segment_id: str,
    generation: int,
    *,
    renditions: Sequence[Rendition],
    metadata: Mapping[str, Any],
    loudness: Loudness | None = None,
) -> int | None:
    """Publish a refined generation of a ready clip (issue 17): its renditions rows
    replaced by `renditions` (encoded as `generation`, the one after the current), the
    segment `final`, `metadata` merged into its own, the scene's version bumped so
    every stitched document moves on. Runs in the caller's transaction, which must hold
    the refine job's lease fence and complete the job.

    Returns the scene's new version, or None (nothing written) when the clip is no
    longer ready in a live scene or is not at the generation before `generation`.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("publish_generation must run inside the transaction holding the fence")
    if any(r.generation != generation for r in renditions) or not renditions:
        raise ValueError(f"every rendition must be of generation {generation}")
    scene_id = await conn.fetchval(
        db.q("mark_segment_refined"), segment_id, generation, json.dumps(dict(metadata))
    )
    if scene_id is None:
        return None
    await conn.execute(db.q("delete_renditions"), segment_id)
    await conn.executemany(db.q("insert_rendition"), _rendition_rows(segment_id, renditions))
    if loudness is not None:
        await _set_loudness(conn, segment_id, loudness)
    version: int = await conn.fetchval(db.q("bump_scene_version"), scene_id)
    return version


def _rendition_rows(segment_id: str, renditions: Sequence[Rendition]) -> list[tuple[Any, ...]]:
    return [
        (
            segment_id,
            r.profile,
            r.width,
            r.height,
            r.frame_rate,
            r.codecs,
            r.bandwidth_peak,
            r.bandwidth_average,
            list(r.durations),
            list(r.sizes),
            r.first_pts,
        )
        for r in renditions
    ]


async def _set_loudness(conn: asyncpg.Connection, segment_id: str, loudness: Loudness) -> None:
    await conn.execute(
        db.q("set_rendition_loudness"),
        segment_id,
        loudness.mode,
        loudness.input_loudness,
        loudness.input_true_peak,
        loudness.gain,
    )


async def rendition_loudness(conn: asyncpg.Connection, segment_id: str) -> dict[str, Loudness]:
    """Loudness matching's record on each rendition of a segment, by profile."""
    rows = await conn.fetch(db.q("rendition_loudness"), segment_id)
    return {
        r["profile"]: Loudness(
            r["loudness_mode"], r["input_loudness"], r["input_true_peak"], r["loudness_gain"]
        )
        for r in rows
    }


async def first_ready_segment(conn: asyncpg.Connection, scene_id: str) -> str | None:
    """The id of the scene's first ready segment (in sequence order), if any."""
    return await conn.fetchval(db.q("first_ready_segment"), scene_id)


async def scene_view(
    conn: asyncpg.Connection, scene_id: str, *, storyboard: bool = False, captions: bool = False
) -> SceneView | None:
    """The live scene and its ready clips in sequence order, or None if no live scene.
    Storyboard cues are read only when asked for (only the storyboard VTT needs them),
    and so are the captions' text (an export's sidecars), in the same snapshot."""
    texts: dict[str, dict[str, str]] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        scene_row = await conn.fetchrow(db.q("get_live_scene"), scene_id)
        if scene_row is None:
            return None
        rows = await conn.fetch(db.q("scene_clips"), scene_id, storyboard)
        if captions:
            for row in await conn.fetch(db.q("scene_captions_text"), scene_id):
                texts.setdefault(row["segment_id"], {})[row["language"]] = row["vtt"]
    return SceneView(_scene(scene_row), tuple(_clips(rows)), texts)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a synchronous build of many small
    objects (nothing else runs meanwhile: there is no await inside). Reference
    counting frees them as usual. Without the pause, the collections their allocation
    triggers walk the whole heap again and again (figures: bench/README.md, build
    timings)."""
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
    """Rows of `scene_clips` / `segment_clip` (one per rendition, in clip order) ->
    clips. A cold build of a 1,000-clip scene makes 2,000 renditions here: each
    contributor's `User` is made once."""
    out: list[SceneClip] = []
    users: dict[str, User] = {}
    for _, group in groupby(rows, key=itemgetter("id")):
        renditions: dict[str, Rendition] = {}
        for row in group:
            renditions[row["profile"]] = Rendition(
                row["profile"],
                row["width"],
                row["height"],
                row["frame_rate"],
                row["codecs"],
                row["durations"],
                row["sizes"],
                row["bandwidth_peak"],
                row["bandwidth_average"],
                row["generation"],
                row["first_pts"],
            )
        first = row  # every row of a clip carries its clip's columns
        storyboard = first["storyboard"]
        cues = (
            tuple(
                StoryboardCue(c["start"], c["end"], c["x"], c["y"], c["w"], c["h"], c["sheet"])
                for c in json.loads(storyboard)
            )
            if storyboard
            else ()
        )
        captions = first["captions"]
        contributor = users.get(first["contributor_id"])
        if contributor is None:
            contributor = User(first["contributor_id"], first["username"])
            users[contributor.id] = contributor
        clip = Clip(
            first["id"],
            float(first["duration"]),
            renditions,
            cues,
            dict(map(_language_revision, captions)) if captions else None,
        )
        out.append(SceneClip(clip, first["sequence"], contributor))
    return out


def _language_revision(value: str) -> tuple[str, int]:
    language, revision = value.rsplit("/", 1)
    return language, int(revision)


async def ready_segment_generation(conn: asyncpg.Connection, scene_id: str, segment_id: str) -> int:
    """The current generation of a segment whose own files are served (ready, or
    removed in its grace period, in a live scene); 0 when there is none."""
    generation = await conn.fetchval(db.q("ready_segment_generation"), segment_id, scene_id)
    return int(generation or 0)


async def live_scene_version(conn: asyncpg.Connection, scene_id: str) -> int | None:
    return await conn.fetchval(db.q("live_scene_version"), scene_id)


async def segment_clip(conn: asyncpg.Connection, scene_id: str, segment_id: str) -> Clip | None:
    """A ready segment of a live scene as a Clip (renditions and storyboard cues), or
    None."""
    rows = await conn.fetch(db.q("segment_clip"), segment_id, scene_id)
    clips = _clips_of(rows)
    return clips[0].clip if clips else None
