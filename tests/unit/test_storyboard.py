"""Storyboard sprite sheets and their cues (workers/media/storyboard.py); the WebVTT of
those cues is core.playlists' (the stored copy and the served one are one writer's)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from core.playlists import Clip, StoryboardCue, clip_storyboard_vtt
from workers.media.storyboard import build_storyboard, storyboard_cues


def test_storyboard_cues_and_their_vtt() -> None:
    cues = storyboard_cues(3, interval=10, duration=25.5)
    assert cues == [
        StoryboardCue(0, 10, 0, 0, 160, 90, "storyboard.jpg"),
        StoryboardCue(10, 20, 160, 0, 160, 90, "storyboard.jpg"),
        StoryboardCue(20, 25.5, 320, 0, 160, 90, "storyboard.jpg"),
    ]
    assert clip_storyboard_vtt(Clip("seg_a", 25.5, {}, cues)) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:10.000\nstoryboard.jpg#xywh=0,0,160,90\n\n"
        "00:00:10.000 --> 00:00:20.000\nstoryboard.jpg#xywh=160,0,160,90\n\n"
        "00:00:20.000 --> 00:00:25.500\nstoryboard.jpg#xywh=320,0,160,90\n"
    )
    # a frame past the end (rounding) is dropped; the last kept cue ends at the duration
    assert storyboard_cues(3, interval=10, duration=20)[-1] == StoryboardCue(
        10, 20, 160, 0, 160, 90, "storyboard.jpg"
    )
    assert storyboard_cues(0, interval=10, duration=5) == []


def test_storyboard_cues_wrap_rows_and_sheets() -> None:
    cues = storyboard_cues(105, interval=1, duration=105, grid=(10, 10))
    assert cues[9] == StoryboardCue(9, 10, 1440, 0, 160, 90, "storyboard.jpg")
    assert cues[10] == StoryboardCue(10, 11, 0, 90, 160, 90, "storyboard.jpg")
    assert cues[99] == StoryboardCue(99, 100, 1440, 810, 160, 90, "storyboard.jpg")
    assert cues[100] == StoryboardCue(100, 101, 0, 0, 160, 90, "storyboard_2.jpg")
    assert cues[104].end == 105


def test_build_storyboard_writes_sheets(tmp_path: Path) -> None:
    frames = []
    for i in range(103):
        p = tmp_path / f"frame_{i + 1:04d}.jpg"
        Image.new("RGB", (160, 90), (i * 2, 255 - i * 2, 0)).save(p)
        frames.append(p)
    odd = tmp_path / "odd.jpg"  # a wrong-sized frame is padded into its tile
    Image.new("RGB", (100, 100), "white").save(odd)
    frames[5] = odd
    cues = build_storyboard(frames, tmp_path, interval=10, duration=1025)
    assert len(cues) == 103 and cues[-1].end == 1025
    with Image.open(tmp_path / "storyboard.jpg") as sheet:
        assert sheet.size == (1600, 900)
        px = sheet.convert("RGB").getpixel((cues[1].x + 80, cues[1].y + 45))
        assert abs(px[0] - 2) < 12 and abs(px[1] - 253) < 12
    with Image.open(tmp_path / "storyboard_2.jpg") as sheet2:
        assert sheet2.size == (480, 90)
    assert {c.sheet for c in cues} == {"storyboard.jpg", "storyboard_2.jpg"}
