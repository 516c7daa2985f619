"""Moments of stitched scenes as issue 24's tests check them: clips whose every frame
is a different picture (so a frame one off is caught), the scene's frame grid as its
renditions say (the oracle of which frames a moment's ends fall on), a rendition's
frame and an exported MP4's frame as images, SSIM between them, and an MP4 played to
its end in Chromium.

`check_moment` runs its ffmpeg and ffprobe processes in threads (the event loop also
runs the in-process workers making the next exports), all at once, and extracts a
rendition's frame once (`rendition_frames`: moments share frames)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from core import catalog, db, layout, playlists
from core.framerate import exact_rate
from core.settings import Settings
from origin.app import create_app
from tests.helpers.browser import Browser
from tests.helpers.clips import FFMPEG, make_clip
from tests.helpers.exports import ffprobe_json, packet_times, wait_export
from tests.helpers.scenes import API_TOKEN, AUTH, new_scene, upload, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.workers import running_workers
from workers.media.encoding import fit_filter

#: Seconds within which two times are the same frame boundary (EXTINF sums, the
#: API's 6 decimals).
EPS = 1e-4
SSIM_FLOOR = 0.8  # a re-encoded frame against its rendition's; neighbours score ~0.5

Box = tuple[int, int]  # an export's frame: width, height


def distinct_clip(
    path: Path, *, index: int, size: tuple[int, int] = (320, 180), **spec: Any
) -> Path:
    """A `make_clip` clip (`size`, 320x180 by default) whose every frame is another
    window of a test picture twice its size, jumping by a step of its own (`index`):
    adjacent frames, and the frames of two clips at the same time, look nothing alike."""
    w, h = size
    step_x, step_y = 53 + 14 * index, 29 + 6 * index
    crop = f"crop={w}:{h}:x='mod(n*{step_x},{w})':y='mod(n*{step_y},{h})'"
    return make_clip(path, width=2 * w, height=2 * h, extra=["-vf", crop], **spec)


@dataclass(frozen=True)
class GridClip:
    """One clip of a stitched scene: where its media segments are, their frames."""

    segment_id: str
    fps: Fraction
    offset: float  # scene time of its first frame (sum of the EXTINF before it)
    duration: float  # sum of its EXTINF
    segment_frames: tuple[int, ...]
    files: tuple[Path, ...]

    @property
    def frames(self) -> int:
        return sum(self.segment_frames)

    def time(self, frame: int) -> float:
        return self.offset + float(frame / self.fps)

    def file_of(self, frame: int) -> tuple[Path, int]:
        """The media segment holding `frame`, and its index there."""
        for path, n in zip(self.files, self.segment_frames, strict=True):
            if frame < n:
                return path, frame
            frame -= n
        raise IndexError(frame)


def module_settings(database_url: str, storage_root: Path, ladder) -> Settings:
    """Settings of a module's own database (its workers claim only its jobs) and
    `ladder`, one stage."""
    return Settings.from_env(
        {},
        database_url=database_url,
        storage_root=storage_root,
        api_tokens=(API_TOKEN,),
        log_format="text",
        job_lease_seconds=30.0,
        ladder=ladder,
        refine=False,
    )


@asynccontextmanager
async def transcoded_pool(
    env: Settings, work: Path, specs: list[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """The origin (a client), two in-process workers and clips (`distinct_clip`
    arguments, made in `work`) transcoded through the upload API into one scene:
    {"client", "scene", "user", "segments"}. A module's pool: the rendition frames
    extracted for the modules before it (`_FRAMES`) are let go."""
    _FRAMES.clear()
    async with TestClient(OriginTestServer(create_app(env))) as client:
        client.headers_auth = {"Authorization": AUTH}
        async with running_workers(env, concurrency=2, lease_seconds=30):
            scene, (user,) = await new_scene(client)
            segments = []
            for i, spec in enumerate(specs, start=1):
                path = distinct_clip(work / f"clip{i}.mp4", index=i, **spec)
                segments.append((await upload(client, scene, user, path, sequence=i))["segmentId"])
            for seg in segments:
                done = await wait_done(client, seg, timeout=600)
                assert done["status"] == "ready", done
            yield {"client": client, "scene": scene, "user": user, "segments": segments}


async def scene_grid(settings, scene_id: str, segment_ids: list[str], quality: str):
    """The scene's clips, in order, from the rows of the renditions the stitched variant
    `quality` plays (`playlists.variant_rendition`: EXTINF, frame rate, files)."""
    pool = await db.connect_pool(settings.database_url, size=1)
    try:
        async with pool.acquire() as conn:
            clips = [await catalog.segment_clip(conn, scene_id, seg) for seg in segment_ids]
    finally:
        await pool.close()
    assert all(clips), segment_ids
    order = playlists.scene_profiles([c for c in clips if c is not None])
    grid, offset = [], 0.0
    for seg, clip in zip(segment_ids, clips, strict=True):
        assert clip is not None
        r = playlists.variant_rendition(clip, quality, order)
        fps = exact_rate(r.frame_rate)
        root = settings.storage_root / settings.videos_bucket / scene_id / seg
        files = tuple(
            root / layout.media_segment_name(r.profile, j + 1, r.generation)
            for j in range(len(r.durations))
        )
        frames = tuple(round(d * fps) for d in r.durations)
        grid.append(GridClip(seg, fps, offset, sum(r.durations), frames, files))
        offset += sum(r.durations)
    return grid


def frame_at(grid: list[GridClip], t: float, *, end: bool) -> tuple[int, int]:
    """(clip, frame) of the frame boundary at scene time `t` (a time the API rounded
    to frames): a start is the frame that begins there, an end the boundary after
    the moment's last frame (an end at a clip's end stays in that clip)."""
    for k, c in enumerate(grid):
        inside = c.offset - EPS <= t < c.offset + c.duration - EPS
        if end:
            inside = c.offset + EPS < t <= c.offset + c.duration + EPS
        if inside:
            i = round((t - c.offset) * c.fps)
            assert abs(c.time(i) - t) < EPS, (t, k, i)
            return k, i
    raise AssertionError(f"{t} is not on the scene ({grid[-1].offset + grid[-1].duration})")


def neighbours(grid: list[GridClip], k: int, i: int) -> list[tuple[int, int]]:
    """The frames shown just before and after frame `i` of clip `k`, where there are."""
    out = []
    if i > 0:
        out.append((k, i - 1))
    elif k > 0:
        out.append((k - 1, grid[k - 1].frames - 1))
    if i + 1 < grid[k].frames:
        out.append((k, i + 1))
    elif k + 1 < len(grid):
        out.append((k + 1, 0))
    return out


def extract_frames(
    source: Path, indexes: list[int], out: Path, *, fmt: str | None = None, box: Box | None = None
) -> list[Path]:
    """Frames `indexes` (presentation order, from 0; ascending, distinct) of `source` as
    PNGs `out`_1.png, `out`_2.png, ... in that order, one decode; with `box`, each
    scaled to fit it and padded as the transcoder does (`encoding.fit_filter`)."""
    assert indexes == sorted(set(indexes)), indexes
    fit = f",{fit_filter(*box)}" if box else ""
    select = "+".join(f"eq(n\\,{i})" for i in indexes)
    subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-y"]
        + (["-f", fmt] if fmt else [])
        + ["-i", str(source), "-map", "0:v:0", "-vf", f"select={select}{fit}"]
        + ["-fps_mode", "passthrough", "-frames:v", str(len(indexes)), f"{out}_%d.png"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    paths = [out.with_name(f"{out.name}_{n}.png") for n in range(1, len(indexes) + 1)]
    assert all(p.is_file() and p.stat().st_size for p in paths), (source, indexes)
    return paths


def decode_errors(path: Path) -> str:
    """What ffmpeg prints decoding every frame of `path` (nothing, for a good file),
    frames passed on at their own timestamps in the file's own time base: a
    mixed-rate file is not forced onto the one frame rate ffmpeg guesses from its
    first frames (30 fps for 30 then 60 fps), where two frames of the faster clip
    would share a tick and be reported as non-monotonic output."""
    done = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-i", str(path)]
        + ["-map", "0", "-fps_mode", "passthrough", "-enc_time_base:v", "-1"]
        + ["-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def ssims(mp4: Path, mp4_frame: int, refs: list[Path]) -> list[float]:
    """ffmpeg's SSIM (All) of frame `mp4_frame` of `mp4` (presentation order, from 0,
    as RGB: the picture its PNG holds) with each image of `refs` (PNGs of its size),
    one filter graph: an ssim instance per image, named after it (the frame passes
    through each unchanged)."""
    graph = [f"[0:v:0]select=eq(n\\,{mp4_frame}),format=rgb24[c0]"]
    for n in range(len(refs)):
        graph.append(f"[c{n}][{n + 1}:v]ssim@ref{n}[c{n + 1}]")
    done = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "info", "-i", str(mp4)]
        + [arg for ref in refs for arg in ("-i", str(ref))]
        + ["-filter_complex", ";".join(graph), "-map", f"[c{len(refs)}]", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = dict(re.findall(r"\[ssim@ref(\d+) @ [^]]*\] SSIM .*All:([0-9.]+)", done.stderr))
    assert len(found) == len(refs), done.stderr[-2000:]
    return [float(found[str(n)]) for n in range(len(refs))]


#: PNGs of rendition frames already extracted, by the SHA-256 of their file's bytes,
#: their index there and the box they were fitted into: copies of a clip in other
#: scenes have the same files, and moments share frames.
_FRAMES: dict[tuple[str, int, Box | None], bytes] = {}


def rendition_frames(
    grid: list[GridClip], wanted: list[tuple[int, int]], work: Path, box: Box | None = None
) -> dict[tuple[int, int], Path]:
    """Frames `wanted` ((clip, frame) of `grid`) of the stitched renditions as PNGs in
    the directory `work`, each fitted into `box` when given: the frames `_FRAMES` does
    not hold yet extracted in one decode per media segment (`extract_frames`)."""
    digests: dict[Path, str] = {}
    keys, todo = {}, {}
    for k, i in wanted:
        path, index = grid[k].file_of(i)
        if path not in digests:
            digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        keys[(k, i)] = key = (digests[path], index, box)
        if key not in _FRAMES:
            todo.setdefault(path, set()).add(index)
    for n, (path, indexes) in enumerate(todo.items()):
        order = sorted(indexes)
        pngs = extract_frames(path, order, work / f"segment{n}", fmt="mpegts", box=box)
        for index, png in zip(order, pngs, strict=True):
            _FRAMES[(digests[path], index, box)] = png.read_bytes()
    refs = {}
    for (k, i), key in keys.items():
        refs[(k, i)] = work / f"ref_{k}_{i}.png"
        refs[(k, i)].write_bytes(_FRAMES[key])
    return refs


def matches(
    grid: list[GridClip],
    mp4: Path,
    mp4_frame: int,
    k: int,
    i: int,
    work: Path,
    box: Box | None = None,
) -> dict[tuple[int, int], float]:
    """SSIM of the MP4's frame `mp4_frame` with frame `i` of clip `k` of the stitched
    renditions and with the frames shown next to it (each fitted into `box` first, when
    given: renditions of other frames than the export's)."""
    wanted = [(k, i), *neighbours(grid, k, i)]
    refs = rendition_frames(grid, wanted, Path(tempfile.mkdtemp(dir=work, prefix="refs")), box)
    scores = ssims(mp4, mp4_frame, [refs[key] for key in wanted])
    return dict(zip(wanted, scores, strict=True))


def probe(path: Path, *, frames: bool = False) -> dict[str, Any]:
    """What one ffprobe of `path` says: "streams" (every entry), "format" (its
    duration), "video" and "audio" (pts, dts and duration, seconds, of every packet of
    its first video and first audio stream, none without one) and, with `frames`,
    "frames": the size, SAR and pixel format of every frame of its video streams."""
    entries = "stream:format=duration:packet=stream_index,pts_time,dts_time,duration_time"
    if frames:
        entries += ":frame=stream_index,width,height,sample_aspect_ratio,pix_fmt"
    data = ffprobe_json("-show_entries", entries, path)
    items = data.get("packets_and_frames" if frames else "packets", [])
    if not frames:
        items = [{"type": "packet", **p} for p in items]
    videos = [s["index"] for s in data["streams"] if s["codec_type"] == "video"]
    audios = [s["index"] for s in data["streams"] if s["codec_type"] == "audio"]

    def packets_of(indexes: list[int]) -> list[dict[str, float]]:
        return [
            packet_times(p)
            for p in items
            if p["type"] == "packet" and indexes[:1] == [p["stream_index"]]
        ]

    return {
        "streams": data["streams"],
        "format": data["format"],
        "video": packets_of(videos),
        "audio": packets_of(audios),
        "frames": [f for f in items if f["type"] == "frame" and f["stream_index"] in videos],
    }


async def check_moment(
    client, grid: list[GridClip], asked: dict, work: Path, box: Box | None = None
) -> dict[str, Any]:
    """Every check of one export (a moment, or with no range the whole scene) made of
    the clips of `grid`: the job succeeds; the MP4 holds exactly the frames of the
    range, lasts the range within one frame, its decode timestamps strictly increase,
    its audio covers its video, ffmpeg decodes it without an error; its first and last
    frames are the renditions' frames at the range's ends (SSIM: that frame matches
    best, not the one shown before or after it). With `box`: every frame is that size
    (square pixels), and the renditions' frames are fitted into it to be compared.
    Returns facts."""
    done = await wait_export(client, asked["exportId"], timeout=600)
    assert done["status"] == "ready", done
    total = grid[-1].offset + grid[-1].duration
    start = done["start"] if done["start"] is not None else 0.0
    end = done["end"] if done["end"] is not None else total
    (k0, i0), (k1, i1) = frame_at(grid, start, end=False), frame_at(grid, end, end=True)
    wanted = sum(
        (i1 if k == k1 else grid[k].frames) - (i0 if k == k0 else 0) for k in range(k0, k1 + 1)
    )
    slowest = min(grid[k].fps for k in range(k0, k1 + 1))
    mp4 = work / "moment.mp4"
    mp4.write_bytes(await (await client.get(done["url"])).read())

    # every process at once, in threads; their results checked in this order
    ends = ((0, (k0, i0)), (wanted - 1, (k1, i1 - 1)))
    probed, errors, *scored = await asyncio.gather(
        asyncio.to_thread(probe, mp4, frames=box is not None),
        asyncio.to_thread(decode_errors, mp4),
        *(asyncio.to_thread(matches, grid, mp4, n, k, i, work, box) for n, (k, i) in ends),
        return_exceptions=True,
    )
    for result in (probed, errors, *scored):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # a cancellation: no result to check
    if isinstance(probed, Exception):
        raise probed

    video = probed["video"]
    assert len(video) == wanted, (len(video), wanted, start, end)
    dts = [p["dts_time"] for p in video]
    assert all(b > a for a, b in zip(dts, dts[1:], strict=False)), "DTS do not increase"
    pts = sorted(p["pts_time"] for p in video)
    shown = pts[-1] - pts[0] + float(1 / grid[k1].fps)  # the last frame lasts its clip's period
    assert abs(shown - (end - start)) <= float(1 / slowest) + 1e-3, (shown, end - start)
    duration = float(probed["format"]["duration"])
    assert abs(duration - (end - start)) <= float(1 / slowest) + 1e-3, (duration, end - start)
    audio = probed["audio"]
    audio_end = audio[-1]["pts_time"] + audio[-1]["duration_time"]
    assert abs(audio_end - (pts[-1] + float(1 / grid[k1].fps))) < 1 / 40, audio_end
    if isinstance(errors, Exception):
        raise errors
    assert errors == ""
    if box is not None:
        (stream,) = [s for s in probed["streams"] if s["codec_type"] == "video"]
        assert (stream["width"], stream["height"]) == box, stream
        assert stream.get("sample_aspect_ratio", "1:1") == "1:1", stream
        frames = probed["frames"]
        assert len(frames) == wanted
        shapes = {
            (f["width"], f["height"], f.get("sample_aspect_ratio"), f["pix_fmt"]) for f in frames
        }
        assert shapes == {(*box, "1:1", "yuv420p")}, shapes

    for (mp4_frame, (k, i)), scores in zip(ends, scored, strict=True):
        if isinstance(scores, Exception):
            raise scores
        best = max(scores, key=lambda key: scores[key])
        assert best == (k, i) and scores[(k, i)] > SSIM_FLOOR, (mp4_frame, (k, i), scores)
    return {"done": done, "duration": duration, "frames": wanted, "mp4": mp4}


async def plays_to_end(browser: Browser, page: str, url: str, duration: float) -> None:
    """The MP4 at `url` plays to `ended` in Chromium (muted, 4x) on a page of the
    origin (`page`), reporting `duration` within a frame."""
    await browser.goto(page)
    await browser.eval(
        "(() => { const v = document.createElement('video'); v.id = 'video';"
        " v.muted = true; window.sf = {events: []};"
        " for (const e of ['ended', 'error']) v.addEventListener(e, () =>"
        " sf.events.push({kind: e, t: v.currentTime}));"
        f" v.src = {json.dumps(url)}; document.body.appendChild(v);"
        " v.playbackRate = 4; return v.play().then(() => true); })()"
    )
    await browser.wait_for("sf.events.length > 0", timeout=60, what=f"{url} ended")
    events = json.loads(await browser.eval("JSON.stringify(sf.events)"))
    assert events[0]["kind"] == "ended", events
    shown = await browser.eval("document.getElementById('video').duration")
    assert abs(shown - duration) < 0.05, (shown, duration)
