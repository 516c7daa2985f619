"""Moments of stitched scenes as issue 24's tests check them: clips whose every frame
is a different picture (so a frame one off is caught), the scene's frame grid as its
renditions say (the oracle of which frames a moment's ends fall on), a rendition's
frame and an exported MP4's frame as images, SSIM between them, and an MP4 played to
its end in Chromium."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from core import catalog, db, layout
from core.framerate import exact_rate
from tests.helpers.browser import Browser
from tests.helpers.clips import FFMPEG, make_clip

#: Seconds within which two times are the same frame boundary (EXTINF sums, the
#: API's 6 decimals).
EPS = 1e-4


def distinct_clip(path: Path, *, index: int, **spec: Any) -> Path:
    """A `make_clip` clip (320x180) whose every frame is another window of a 640x360
    test picture, jumping by a step of its own (`index`): adjacent frames, and the
    frames of two clips at the same time, look nothing alike."""
    step_x, step_y = 53 + 14 * index, 29 + 6 * index
    crop = f"crop=320:180:x='mod(n*{step_x},320)':y='mod(n*{step_y},180)'"
    return make_clip(path, width=640, height=360, extra=["-vf", crop], **spec)


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


async def scene_grid(settings, scene_id: str, segment_ids: list[str], quality: str):
    """The scene's clips, in order, from their rendition rows (EXTINF, frame rate)."""
    pool = await db.connect_pool(settings.database_url, size=1)
    grid, offset = [], 0.0
    try:
        async with pool.acquire() as conn:
            for seg in segment_ids:
                clip = await catalog.segment_clip(conn, scene_id, seg)
                assert clip is not None, seg
                r = clip.renditions[quality]
                fps = exact_rate(r.frame_rate)
                root = settings.storage_root / settings.videos_bucket / scene_id / seg
                files = tuple(
                    root / layout.media_segment_name(quality, j + 1, r.generation)
                    for j in range(len(r.durations))
                )
                frames = tuple(round(d * fps) for d in r.durations)
                grid.append(GridClip(seg, fps, offset, sum(r.durations), frames, files))
                offset += sum(r.durations)
    finally:
        await pool.close()
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


def extract_frame(source: Path, index: int, out: Path, *, fmt: str | None = None) -> Path:
    """Frame `index` (presentation order, from 0) of `source` as a PNG."""
    subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-y"]
        + (["-f", fmt] if fmt else [])
        + ["-i", str(source), "-map", "0:v:0", "-vf", f"select=eq(n\\,{index})"]
        + ["-frames:v", "1", "-update", "1", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.is_file() and out.stat().st_size, (source, index)
    return out


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


def ssim(a: Path, b: Path) -> float:
    """ffmpeg's SSIM (All) of two images of one size."""
    done = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "info", "-i", str(a), "-i", str(b)]
        + ["-lavfi", "ssim", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.findall(r"SSIM .*All:([0-9.]+)", done.stderr)
    assert found, done.stderr[-2000:]
    return float(found[-1])


def rendition_frame(grid: list[GridClip], k: int, i: int, out: Path) -> Path:
    path, index = grid[k].file_of(i)
    return extract_frame(path, index, out, fmt="mpegts")


def matches(
    grid: list[GridClip], mp4: Path, mp4_frame: int, k: int, i: int, work: Path
) -> dict[tuple[int, int], float]:
    """SSIM of the MP4's frame `mp4_frame` with frame `i` of clip `k` of the stitched
    renditions and with the frames shown next to it."""
    got = extract_frame(mp4, mp4_frame, work / f"mp4_{mp4_frame}.png")
    scores = {}
    for kk, ii in [(k, i), *neighbours(grid, k, i)]:
        ref = rendition_frame(grid, kk, ii, work / f"ref_{kk}_{ii}.png")
        scores[(kk, ii)] = ssim(got, ref)
    return scores


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
