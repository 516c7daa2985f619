"""Probing an upload: ffprobe's command, its JSON checked against the limits, and a
readable reason when ffprobe fails. Pure: `workers.media.ffmpeg.probe` runs the command.

Security model for untrusted uploads (core/ffargs.py): every ffprobe/ffmpeg invocation
on an upload carries ``-protocol_whitelist file`` *and* ``-format_whitelist`` (only the
four real video demuxers), and names the input as ``file:<absolute path>``. Validating ``format_name``
after a plain probe is too late: ffprobe's hls and concat demuxers open the files an
upload references while probing. The whitelist stops them before their header is read;
`validate_probe` re-checks the container as a second line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from core.ffargs import input_url, probe_command


class BadInput(Exception):
    """The upload itself is unusable (permanent: retrying cannot help)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Bounds an upload must meet; anything outside is a `BadInput`."""

    max_duration: float = 600.0
    min_duration: float = 0.1
    max_width: int = 7680
    max_height: int = 4320
    max_bytes: int = 4 * 1024**3
    min_side: int = 16
    # decoded pixels per second (width x height x frame rate): the job's cost grows with
    # it; the default admits 4096x2160 at 60 fps (DCI 4K60), not 8K60
    max_pixel_rate: float = 4096 * 2160 * 60


#: ffprobe ``format_name`` tokens of the containers we accept (all tokens must be here).
ALLOWED_FORMATS: frozenset[str] = frozenset(
    {"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "mpegts", "avi"}
)
#: Demuxers handed to ``-format_whitelist``; each one's name list is inside ALLOWED_FORMATS.
DEMUXERS: tuple[str, ...] = ("mov", "matroska", "mpegts", "avi")
FORMAT_WHITELIST = ",".join(DEMUXERS)

_IMAGE_CODECS = frozenset(
    {
        "png",
        "apng",
        "mjpeg",
        "jpegls",
        "bmp",
        "gif",
        "webp",
        "tiff",
        "jpeg2000",
        "pam",
        "ppm",
        "pgm",
        "pbm",
        "sgi",
        "targa",
        "qoi",
        "jpegxl",
        "exr",
        "dpx",
        "psd",
    }
)
_CLOCK = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


@dataclass(frozen=True)
class MediaInfo:
    """What the transcoder needs to know about a validated upload.

    ``width``/``height`` are the display size: after the rotation side data (phones store
    portrait video as rotated landscape) and the sample aspect ratio.
    """

    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None
    video_codec: str
    format_name: str
    audio_codec: str | None = None
    coded_width: int = 0
    coded_height: int = 0
    rotation: int = 0
    sar: tuple[int, int] = (1, 1)
    interlaced: bool = False
    pix_fmt: str | None = None
    size_bytes: int | None = None
    video_stream: int = 0  # absolute ffprobe stream index (cover art is skipped)
    audio_stream: int | None = None

    @property
    def demuxer(self) -> str:
        """The ffmpeg demuxer to force with ``-f`` for this container."""
        tokens = self.format_name.split(",")
        for name in DEMUXERS:
            if name in tokens:
                return name
        raise BadInput(f"not a video container ({self.format_name})")


def ffprobe_command(path: str | os.PathLike[str]) -> list[str]:
    """ffprobe of an untrusted upload: local file only, real video demuxers only."""
    return probe_command(path, DEMUXERS)


def finite_float(value: Any) -> float | None:
    """A finite float from ffprobe/ffmpeg text (``"9.000000"``); ``"N/A"``, nan, garbage -> None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def clock_seconds(text: str) -> float | None:
    """``"01:02:03.5"`` (ffmpeg's H:MM:SS.frac clock) -> 3723.5; anything else -> None."""
    m = _CLOCK.match(text.strip())
    if not m:
        return None
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_rate(value: Any) -> float | None:
    """``"30000/1001"`` -> 29.97; ``"0/0"``, ``"N/A"``, garbage -> None."""
    if not isinstance(value, str):
        return None
    num, _, den = value.partition("/")
    n, d = finite_float(num), finite_float(den or "1")
    if n is None or d is None or d == 0 or n <= 0:
        return None
    return n / d


def _tag_duration(tags: Mapping[str, Any]) -> float | None:
    for key, value in tags.items():
        if key.upper() == "DURATION" and isinstance(value, str):
            seconds = clock_seconds(value)
            if seconds is not None:
                return seconds
    return None


def _rotation(stream: Mapping[str, Any]) -> int:
    """The display rotation in degrees (0, 90, 180 or 270). Phones write multiples of
    90; any other angle would be published tilted and cropped (ffmpeg's autorotate turns
    the picture by the exact angle), so it is refused."""
    raw: float | None = None
    for side in stream.get("side_data_list") or ():
        if isinstance(side, Mapping) and "rotation" in side:
            raw = finite_float(side.get("rotation"))
            break
    if raw is None:
        raw = finite_float((stream.get("tags") or {}).get("rotate"))
    if raw is None:
        return 0
    quarter = round(raw / 90.0)
    if abs(raw - quarter * 90) > 0.5:
        raise BadInput(
            f"display rotation of {raw:g} degrees is not a multiple of 90: the clip would "
            f"play tilted; export it upright"
        )
    return int(quarter) * 90 % 360


def _sar(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        num, _, den = value.partition(":")
        n, d = _int(num), _int(den)
        if n and d and n > 0 and d > 0:
            f = Fraction(n, d)
            return (f.numerator, f.denominator)
    return (1, 1)


def validate_probe(probe: Mapping[str, Any], limits: Limits | None = None) -> MediaInfo:
    """Check ffprobe's JSON against the limits; raise `BadInput` with a readable reason."""
    limits = limits or Limits()
    fmt = probe.get("format") or {}
    format_name = str(fmt.get("format_name") or "")
    if not format_name:
        raise BadInput("not a readable video file: unknown container")
    tokens = format_name.split(",")
    if "image2" in tokens or "image2pipe" in tokens or any(t.endswith("_pipe") for t in tokens):
        raise BadInput(f"a still image ({format_name}), not a video")
    if not all(t in ALLOWED_FORMATS for t in tokens):
        raise BadInput(f"not a video container ({format_name})")

    size = _int(fmt.get("size"))
    if size is not None and size > limits.max_bytes:
        raise BadInput(
            f"file is {size / 1e6:.0f} MB, above the limit of {limits.max_bytes / 1e6:.0f} MB"
        )

    streams = [s for s in probe.get("streams") or () if isinstance(s, Mapping)]
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        raise BadInput("audio only" if audios else "no video stream")
    video = videos[0]
    codec = str(video.get("codec_name") or "")
    if not codec or codec == "none":
        raise BadInput("unsupported video codec (ffmpeg cannot identify it)")
    nb_frames = _int(video.get("nb_frames"))
    if codec in _IMAGE_CODECS and (nb_frames is None or nb_frames <= 1):
        raise BadInput(f"a still image ({codec}), not a video")

    coded_w, coded_h = _int(video.get("width")) or 0, _int(video.get("height")) or 0
    if coded_w <= 0 or coded_h <= 0:
        raise BadInput("could not read the picture size")
    if min(coded_w, coded_h) < limits.min_side:
        raise BadInput(f"picture {coded_w}x{coded_h} is too small")
    if max(coded_w, coded_h) > max(limits.max_width, limits.max_height) or min(
        coded_w, coded_h
    ) > min(limits.max_width, limits.max_height):
        raise BadInput(
            f"picture {coded_w}x{coded_h} exceeds the maximum {limits.max_width}x{limits.max_height}"
        )

    candidates = [
        finite_float(video.get("duration")),
        _tag_duration(video.get("tags") or {}),
        finite_float(fmt.get("duration")),
    ]
    known = [d for d in candidates if d is not None and d >= 0]
    if not known:
        raise BadInput("could not read duration")
    duration = next((d for d in known if d > 0), 0.0)
    longest = max(known)
    if duration < limits.min_duration:
        raise BadInput(f"duration {duration:.1f} s is below the minimum {limits.min_duration:g} s")
    if longest > limits.max_duration:
        raise BadInput(f"duration {longest:.1f} s exceeds the maximum {limits.max_duration:g} s")

    fps = 0.0
    for key in ("avg_frame_rate", "r_frame_rate"):
        rate = parse_rate(video.get(key))
        if rate is not None and 1.0 <= rate <= 1000.0:
            fps = rate
            break

    if fps and coded_w * coded_h * fps > limits.max_pixel_rate:
        raise BadInput(
            f"{coded_w}x{coded_h} at {fps:g} fps is {coded_w * coded_h * fps / 1e6:.0f} million "
            f"pixels per second, above the maximum of {limits.max_pixel_rate / 1e6:.0f} million"
        )
    rotation = _rotation(video)
    sar = _sar(video.get("sample_aspect_ratio"))
    disp_w = int(round(coded_w * sar[0] / sar[1]))
    disp_w, disp_h = (coded_h, disp_w) if rotation in (90, 270) else (disp_w, coded_h)

    audio = audios[0] if audios else None
    return MediaInfo(
        duration=duration,
        width=disp_w,
        height=disp_h,
        fps=fps,
        has_audio=audio is not None,
        audio_sample_rate=_int(audio.get("sample_rate")) if audio else None,
        audio_channels=_int(audio.get("channels")) if audio else None,
        video_codec=codec,
        format_name=format_name,
        audio_codec=str(audio.get("codec_name")) if audio and audio.get("codec_name") else None,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=rotation,
        sar=sar,
        interlaced=str(video.get("field_order") or "") in {"tt", "bb", "tb", "bt"},
        pix_fmt=str(video.get("pix_fmt")) if video.get("pix_fmt") else None,
        size_bytes=size,
        video_stream=_int(video.get("index")) or 0,
        audio_stream=_int(audio.get("index")) if audio else None,
    )


_SHOWINFO = re.compile(r"^\[Parsed_showinfo_\d+ @ [^\]]*\]\s+n:\s*\d+ .*?\bs:(\d+)x(\d+)\b")


def check_first_frame(stderr: str, info: MediaInfo) -> None:
    """The first decoded picture (`workers.media.encoding.first_frame_command`'s log) must have the size the
    stream declares (what the limits were checked against and the transcode is built
    for): a stream declaring 7680x4320 over 64x64 of data, or data that decodes to no
    picture at all, is refused."""
    declared = f"{info.coded_width}x{info.coded_height}"
    lines = stderr.splitlines()
    first = next((m for m in map(_SHOWINFO.match, lines) if m), None)
    if first is None:
        # the decoder's own complaint, the last one (no path: those lines name the codec)
        why = [
            _PROBE_ERROR_PREFIX.sub("", ln).strip()
            for ln in lines
            if _PROBE_ERROR_PREFIX.match(ln) and "showinfo" not in ln
        ]
        detail = f": {why[-1][:200]}" if why else ""
        raise BadInput(f"no picture could be decoded at the declared size {declared}{detail}")
    width, height = int(first.group(1)), int(first.group(2))
    if (width, height) != (info.coded_width, info.coded_height):
        raise BadInput(
            f"the stream declares a {declared} picture but its first picture is "
            f"{width}x{height}: damaged or crafted"
        )


_PROBE_ERROR_PREFIX = re.compile(r"^\[([^\]@]+?) @ 0x[0-9a-f]+\]\s*")


def probe_failure_reason(stderr: str, path: str | os.PathLike[str] | None = None) -> str:
    """Readable reason from a failed ffprobe's stderr (run with `ffprobe_command`)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        m = _PROBE_ERROR_PREFIX.match(ln)
        if m and "Format not on whitelist" in ln:
            name = m[1].strip()
            if "image2" in name or name.endswith("_pipe"):
                return f"a still image ({name}), not a video"
            return f"not a video container ({name})"
    messages: list[str] = []
    prefixes = [input_url(path), os.fspath(path)] if path is not None else []
    for ln in lines:
        ln = _PROBE_ERROR_PREFIX.sub("", ln)
        for p in prefixes:
            if ln.startswith(p + ":"):
                ln = ln[len(p) + 1 :].strip()
        if ln and ln not in messages:
            messages.append(ln)
    if not messages:
        return "not a readable video file"
    # The last line is the top-level error; an earlier one is usually its cause.
    detail = (
        messages[-1] if len(messages) == 1 else f"{messages[-1]} ({'; '.join(messages[:-1])[:200]})"
    )
    return f"not a readable video file: {detail}"
