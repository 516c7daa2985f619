"""Storyboard sprite sheets and their WebVTT index (JW Player ``#xywh=`` convention)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageOps

STORYBOARD_VTT = "storyboard.vtt"


class StoryboardCue(NamedTuple):
    """One timeline thumbnail: [start, end) on the clip timeline, where it sits in a sheet."""

    start: float
    end: float
    sheet: str
    x: int
    y: int
    w: int
    h: int


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
        cues.append(StoryboardCue(start, end, sheet_name(sheet), c * tw, r * th, tw, th))
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


def vtt_time(seconds: float) -> str:
    """WebVTT timestamp HH:MM:SS.mmm."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def storyboard_vtt(cues: Iterable[StoryboardCue], *, prefix: str = "") -> str:
    """WebVTT text; image URLs are `prefix` + sheet name (relative to the .vtt by default)."""
    blocks = ["WEBVTT"]
    for cue in cues:
        blocks.append(
            f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}\n"
            f"{prefix}{cue.sheet}#xywh={cue.x},{cue.y},{cue.w},{cue.h}"
        )
    return "\n\n".join(blocks) + "\n"
