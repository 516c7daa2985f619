"""How an upload becomes a clip, the same for the raw POST and for tus uploads: the
checks made before any byte is stored (contributor, sequence, content type, target
scene and contributor exist), and the one transaction in which the stored upload
becomes a `processing` segment and its transcode job."""

from __future__ import annotations

import asyncpg

from core import catalog, layout, queue

# Upload content types: video/* plus the generic types phones and tools send.
_GENERIC_TYPES = {"application/octet-stream", "application/mp4", "application/x-matroska"}
MAX_SEQUENCE = 1_000_000


def upload_type_ok(content_type: str) -> bool:
    return content_type.startswith("video/") or content_type in _GENERIC_TYPES


def parse_sequence(raw: str) -> int:
    """A clip's requested place in its scene; ValueError with the rule otherwise."""
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_SEQUENCE:
        raise ValueError(f"'sequence' must be an integer between 1 and {MAX_SEQUENCE}")
    return int(raw)


def contributor_ok(value: str) -> bool:
    return layout.is_id(value, "usr")


async def missing_target(conn: asyncpg.Connection, scene_id: str, contributor: str) -> str | None:
    """Why an upload to `scene_id` by `contributor` cannot be taken (no live scene, no
    such user), or None."""
    if await catalog.get_live_scene(conn, scene_id) is None:
        return f"no such scene: {scene_id}"
    if await catalog.get_user(conn, contributor) is None:
        return f"no such contributor: {contributor}"
    return None


async def segment_and_transcode(
    conn: asyncpg.Connection,
    *,
    scene_id: str,
    segment_id: str,
    job_id: str,
    sequence: int | None,
    contributor: str,
    max_attempts: int,
) -> int:
    """In the caller's transaction: the upload stored at `layout.upload_key(job_id)`
    becomes segment `segment_id` (processing) and its transcode job `job_id`. Returns
    the segment's sequence; catalog.Conflict when the sequence is taken."""
    if not conn.is_in_transaction():
        raise RuntimeError("segment_and_transcode must run inside the caller's transaction")
    seq = await catalog.insert_segment(conn, segment_id, scene_id, sequence, contributor)
    await queue.enqueue(
        conn,
        "transcode",
        {"scene_id": scene_id, "segment_id": segment_id, "upload_key": layout.upload_key(job_id)},
        job_id=job_id,
        dedupe_key=f"transcode:{segment_id}",
        scene_id=scene_id,
        segment_id=segment_id,
        max_attempts=max_attempts,
    )
    return seq
