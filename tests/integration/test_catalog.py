"""Publishing a segment through `core.catalog` on a real PostgreSQL: once, inside the
transaction that holds the job's lease fence, or not at all."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core import catalog, layout, queue
from core.playlists import Rendition

RENDITION = Rendition(
    profile="720p",
    width=1280,
    height=720,
    frame_rate=30.0,
    codecs="avc1.4d401f,mp4a.40.2",
    durations=(4.0, 2.5),
    sizes=(400_000, 200_000),
    bandwidth_peak=900_000,
    bandwidth_average=738_462,
)


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def processing_segment(conn: asyncpg.Connection) -> tuple[catalog.Scene, catalog.Segment]:
    """A new scene with one processing segment, as the upload API leaves them."""
    user = await catalog.create_user(conn, f"publisher-{uuid.uuid4().hex[:8]}")
    scene = await catalog.create_scene(conn, "publishing")
    segment_id = layout.new_id("seg")
    await catalog.insert_segment(conn, segment_id, scene.id, None, user.id)
    seg = await catalog.segment_for_job(conn, segment_id)
    assert seg == catalog.Segment(segment_id, scene.id, 1, user.id, "processing", True)
    return scene, seg


async def test_publish_segment_once_and_only_inside_a_transaction(conn) -> None:
    scene, seg = await processing_segment(conn)
    segment_id = seg.id
    assert await catalog.first_ready_segment(conn, scene.id) is None

    with pytest.raises(RuntimeError, match="inside the transaction"):
        await catalog.publish_segment(
            conn, segment_id, duration=6.5, metadata={}, renditions=[RENDITION], webhooks=()
        )
    async with conn.transaction():
        version = await catalog.publish_segment(
            conn,
            segment_id,
            duration=6.5004,
            metadata={"segmentId": segment_id},
            renditions=[RENDITION],
            webhooks=(),
        )
    assert version == scene.version + 1
    view = await catalog.scene_view(conn, scene.id)
    assert view is not None and view.scene.version == version
    (clip,) = view.clips
    assert clip.clip.segment_id == segment_id and clip.clip.duration == 6.5
    assert clip.clip.renditions == {"720p": RENDITION}
    stored = await conn.fetchval("SELECT metadata FROM segments WHERE id = $1", segment_id)
    assert json.loads(stored) == {"segmentId": segment_id}
    assert await catalog.first_ready_segment(conn, scene.id) == segment_id

    # a second attempt finds it published: nothing is written
    async with conn.transaction():
        again = await catalog.publish_segment(
            conn, segment_id, duration=6.5, metadata={}, renditions=[RENDITION], webhooks=()
        )
    assert again is None
    assert await catalog.live_scene_version(conn, scene.id) == version
    n = await conn.fetchval("SELECT count(*) FROM renditions WHERE segment_id = $1", seg.id)
    assert n == 1
    # ready stays ready, and no event says otherwise
    assert not await catalog.fail_segment(conn, segment_id, "too late", webhooks=("http://x/",))
    events = await conn.fetch(
        "SELECT type, payload::text AS payload FROM webhook_events WHERE scene_id = $1", scene.id
    )
    assert [e["type"] for e in events] == ["segment.ready"]
    assert json.loads(events[0]["payload"])["data"] == {
        "segmentId": segment_id,
        "sceneId": scene.id,
        "sequence": 1,
        "contributorId": seg.contributor_id,
        "duration": 6.5,
    }
    after = await catalog.segment_for_job(conn, segment_id)
    assert after is not None and after.status == "ready"


async def test_a_publish_without_the_lease_rolls_back_whole(conn) -> None:
    scene, seg = await processing_segment(conn)
    segment_id = seg.id
    with pytest.raises(queue.LeaseLost):
        async with conn.transaction():
            assert await catalog.publish_segment(
                conn, segment_id, duration=6.5, metadata={}, renditions=[RENDITION], webhooks=()
            )
            # completing a job whose lease is not ours fails: the publish goes too
            await queue.complete(conn, layout.new_id("job"), str(uuid.uuid4()))
    after = await catalog.segment_for_job(conn, segment_id)
    assert after is not None and after.status == "processing"
    assert await catalog.live_scene_version(conn, scene.id) == scene.version
