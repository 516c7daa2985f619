"""Scenes for tests: created through the API (users, a scene, uploads) or published
directly through the database and storage as the transcoder would (no ffmpeg)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path

from core import db, layout
from core.storage import open_configured_storage

API_TOKEN = "test-token-0123456789"
AUTH = f"Bearer {API_TOKEN}"

TS_BYTES = bytes(range(256)) * 40  # 10,240 bytes


async def publish(
    settings, scene_id: str, user_id: str, sequence: int, durations, *, ready=True, first_pts=None
):
    """Insert a segment with renditions and store its files, as the transcoder would
    (`first_pts`: where its media starts on the 90 kHz clock, None: not recorded)."""
    seg = layout.new_id("seg")
    pool = await db.connect_pool(settings.database_url, size=2)
    storage = await open_configured_storage(settings)
    try:
        await storage.ensure_buckets(settings.buckets)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO segments (id, scene_id, sequence, contributor_id, status, duration, "
                "metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                seg,
                scene_id,
                sequence,
                user_id,
                "ready" if ready else "processing",
                sum(durations),
                json.dumps(
                    {
                        "storyboard": [
                            {
                                "start": 0.0,
                                "end": sum(durations),
                                "sheet": "storyboard.jpg",
                                "x": 0,
                                "y": 0,
                                "w": 160,
                                "h": 90,
                            }
                        ]
                    }
                ),
            )
            for profile, (w, h, bw, codecs) in {
                "720p": (1280, 720, 1_500_000, "avc1.4d401f,mp4a.40.2"),
                "1080p": (1920, 1080, 4_000_000, "avc1.640028,mp4a.40.2"),
            }.items():
                await conn.execute(
                    db.q("insert_rendition"),
                    seg,
                    profile,
                    w,
                    h,
                    30.0,
                    codecs,
                    bw,
                    bw * 3 // 4,
                    list(durations),
                    [len(TS_BYTES)] * len(durations),
                    first_pts,
                )
            await conn.execute(
                "UPDATE scenes SET version = version + 1, updated_at = now() WHERE id = $1",
                scene_id,
            )
        for profile in ("720p", "1080p"):
            for i in range(1, len(durations) + 1):
                name = layout.media_segment_name(profile, i)
                meta = layout.file_meta(name)
                await storage.put(
                    settings.videos_bucket,
                    layout.segment_key(scene_id, seg, name),
                    TS_BYTES,
                    content_type=meta.content_type,
                    cache_control=meta.cache_control,
                    tags={"type": meta.tag},
                )
    finally:
        await storage.aclose()
        await pool.close()
    return seg


async def put_captions(client, segment: str, lang: str, body: bytes, ctype="text/vtt") -> int:
    """PUT a clip's captions in `lang` through the API; their revision."""
    r = await client.put(
        f"/api/v1/segments/{segment}/captions/{lang}",
        data=body,
        headers={**client.headers_auth, "Content-Type": ctype},
    )
    assert r.status in (200, 201), await r.text()
    return (await r.json())["revision"]


async def scene_with_users(client, n_users=1, title="The Signal"):
    h = client.headers_auth
    users = []
    for _ in range(n_users):
        r = await client.post(
            "/api/v1/users", json={"username": "u" + os.urandom(5).hex()}, headers=h
        )
        users.append((await r.json())["id"])
    r = await client.post("/api/v1/scenes", json={"title": title}, headers=h)
    return (await r.json())["id"], users


async def new_scene(client, contributors: int = 1) -> tuple[str, list[str]]:
    h = client.headers_auth
    users = []
    for _ in range(contributors):
        r = await client.post(
            "/api/v1/users", json={"username": f"u{os.urandom(6).hex()}"}, headers=h
        )
        assert r.status == 201, await r.text()
        users.append((await r.json())["id"])
    r = await client.post("/api/v1/scenes", json={"title": "The Signal"}, headers=h)
    assert r.status == 201
    return (await r.json())["id"], users


async def upload(client, scene, user, path: Path, ctype="video/mp4", **params) -> dict:
    r = await client.post(
        f"/api/v1/scenes/{scene}/segments",
        params={"contributor": user, **{k: str(v) for k, v in params.items()}},
        data=path.read_bytes(),
        headers={**client.headers_auth, "Content-Type": ctype},
    )
    assert r.status == 202, await r.text()
    return await r.json()


async def tus_create(client, scene, user, length: int, **metadata: str) -> str:
    """A tus upload of `length` bytes for a clip of `scene` by `user` (POST
    /api/v1/uploads, `metadata` added to Upload-Metadata); its URL."""
    values = {"sceneId": scene, "contributor": user, **metadata}
    r = await client.post(
        "/api/v1/uploads",
        headers={
            **client.headers_auth,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(length),
            "Upload-Metadata": ",".join(
                f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items()
            ),
        },
    )
    assert r.status == 201, await r.text()
    return r.headers["Location"]


async def wait_done(client, segment_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/api/v1/segments/{segment_id}")
        body = await r.json()
        if body["status"] != "processing":
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"segment {segment_id} still processing after {timeout}s")


async def published_scene(client, settings, clips=2):
    client.headers_auth = {"Authorization": AUTH}
    scene, (user,) = await scene_with_users(client)
    segs = [await publish(settings, scene, user, i + 1, [4.0, 2.5]) for i in range(clips)]
    return scene, segs
