"""Test clips generated with ffmpeg's lavfi sources (testsrc2 picture, sine tone), a
session's cache of them, and the small ladders tests encode at when any ready clip
will do (the full ladder only where a test checks the ladder itself)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from core.settings import LadderRung

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
HAVE_FFMPEG = FFMPEG is not None and FFPROBE is not None
NO_FFMPEG_REASON = "ffmpeg/ffprobe not on PATH (CI installs them: apt-get install ffmpeg)"

# One 320x180 rung: a clip made ready by the real pipeline at a fraction of the
# 720p+1080p ladder's cost. SMALL_PAIR: two rungs, for players that switch quality.
SMALL_LADDER = (LadderRung("180p", 320, 180, 300_000),)
SMALL_PAIR = (*SMALL_LADDER, LadderRung("360p", 640, 360, 700_000))

Audio = Literal["stereo48", "mono44", "surround48"] | None

_VIDEO_CODECS = {
    "libx264": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    "libx265": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"],
    "libvpx-vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"],
    "mpeg4": ["-c:v", "mpeg4", "-q:v", "5"],
    "mpeg2video": ["-c:v", "mpeg2video", "-q:v", "5"],
}
_AUDIO_CODEC = {
    "mp4": "aac",
    "mov": "aac",
    "mkv": "aac",
    "ts": "aac",
    "webm": "libopus",
    "avi": "libmp3lame",
}
_AUDIO_LAYOUT = {
    "stereo48": (48_000, "stereo"),
    "mono44": (44_100, "mono"),
    "surround48": (48_000, "5.1"),
}


def make_clip(
    path: str | os.PathLike[str],
    *,
    width: int = 1920,
    height: int = 1080,
    fps: float | str = 30,
    duration: float = 6.0,
    audio: Audio = "stereo48",
    codec: str = "libx264",
    container: str = "mp4",
    rotate: int | None = None,
    audio_delay: float = 0.0,
    extra: list[str] | None = None,
    picture: str = "testsrc2",
    tone: str | None = None,
) -> Path:
    """Write a clip of a moving test picture (+ a 440 Hz tone) and return its path.

    `rotate` stores display-rotation metadata like a phone does (coded picture unchanged);
    `audio_delay` starts the audio later than the video. `picture` is the lavfi video
    source (testsrc2, testsrc, ...); `tone` appends audio filters to the tone (e.g.
    `tremolo=f=4:d=0.7,volume=-9dB` for a quiet speech-like level).
    """
    out = Path(path)
    cmd = [
        FFMPEG or "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"{picture}=size={width}x{height}:rate={fps}:duration={duration}",
    ]
    if audio is not None:
        rate, layout = _AUDIO_LAYOUT[audio]
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={rate}:duration={duration - audio_delay},"
            f"aformat=channel_layouts={layout}" + (f",{tone}" if tone else ""),
        ]
        if audio_delay:
            cmd += [
                "-filter_complex",
                f"[1:a]adelay={int(audio_delay * 1000)}:all=1[a]",
                "-map",
                "0:v",
                "-map",
                "[a]",
            ]
    cmd += _VIDEO_CODECS[codec]
    if audio is not None:
        cmd += ["-c:a", _AUDIO_CODEC[container], "-b:a", "96k"]
    cmd += extra or []
    fmt = {"mkv": "matroska", "ts": "mpegts"}.get(container, container)
    target = out.with_name(out.name + ".tmp") if rotate is not None else out
    cmd += ["-f", fmt, str(target)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    if rotate is not None:  # ffmpeg 5 keeps the rotate tag only when stream-copying
        subprocess.run(
            [
                FFMPEG or "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-i",
                str(target),
                "-map",
                "0",
                "-c",
                "copy",
                "-metadata:s:v:0",
                f"rotate={rotate}",
                "-f",
                fmt,
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        target.unlink()
    return out


def _from_lavfi(source: str, out: Path, *output: str) -> Path:
    """One ffmpeg run from a lavfi source to `out` with the given output options."""
    subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source,
         *output, str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return out


def make_png(path: str | os.PathLike[str], width: int = 320, height: int = 240) -> Path:
    return _from_lavfi(
        f"testsrc2=size={width}x{height}",
        Path(path),
        *("-frames:v", "1", "-f", "image2", "-c:v", "png"),
    )


def make_audio_only(path: str | os.PathLike[str], duration: float = 3.0) -> Path:
    return _from_lavfi(
        f"sine=frequency=440:duration={duration}", Path(path), "-c:a", "aac", "-f", "mp4"
    )


def make_wav(
    path: str | os.PathLike[str], *, seconds: float = 2.0, rate: int = 44_100, layout: str = "5.1"
) -> Path:
    """A WAV recording (a tone): 16-bit PCM, `layout` (e.g. mono, 5.1) at `rate` Hz."""
    return _from_lavfi(
        f"sine=frequency=330:sample_rate={rate}:duration={seconds},"
        f"aformat=channel_layouts={layout}",
        Path(path),
        *("-c:a", "pcm_s16le", "-f", "wav"),
    )


class ClipCache:
    """`make_clip` results kept for a session in `directory`: `get(**spec)` makes the
    clip the first time it is asked for and gives the same file afterwards (read it,
    never change it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, **spec: Any) -> Path:
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        path = self.directory / f"{key}.{spec.get('container', 'mp4')}"
        if not path.exists():
            make_clip(self.directory / f"{key}.part", **spec).rename(path)
        return path
