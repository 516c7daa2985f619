"""Scenes and MP4s for the export tests and bench/export.py: a scene transcoded once
through the real upload API and workers, clips published again as new segments of
another scene (copies of their objects, published with `catalog.publish_segment` as
the transcoder does: cheap long scenes), waiting for an export, and what ffprobe and
ffmpeg say about an MP4."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from core import catalog, db, layout
from core.storage import Storage, open_configured_storage
from origin.app import create_app
from tests.helpers.clips import FFMPEG, FFPROBE, make_clip
from tests.helpers.scenes import AUTH, new_scene, upload, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.workers import running_workers


async def transcoded_scene(settings, clips: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """A scene whose clips (`make_clip` arguments) went through the upload API and the
    transcode job: {"scene", "user", "segments"}."""
    async with TestClient(OriginTestServer(create_app(settings))) as client:
        client.headers_auth = {"Authorization": AUTH}
        scene, (user,) = await new_scene(client)
        segments = []
        for i, spec in enumerate(clips, start=1):
            path = make_clip(workdir / f"clip{i}.mp4", **spec)
            segments.append((await upload(client, scene, user, path, sequence=i))["segmentId"])
        async with running_workers(settings, concurrency=2, lease_seconds=30):
            for seg in segments:
                done = await wait_done(client, seg, timeout=600)
                assert done["status"] == "ready", done
    return {"scene": scene, "user": user, "segments": segments}


async def new_scene_row(settings, title: str = "The Signal") -> str:
    pool = await db.connect_pool(settings.database_url, size=1)
    try:
        async with pool.acquire() as conn:
            return (await catalog.create_scene(conn, title)).id
    finally:
        await pool.close()


async def publish_copy(
    settings,
    storage: Storage,
    conn,
    source_scene: str,
    source_segment: str,
    scene_id: str,
    user: str,
    *,
    source_storage: Storage | None = None,
    profiles: Collection[str] | None = None,
) -> str:
    """Publish a ready segment's renditions again as a new clip of `scene_id`: its
    objects copied under the new segment's prefix (from `source_storage` when they
    live elsewhere), its rows published with `catalog.publish_segment` (the
    transcoder's publication: segment ready, scene version bumped). With `profiles`,
    only those renditions are published (a clip in its first stage: its lowest rung)."""
    clip = await catalog.segment_clip(conn, source_scene, source_segment)
    assert clip is not None, source_segment
    seg = layout.new_id("seg")
    bucket = settings.videos_bucket
    src = source_storage or storage
    async for info in src.list(bucket, layout.segment_prefix(source_scene, source_segment)):
        name = info.key.rsplit("/", 1)[-1]
        key = layout.segment_key(scene_id, seg, name)
        if src is storage:
            await storage.copy(bucket, info.key, bucket, key)
            continue
        meta = layout.file_meta(name)
        body = await (await src.get(bucket, info.key)).read()
        await storage.put(
            bucket,
            key,
            body,
            content_type=meta.content_type,
            cache_control=meta.cache_control,
            tags={"type": meta.tag},
        )
    async with conn.transaction():
        await catalog.insert_segment(conn, seg, scene_id, None, user)
        version = await catalog.publish_segment(
            conn,
            seg,
            duration=clip.duration,
            metadata={"copyOf": source_segment},
            renditions=[r for p, r in clip.renditions.items() if profiles is None or p in profiles],
            webhooks=(),
        )
    assert version is not None
    return seg


async def scene_of_copies(
    settings,
    source_scene: str,
    sources: list[str],
    user: str,
    *,
    title: str = "Copies",
    source_settings=None,
) -> tuple[str, list[str]]:
    """A new scene whose clips are `sources` (segments of `source_scene`, stored as
    `source_settings` say, by default where `settings` say) published again, in order."""
    scene = await new_scene_row(settings, title)
    pool = await db.connect_pool(settings.database_url, size=2)
    storage = await open_configured_storage(settings)
    src = await open_configured_storage(source_settings) if source_settings else None
    try:
        await storage.ensure_buckets(settings.buckets)
        async with pool.acquire() as conn:
            segs = [
                await publish_copy(
                    settings, storage, conn, source_scene, s, scene, user, source_storage=src
                )
                for s in sources
            ]
    finally:
        await storage.aclose()
        if src is not None:
            await src.aclose()
        await pool.close()
    return scene, segs


def no_temporary_files(job_id: str) -> bool:
    """The export job's working directory is gone (it is removed on success and on
    failure)."""
    return not list(Path(tempfile.gettempdir()).glob(f"storyforge-{job_id}-*"))


async def wait_export(client, export_id: str, timeout: float = 300) -> dict[str, Any]:
    """Poll GET /api/v1/exports/{id} until it is no longer processing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/api/v1/exports/{export_id}", headers=client.headers_auth)
        body = await r.json()
        assert r.status == 200, body
        if body["status"] != "processing":
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"export {export_id} still processing after {timeout}s")


# ----------------------------------------------------------------- MP4 facts


def ffprobe_json(*args: str | os.PathLike[str]) -> dict[str, Any]:
    done = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-of", "json", *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def packets(path: Path, stream: str) -> list[dict[str, float]]:
    """pts, dts and duration (seconds) of every packet of `stream` ("v" or "a")."""
    data = ffprobe_json(
        "-select_streams",
        f"{stream}:0",
        "-show_entries",
        "packet=pts_time,dts_time,duration_time",
        path,
    )
    return [packet_times(p) for p in data["packets"]]


def packet_times(packet: dict[str, Any]) -> dict[str, float]:
    """An ffprobe packet's pts, dts and duration, seconds (those it has)."""
    return {k: float(packet[k]) for k in ("pts_time", "dts_time", "duration_time") if k in packet}


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order (ISO/IEC 14496-12 §4.2)."""
    boxes = []
    with path.open("rb") as f:
        while header := f.read(8):
            size, kind = int.from_bytes(header[:4], "big"), header[4:].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            boxes.append(kind)
            f.seek(size - 8, 1)
    return boxes


def distinct_parameter_sets(path: Path) -> tuple[int, int]:
    """How many different SPS and PPS NAL units the MP4's video carries (in its
    sample entry and in band)."""
    done = subprocess.run(
        [
            FFMPEG or "ffmpeg",
            "-nostdin",
            "-v",
            "quiet",
            "-i",
            str(path),
            "-map",
            "0:v",
            "-c:v",
            "copy",
        ]
        + ["-bsf:v", "h264_mp4toannexb", "-f", "h264", "-"],
        capture_output=True,
        timeout=120,
    )
    stream = done.stdout
    starts = [i for i in range(len(stream) - 3) if stream[i : i + 3] == b"\x00\x00\x01"]
    sps, pps = set(), set()
    for n, at in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(stream)
        nal = stream[at + 3 : end].rstrip(b"\x00")
        (sps if nal[0] & 0x1F == 7 else pps if nal[0] & 0x1F == 8 else set()).add(nal)
    return len(sps), len(pps)


def decode_errors(path: Path) -> str:
    """What `ffmpeg -v error -i out.mp4 -f null -` prints (nothing, for a good file)."""
    done = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def frame_ssim(a: Path, a_frame: int, b: Path, b_frame: int) -> float:
    """SSIM (All) between frame number `a_frame` of file `a` and frame `b_frame` of `b`
    (decode order of presentation, counted from 0)."""
    graph = (
        f"[0:v]select=eq(n\\,{a_frame}),setpts=PTS-STARTPTS[x];"
        f"[1:v]select=eq(n\\,{b_frame}),setpts=PTS-STARTPTS[y];[x][y]ssim"
    )
    done = subprocess.run(
        [
            FFMPEG or "ffmpeg",
            "-nostdin",
            "-v",
            "info",
            "-i",
            str(a),
            "-i",
            str(b),
            "-filter_complex",
            graph,
            "-frames:v",
            "1",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = re.findall(r"SSIM .*All:([0-9.]+)", done.stderr)
    assert found, done.stderr[-2000:]
    return float(found[-1])


def frame_hashes(path: Path, *, fmt: str | None = None) -> list[str]:
    """MD5 of every decoded video frame, in presentation order (`ffmpeg -f framemd5`)."""
    done = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error"]
        + (["-f", fmt] if fmt else [])
        + ["-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return [ln.rsplit(",", 1)[1].strip() for ln in done.stdout.splitlines() if ln[:1].isdigit()]
