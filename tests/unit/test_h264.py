"""H.264 facts: levels (Table A-1), CODECS strings, SPS parsing, output frame rates."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from workers.media.h264 import (
    Profile,
    codecs_from_sps,
    codecs_string,
    find_sps,
    h264_level,
    output_fps,
)


@pytest.mark.parametrize(
    ("w", "h", "fps", "level"),
    [
        (1280, 720, 30, 31),
        (1280, 720, 30000 / 1001, 31),
        (1280, 720, 25, 31),
        (1280, 720, 50, 32),
        (1280, 720, 60, 32),
        (1920, 1080, 24, 40),
        (1920, 1080, 30, 40),
        (1920, 1080, 50, 42),
        (1920, 1080, 60, 42),
        (640, 360, 30, 30),
        (3840, 2160, 30, 51),
        (3840, 2160, 60, 52),
    ],
)
def test_h264_level_table_a1(w: int, h: int, fps: float, level: int) -> None:
    assert h264_level(w, h, fps) == level


def test_h264_level_respects_vbv_max_bitrate() -> None:
    assert h264_level(1280, 720, 30, max_bitrate=14_000_000) == 31
    assert h264_level(1280, 720, 30, max_bitrate=15_000_000) == 32
    # High profile allows 1.25x the Main MaxBR (level 4.0: 25 Mbit/s)
    assert h264_level(1920, 1080, 30, max_bitrate=24_000_000, profile="high") == 40
    assert h264_level(1920, 1080, 30, max_bitrate=24_000_000, profile="main") == 41


@pytest.mark.parametrize(
    ("profile", "level", "codecs"),
    [
        ("main", 31, "avc1.4d401f"),
        ("main", 32, "avc1.4d4020"),
        ("high", 40, "avc1.640028"),
        ("high", 42, "avc1.64002a"),
        ("baseline", 30, "avc1.42c01e"),
    ],
)
def test_codecs_string(profile: Profile, level: int, codecs: str) -> None:
    assert codecs_string(profile, level) == codecs


def test_sps_parsing() -> None:
    stream = (
        b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x64\x00\x28\xac\xd9\x40\x00\x00\x01\x68\xeb"
    )
    sps = find_sps(stream)
    assert sps is not None and sps[:4] == b"\x67\x64\x00\x28"
    assert codecs_from_sps(sps) == "avc1.640028"
    assert find_sps(b"\x00\x00\x01\x65\x88") is None
    with pytest.raises(ValueError):
        codecs_from_sps(b"\x68\x00")


NTSC30, NTSC24, NTSC60 = Fraction(30000, 1001), Fraction(24000, 1001), Fraction(60000, 1001)


@pytest.mark.parametrize(
    ("src", "out"),
    [
        (30.0, Fraction(30)),
        (25.0, Fraction(25)),
        (24.0, Fraction(24)),
        (50.0, Fraction(50)),
        (60.0, Fraction(60)),
        (30000 / 1001, NTSC30),
        (24000 / 1001, NTSC24),
        (60000 / 1001, NTSC60),
        (29.93, NTSC30),
        (29.99, Fraction(30)),
        (30.2, Fraction(30)),
        (25.1, Fraction(25)),
        (120.0, Fraction(60)),
        (240.0, Fraction(60)),
        (15.0, Fraction(15)),
        (15000 / 1001, Fraction(15000, 1001)),
        (12.5, Fraction(25, 2)),
        (0.0, Fraction(30)),
        (-1.0, Fraction(30)),
        (math.nan, Fraction(30)),
        (math.inf, Fraction(30)),
        (0.5, Fraction(30)),
    ],
)
def test_output_fps(src: float, out: Fraction) -> None:
    """The exact rate the transcoder encodes at (ffmpeg's `fps=` takes the fraction)."""
    assert output_fps(src) == out
