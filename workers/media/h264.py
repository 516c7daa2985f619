"""H.264 facts the transcoder declares and checks: levels (Table A-1), CODECS strings
(RFC 6381) from a profile and level or from a stream's SPS, and the output frame rate
the levels are derived from (snapped to `core.framerate`'s standard rates). Pure.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

from core.framerate import STANDARD_RATES, exact_rate

Profile = Literal["baseline", "main", "high"]

# ------------------------------------------------------------ levels and CODECS

#: H.264 Table A-1: level_idc -> (MaxMBPS, MaxFS, MaxBR in kbit/s for Main; High is x1.25).
H264_LEVELS: tuple[tuple[int, int, int, int], ...] = (
    (10, 1_485, 99, 64),
    (11, 3_000, 396, 192),
    (12, 6_000, 396, 384),
    (13, 11_880, 396, 768),
    (20, 11_880, 396, 2_000),
    (21, 19_800, 792, 4_000),
    (22, 20_250, 1_620, 4_000),
    (30, 40_500, 1_620, 10_000),
    (31, 108_000, 3_600, 14_000),
    (32, 216_000, 5_120, 20_000),
    (40, 245_760, 8_192, 20_000),
    (41, 245_760, 8_192, 50_000),
    (42, 522_240, 8_704, 50_000),
    (50, 589_824, 22_080, 135_000),
    (51, 983_040, 36_864, 240_000),
    (52, 2_073_600, 36_864, 240_000),
    (60, 4_177_920, 139_264, 240_000),
    (61, 8_355_840, 139_264, 480_000),
    (62, 16_711_680, 139_264, 800_000),
)
PROFILE_IDC: dict[str, tuple[int, int]] = {
    # profile -> (profile_idc, constraint flags byte as x264 writes it)
    "baseline": (66, 0xC0),
    "main": (77, 0x40),
    "high": (100, 0x00),
}


def h264_level(
    width: int,
    height: int,
    fps: float,
    *,
    max_bitrate: int | None = None,
    profile: Profile = "main",
) -> int:
    """Lowest level_idc (31 = 3.1) whose Table A-1 limits fit the stream.

    Checks macroblocks per second, frame size in macroblocks, the per-side limit
    sqrt(8 * MaxFS) and, if given, the VBV max bit rate (bits/s).
    """
    mbs = math.ceil(width / 16) * math.ceil(height / 16)
    mbps = mbs * fps
    br_factor = 1.25 if profile == "high" else 1.0
    for level, max_mbps, max_fs, max_br in H264_LEVELS:
        side = math.sqrt(8 * max_fs)
        if mbps > max_mbps * (1 + 1e-9) or mbs > max_fs:
            continue
        if math.ceil(width / 16) > side or math.ceil(height / 16) > side:
            continue
        if max_bitrate is not None and max_bitrate > max_br * 1000 * br_factor:
            continue
        return level
    raise ValueError(f"{width}x{height}@{fps:g} exceeds every H.264 level")


def level_name(level: int) -> str:
    """31 -> "3.1", 40 -> "4.0" (the form libx264's ``-level`` takes)."""
    return f"{level // 10}.{level % 10}"


def codecs_string(profile: Profile, level: int) -> str:
    """RFC 6381 avc1 string: ``codecs_string("main", 31) == "avc1.4d401f"``."""
    idc, flags = PROFILE_IDC[profile]
    return f"avc1.{idc:02x}{flags:02x}{level:02x}"


AAC_LC = "mp4a.40.2"


def variant_codecs(video: str, audio: str = AAC_LC) -> str:
    """CODECS attribute value of a variant: ``"avc1.4d401f,mp4a.40.2"``."""
    return f"{video},{audio}"


def find_sps(annexb: bytes) -> bytes | None:
    """First H.264 SPS NAL unit (header byte included) in an Annex B byte stream."""
    i = annexb.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(annexb):
        start = i + 3
        nxt = annexb.find(b"\x00\x00\x01", start)
        if annexb[start] & 0x1F == 7:
            end = len(annexb) if nxt == -1 else nxt
            return annexb[start:end].rstrip(b"\x00")
        i = nxt
    return None


def codecs_from_sps(sps: bytes) -> str:
    """avc1.PPCCLL from an SPS NAL: profile_idc, constraint flags, level_idc as written."""
    if len(sps) < 4 or sps[0] & 0x1F != 7:
        raise ValueError("not an H.264 SPS")
    return f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


# ----------------------------------------------------------------- frame rates


def output_fps(source_fps: float) -> Fraction:
    """Output frame rate: the source's, capped at 60; unknown/broken -> 30.

    A variable-rate phone clip averaging 29.93 fps is snapped to the standard rate
    within 1 % (30000/1001), so every clip of a scene shares the usual rates; any other
    rate is the exact one the float stands for (`core.framerate.exact_rate`).
    """
    if not math.isfinite(source_fps) or source_fps < 1.0:
        return Fraction(30)
    fps = min(source_fps, 60.0)
    nearest = min(STANDARD_RATES, key=lambda std: abs(fps - float(std)))
    if abs(fps - float(nearest)) <= float(nearest) * 0.01:
        return nearest
    return exact_rate(fps)
