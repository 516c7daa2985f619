"""Independent measurements with the ffmpeg CLI, for tests that check what the pipeline
wrote: EBU R128 loudness and true peak, a frame at a time decoded from a playlist, SSIM
between two pictures."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from core.ffargs import JPEG_PIX_FMT, JPEG_SCALE
from tests.helpers.clips import FFMPEG

_I = re.compile(r"Integrated loudness:\s*I:\s*(-?[\d.]+|-inf) LUFS")
_PEAK = re.compile(r"True peak:\s*Peak:\s*(-?[\d.]+|-inf) dBFS")
_SSIM = re.compile(r"SSIM .*All:([\d.]+)")


def _ffmpeg(*args: str) -> str:
    done = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-hide_banner", "-nostats", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def loudness(path: str | os.PathLike[str]) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) of a file's first audio stream,
    by ffmpeg's ebur128 filter (-70 and -inf for silence)."""
    text = _ffmpeg("-i", str(path), "-map", "0:a:0", "-af", "ebur128=peak=true", "-f", "null", "-")
    summary = text[text.rfind("Summary:") :]
    i, peak = _I.search(summary), _PEAK.search(summary)
    assert i and peak, summary
    return float(i[1]), float(peak[1])


def concat_segments(paths: list[Path], dest: Path) -> Path:
    """MPEG-TS segments of one rendition joined into one file (TS concatenates)."""
    with dest.open("wb") as out:
        for p in paths:
            out.write(p.read_bytes())
    return dest


def frame_at(playlist: str | os.PathLike[str], seconds: float, width: int, dest: Path) -> Path:
    """The frame a player shows `seconds` after the start of a clip's own media playlist
    (the last one starting at or before it), scaled to `width`, as a JPEG in JPEG's
    colours (`core.ffargs.JPEG_SCALE`, as every still of ours): every frame is decoded
    from the start and the last one selected is kept."""
    _ffmpeg(
        "-i",
        str(playlist),
        "-map",
        "0:v:0",
        "-vf",
        f"setpts=PTS-STARTPTS,select='lte(t,{seconds:.6f})',"
        f"scale={width}:-2:flags=bicubic:{JPEG_SCALE},format={JPEG_PIX_FMT}",
        "-fps_mode",
        "passthrough",
        "-q:v",
        "3",
        "-update",
        "1",
        "-y",
        str(dest),
    )
    return dest


def ssim(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> float:
    """SSIM (ffmpeg's ssim filter, "All") of two pictures of the same size."""
    text = _ffmpeg("-i", str(a), "-i", str(b), "-lavfi", "ssim", "-f", "null", "-")
    m = _SSIM.search(text)
    assert m, text[-1000:]
    return float(m[1])
