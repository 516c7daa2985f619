"""Storyboard sprite sheets: the timeline frames pasted into sheets of tiles, and the
cues that say where each frame sits (JW Player ``#xywh=`` convention). The cues are
`core.playlists.StoryboardCue`s, the clip's rows keep them, and `core.playlists` writes
the WebVTT from them: the stored `storyboard.vtt` and the one the origin serves are the
same bytes (`workers.jobs.transcode`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps

from core.playlists import StoryboardCue


def sheet_name(index: int) -> str:
    """``storyboard.jpg``, ``storyboard_2.jpg``, ... (index from 0)."""
    return "storyboard.jpg" if index == 0 else f"storyboard_{index + 1}.jpg"


def storyboard_cues(
    count: int,
    *,
    interval: float,
    duration: float,
    tile: tuple[int, int] = (160, 90),
    grid: tuple[int, int] = (10, 10),
) -> list[StoryboardCue]:
    """Cues for `count` frames taken every `interval` s; frames at or past the end are dropped."""
    if interval <= 0 or duration <= 0:
        return []
    cols, rows = grid
    tw, th = tile
    per_sheet = cols * rows
    n = min(count, math.ceil(duration / interval - 1e-9))
    cues: list[StoryboardCue] = []
    for i in range(n):
        sheet, pos = divmod(i, per_sheet)
        start = i * interval
        end = duration if i == n - 1 else min((i + 1) * interval, duration)
        r, c = divmod(pos, cols)
        cues.append(StoryboardCue(start, end, c * tw, r * th, tw, th, sheet_name(sheet)))
    return cues


def build_storyboard(
    frame_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    interval: float,
    duration: float,
    tile: tuple[int, int] = (160, 90),
    grid: tuple[int, int] = (10, 10),
) -> list[StoryboardCue]:
    """Paste the frames (in time order) into sheets of `grid` tiles; return their cues.

    A sheet is only as large as the tiles it holds (a 6 s clip gives one 160x90 sheet).
    """
    cues = storyboard_cues(
        len(frame_paths), interval=interval, duration=duration, tile=tile, grid=grid
    )
    out = Path(out_dir)
    by_sheet: dict[str, list[tuple[StoryboardCue, str | os.PathLike[str]]]] = {}
    for cue, path in zip(cues, frame_paths, strict=False):
        by_sheet.setdefault(cue.sheet, []).append((cue, path))
    for name, items in by_sheet.items():
        width = max(c.x + c.w for c, _ in items)
        height = max(c.y + c.h for c, _ in items)
        sheet = Image.new("RGB", (width, height), "black")
        for cue, path in items:
            with Image.open(path) as im:
                frame = im.convert("RGB")
            if frame.size != (cue.w, cue.h):
                frame = ImageOps.pad(frame, (cue.w, cue.h), color="black")
            sheet.paste(frame, (cue.x, cue.y))
        sheet.save(out / name, "JPEG", quality=80, optimize=True)
    return cues
