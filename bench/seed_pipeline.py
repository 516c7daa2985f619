"""The anchor of the ingest benchmark: the seed's ingest pipeline, as the seed wrote it.

Seed §4.4 (``HLSBuilder``) transcodes each rendition in its own ffmpeg run (each run
decodes the whole source again) and writes a master playlist; seed §6.1 takes each
thumbnail with its own ffmpeg run, ``-ss`` placed AFTER ``-i`` (an output option: ffmpeg
decodes from the start of the file up to the offset every time), the timeline
thumbnails every 10 s with ``range(0, int(duration), int(interval))``; seed §6.2 pastes
them into a 10x10 sprite sheet with Pillow. Everything runs one step after the other
with ``subprocess.run``, as in the seed.

What is NOT the seed's: the encoder settings. So that the benchmark compares pipelines
and not encoder settings, every run uses exactly the x264/AAC settings of our
transcoder (`workers.media.encoding.transcode_command`): the same preset (the default of
`workers.media.ffmpeg.transcode`), profile and level, bitrate, maxrate (1.5x), bufsize (2x),
the same keyframe cadence (IDR every `hls_time` seconds, closed GOPs, no scene-cut
keyframes: without it the seed's 4 s segments come out 8.3 s long, x264's default GOP),
the same ``-hls_time``, 8-bit 4:2:0 output, and AAC-LC 128 kbit/s 48 kHz stereo.
All of them are read from the product code, so they follow it when it changes.

The seed's layout (one sub-folder per rendition) and its scaling (``scale=W:H``, a
stretch; identical to our fit for a 16:9 source) are kept as written.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers.media import encoding
from workers.media import ffmpeg as sf_ffmpeg
from workers.media.encoding import DEFAULT_RUNGS, Rung
from workers.media.h264 import level_name, output_fps
from workers.media.probe import parse_rate

#: Our transcoder's defaults, read from the product code.
_TRANSCODE_DEFAULTS = inspect.signature(sf_ffmpeg.transcode).parameters
PRESET: str = _TRANSCODE_DEFAULTS["preset"].default
SEGMENT_SECONDS: float = _TRANSCODE_DEFAULTS["segment_seconds"].default
FRAME_INTERVAL: float = _TRANSCODE_DEFAULTS["frame_interval"].default


def _run(cmd: list[str]) -> None:
    # seed: subprocess.run(cmd, check=True, capture_output=True); stdin closed so an
    # ffmpeg never waits on the terminal (no effect on the work it does)
    subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- seed §6.1


def get_video_duration(video_path: str) -> float:
    """The seed calls this helper without showing it: one ffprobe of the format."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "json",
            video_path,
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    return float(json.loads(out)["format"]["duration"])


def extract_thumbnail(
    video_path: str,
    output_path: str,
    time_offset: float = 2.0,
    size: tuple[int, int] = (640, 360),
) -> str:
    """Seed §6.1 verbatim: ``-ss`` after ``-i`` (decodes from the start every time)."""
    cmd = [
        "ffmpeg",
        "-i",
        video_path,
        "-ss",
        str(time_offset),
        "-vframes",
        "1",
        "-vf",
        f"scale={size[0]}:{size[1]}",
        "-q:v",
        "2",
        output_path,
    ]
    _run(cmd)
    return output_path


def extract_thumbnails_timeline(
    video_path: str,
    output_dir: str,
    interval: float = 10.0,
    size: tuple[int, int] = (160, 90),
) -> list[str]:
    """Seed §6.1 verbatim: one ffmpeg run per timeline thumbnail."""
    duration = get_video_duration(video_path)
    thumbnails = []
    for t in range(0, int(duration), int(interval)):
        output_path = os.path.join(output_dir, f"thumb_{t:04d}.jpg")
        extract_thumbnail(video_path, output_path, time_offset=t, size=size)
        thumbnails.append(output_path)
    return thumbnails


# --------------------------------------------------------------------------- seed §6.2


def generate_sprite_sheet(
    thumbnails: list[str], output_path: str, grid: tuple[int, int] = (10, 10)
) -> str:
    """Seed §6.2 verbatim."""
    from PIL import Image

    thumb_width, thumb_height = 160, 90
    cols, rows = grid
    sheet = Image.new("RGB", (thumb_width * cols, thumb_height * rows))
    for i, thumb_path in enumerate(thumbnails[: cols * rows]):
        if i >= cols * rows:
            break
        thumb = Image.open(thumb_path)
        x = (i % cols) * thumb_width
        y = (i // cols) * thumb_height
        sheet.paste(thumb, (x, y))
    sheet.save(output_path, "JPEG", quality=80)
    return output_path


# --------------------------------------------------------------------------- seed §4.4


def encoder_args(rung: Rung, fps: float, *, preset: str = PRESET) -> list[str]:
    """Our transcoder's per-rendition encoder settings (see the module docstring)."""
    seg = f"{SEGMENT_SECONDS:g}"
    gop = max(1, round(SEGMENT_SECONDS * fps))
    return [
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-profile:v",
        rung.profile,
        "-level:v",
        level_name(encoding.rung_level(rung, fps)),
        "-b:v",
        str(rung.video_bitrate),
        "-maxrate",
        str(rung.maxrate),
        "-bufsize",
        str(rung.bufsize),
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-flags",
        "+cgop",
        "-forced-idr",
        "1",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{seg})",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        str(rung.audio_bitrate),
        "-ar",
        "48000",
        "-ac",
        "2",
    ]


def variant_command(
    source: str, output_dir: str, rung: Rung, fps: float, *, preset: str = PRESET
) -> list[str]:
    """Seed ``HLSBuilder._transcode_variant``: one ffmpeg run for one rendition (at
    `preset`: the seed's own is `medium`, bench/ingest.py --refine)."""
    playlist_path = os.path.join(output_dir, f"{rung.name}.m3u8")
    segment_pattern = os.path.join(output_dir, f"{rung.name}_%04d.ts")
    return [
        "ffmpeg",
        "-i",
        source,
        "-vf",
        f"scale={rung.width}:{rung.height}",
        *encoder_args(rung, fps, preset=preset),
        "-hls_time",
        f"{SEGMENT_SECONDS:g}",
        "-hls_playlist_type",
        "vod",
        "-hls_segment_filename",
        segment_pattern,
        playlist_path,
    ]


def generate_master_playlist(path: str, ladder: tuple[Rung, ...]) -> None:
    """Seed ``HLSBuilder._generate_master_playlist`` verbatim (nominal bandwidths)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", ""]
    for rung in ladder:
        w, h = rung.width, rung.height
        codec = "avc1.640028" if h >= 1080 else "avc1.4d401f"
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={rung.video_bitrate},"
            f"RESOLUTION={w}x{h},"
            f'CODECS="{codec},mp4a.40.2"'
        )
        lines.append(f"{rung.name}/{rung.name}.m3u8")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


# --------------------------------------------------------------------------- pipeline


@dataclass
class SeedResult:
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    playlists: dict[str, Path] = field(default_factory=dict)
    thumbnails: int = 0


def _source_fps(source: str) -> float:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=avg_frame_rate",
            "-of",
            "json",
            source,
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    rate = parse_rate(json.loads(out)["streams"][0]["avg_frame_rate"]) or 30.0
    return float(output_fps(rate))


def ingest(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    ladder: tuple[Rung, ...] = DEFAULT_RUNGS,
    *,
    fps: float | None = None,
) -> SeedResult:
    """The seed's whole ingest of one clip: renditions, master, thumbnails, timeline,
    sprite sheet. ``fps`` (for the level and GOP of our encoder settings) is probed
    when not given; pass it to keep that probe out of the timing."""
    src = os.fspath(source)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=False)  # fresh: the seed's commands have no -y
    if fps is None:
        fps = _source_fps(src)
    steps: dict[str, float] = {}
    playlists: dict[str, Path] = {}
    started = time.perf_counter()

    # seed §4.4 HLSBuilder.transcode_to_hls: one run per profile, then the master
    for rung in ladder:
        t = time.perf_counter()
        variant_dir = out / rung.name
        variant_dir.mkdir(parents=True, exist_ok=True)
        _run(variant_command(src, str(variant_dir), rung, fps))
        playlists[rung.name] = variant_dir / f"{rung.name}.m3u8"
        steps[f"variant_{rung.name}"] = time.perf_counter() - t
    generate_master_playlist(str(out / "master.m3u8"), ladder)

    # seed §6.1: thumbnail (640x360) and large thumbnail (1280x720) at 2 s
    t = time.perf_counter()
    extract_thumbnail(src, str(out / encoding.THUMBNAIL), 2.0, encoding.THUMBNAIL_SIZE)
    extract_thumbnail(src, str(out / encoding.THUMBNAIL_LARGE), 2.0, encoding.THUMBNAIL_LARGE_SIZE)
    steps["thumbnails"] = time.perf_counter() - t

    # seed §6.1 timeline thumbnails every 10 s, §6.2 sprite sheet
    t = time.perf_counter()
    frames = out / "frames"
    frames.mkdir()
    thumbs = extract_thumbnails_timeline(src, str(frames), FRAME_INTERVAL, encoding.TIMELINE_TILE)
    steps["timeline"] = time.perf_counter() - t
    t = time.perf_counter()
    generate_sprite_sheet(thumbs, str(out / "storyboard.jpg"))
    steps["sprite"] = time.perf_counter() - t

    return SeedResult(
        seconds=time.perf_counter() - started,
        steps=steps,
        playlists=playlists,
        thumbnails=len(thumbs),
    )


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="run the seed's ingest pipeline on one clip")
    p.add_argument("source")
    p.add_argument("output_dir")
    a = p.parse_args()
    r = ingest(a.source, a.output_dir)
    print(json.dumps({"seconds": round(r.seconds, 2), "steps": r.steps}, indent=2))
