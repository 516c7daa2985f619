"""Pure media logic for the transcode worker: input validation, H.264 levels, ffmpeg arguments.

Nothing here runs a process or touches the file system: `workers.ffmpeg` runs the
commands built here and feeds their output (ffprobe JSON, ``-progress`` lines, playlists,
SPS bytes) back into the parsers below.

Security model for untrusted uploads: every ffprobe/ffmpeg invocation on an upload carries
``-protocol_whitelist file`` *and* ``-format_whitelist`` (only the four real video
demuxers), and names the input as ``file:<absolute path>``. Validating ``format_name``
after a plain probe is too late: ffprobe's hls and concat demuxers open the files an
upload references while probing. The whitelist stops them before their header is read;
`validate_probe` re-checks the container as a second line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

Profile = Literal["baseline", "main", "high"]


class BadInput(Exception):
    """The upload itself is unusable (permanent: retrying cannot help)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- ladder


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Rung:
    """One rendition of the ladder: exact output frame and bit rates (bits/s)."""

    name: str
    width: int
    height: int
    video_bitrate: int
    audio_bitrate: int = 128_000

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"rung name {self.name!r} must be [A-Za-z0-9_-], used in file names")
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(
                f"rung {self.name}: {self.width}x{self.height} must be positive and even"
            )
        if self.video_bitrate <= 0 or self.audio_bitrate <= 0:
            raise ValueError(f"rung {self.name}: bit rates must be positive")

    @property
    def profile(self) -> Profile:
        """H.264 profile: Main up to 1280x720, High above."""
        return "main" if self.width * self.height <= 1280 * 720 else "high"

    @property
    def maxrate(self) -> int:
        return self.video_bitrate * 3 // 2

    @property
    def bufsize(self) -> int:
        return self.video_bitrate * 2


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("720p", 1280, 720, 1_500_000),
    Rung("1080p", 1920, 1080, 4_000_000),
)


@dataclass(frozen=True)
class Limits:
    """Bounds an upload must meet; anything outside is a `BadInput`."""

    max_duration: float = 600.0
    min_duration: float = 0.1
    max_width: int = 7680
    max_height: int = 4320
    max_bytes: int = 4 * 1024**3
    min_side: int = 16


# ------------------------------------------------------------------------- probing

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
_STREAM_TAG_DURATION = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


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


def input_url(path: str | os.PathLike[str]) -> str:
    """``file:`` URL for ffmpeg: no protocol prefix or leading ``-`` in a name is interpreted."""
    return "file:" + os.path.abspath(os.fspath(path))


def ffprobe_command(path: str | os.PathLike[str]) -> list[str]:
    """ffprobe of an untrusted upload: local file only, real video demuxers only."""
    return [
        "ffprobe",
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        FORMAT_WHITELIST,
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        input_url(path),
    ]


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


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
    n, d = _float(num), _float(den or "1")
    if n is None or d is None or d == 0 or n <= 0:
        return None
    return n / d


def _tag_duration(tags: Mapping[str, Any]) -> float | None:
    for key, value in tags.items():
        if key.upper() == "DURATION" and isinstance(value, str):
            m = _STREAM_TAG_DURATION.match(value.strip())
            if m:
                return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    return None


def _rotation(stream: Mapping[str, Any]) -> int:
    raw: float | None = None
    for side in stream.get("side_data_list") or ():
        if isinstance(side, Mapping) and "rotation" in side:
            raw = _float(side.get("rotation"))
            break
    if raw is None:
        raw = _float((stream.get("tags") or {}).get("rotate"))
    if raw is None:
        return 0
    return int(round(raw / 90.0)) * 90 % 360


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
        _float(video.get("duration")),
        _tag_duration(video.get("tags") or {}),
        _float(fmt.get("duration")),
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


# ------------------------------------------------------------------ H.264 levels

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

_STANDARD_RATES = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
)


def fps_fraction(fps: float) -> Fraction:
    """Exact rate for ffmpeg: 29.97002997 -> 30000/1001."""
    return Fraction(fps).limit_denominator(1001)


def output_fps(source_fps: float) -> float:
    """Output frame rate: the source's, capped at 60; unknown/broken -> 30.

    A variable-rate phone clip averaging 29.93 fps is snapped to the standard rate
    within 1 % (30), so every clip of a scene shares the usual rates.
    """
    if not math.isfinite(source_fps) or source_fps < 1.0:
        return 30.0
    fps = min(source_fps, 60.0)
    nearest = min(_STANDARD_RATES, key=lambda std: abs(fps - float(std)))
    if abs(fps - float(nearest)) <= float(nearest) * 0.01:
        return float(nearest)
    return float(fps_fraction(fps))


def rung_level(rung: Rung, fps: float) -> int:
    return h264_level(rung.width, rung.height, fps, max_bitrate=rung.maxrate, profile=rung.profile)


def rung_codecs(rung: Rung, fps: float) -> str:
    """Expected CODECS video part of a rung at the output frame rate."""
    return codecs_string(rung.profile, rung_level(rung, fps))


# ------------------------------------------------------------- ffmpeg command

THUMBNAIL = "thumbnail.jpg"
THUMBNAIL_SIZE = (640, 360)
THUMBNAIL_LARGE = "thumbnail_large.jpg"
THUMBNAIL_LARGE_SIZE = (1280, 720)
FRAMES_DIR = "frames"
FRAME_PATTERN = "frame_%04d.jpg"
TIMELINE_TILE = (160, 90)
TRANSCODE_LOG = "transcode_log.txt"


def playlist_name(rung: Rung) -> str:
    return f"{rung.name}.m3u8"


def segment_pattern(rung: Rung) -> str:
    return f"{rung.name}_%04d.ts"


def thumbnail_time(duration: float) -> float:
    """Thumbnail frame time: 2 s in, or mid-clip when the clip is shorter than 4 s."""
    return min(2.0, duration / 2.0)


def timeline_times(duration: float, interval: float) -> list[float]:
    """Times of the storyboard frames: 0, interval, 2*interval, ... strictly before the end."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    out: list[float] = []
    k = 0
    while k * interval < duration - 1e-9:
        out.append(round(k * interval, 6))
        k += 1
    return out


def _num(value: float) -> str:
    """Compact decimal for filter arguments: 2.0 -> "2", 6.4 -> "6.4"."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def fit_filter(width: int, height: int) -> str:
    """Scale to fit inside width x height keeping the display aspect, pad centred, SAR 1.

    Uses the scale filter's ``dar`` (iw/ih*sar), so anamorphic sources (HDV, DV) come out
    right, which ``force_original_aspect_ratio`` (pixel sizes only) would not do.
    Both sides are even; the fitted side equals the box exactly.
    """
    w, h = width, height
    return (
        f"scale=w='if(gte(dar*{h},{w}),{w},2*round({h}*dar/2))'"
        f":h='if(gte(dar*{h},{w}),2*round({w}/dar/2),{h})'"
        f",pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1"
    )


def filter_graph(
    info: MediaInfo,
    ladder: Sequence[Rung],
    *,
    fps: Fraction,
    thumb_at: float,
    frame_interval: float,
) -> str:
    """The ``-filter_complex`` graph: one decode, split to every rung, thumbs and frames.

    Labels out: ``[v{i}]``/``[a{i}]`` per rung, ``[thumb]``, ``[thumbl]``, ``[tl]``.
    Video starts at 0 (first frame repeated if the source starts late) and ends at the
    probed duration; audio is padded/trimmed to the same span, so every rendition
    covers the same time range and a stitched scene has no jagged clip ends.
    """
    end = _num(info.duration)
    n = len(ladder)
    pre = ["yadif=mode=send_frame:deint=interlaced"] if info.interlaced else []
    pre += [f"fps=fps={fps.numerator}/{fps.denominator}:start_time=0", f"trim=end={end}"]
    labels = "".join(f"[s{i}]" for i in range(n))
    parts = [f"[0:{info.video_stream}]{','.join(pre)},split={n + 2}{labels}[sthumb][stl]"]
    for i, rung in enumerate(ladder):
        parts.append(f"[s{i}]{fit_filter(rung.width, rung.height)},format=yuv420p[v{i}]")
    tw, th = THUMBNAIL_SIZE
    lw, lh = THUMBNAIL_LARGE_SIZE
    parts.append(f"[sthumb]select='gte(t,{_num(thumb_at)})*eq(selected_n,0)',split=2[th0][th1]")
    parts.append(f"[th0]{fit_filter(tw, th)}[thumb]")
    parts.append(f"[th1]{fit_filter(lw, lh)}[thumbl]")
    fw, fh = TIMELINE_TILE
    parts.append(f"[stl]select='gte(t,selected_n*{_num(frame_interval)})',{fit_filter(fw, fh)}[tl]")

    if info.has_audio:
        # mono -> both channels at full level (a plain downmix matrix would lose 3 dB)
        chain = (
            ["channelmap=map=0-FL|0-FR:channel_layout=stereo"] if info.audio_channels == 1 else []
        )
        chain += [
            "aresample=48000:async=1:first_pts=0",
            "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo",
            "apad",
            f"atrim=end={end}",
        ]
        stream = info.audio_stream if info.audio_stream is not None else "a:0"
        audio = f"[0:{stream}]" + ",".join(chain)
    else:
        audio = f"anullsrc=r=48000:cl=stereo,atrim=end={end}"
    parts.append(audio + f",asplit={n}" + "".join(f"[a{i}]" for i in range(n)))
    return ";".join(parts)


def transcode_command(
    source: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    info: MediaInfo,
    ladder: Sequence[Rung] = DEFAULT_LADDER,
    *,
    segment_seconds: float = 4,
    thumb_at: float | None = None,
    frame_interval: float = 10.0,
    preset: str = "veryfast",
    progress: str = "pipe:1",
) -> list[str]:
    """ONE ffmpeg run: every rendition (HLS, flat in workdir), both thumbnails, timeline frames.

    Keyframes are forced by time (``n_forced * segment_seconds``) on identical frames in
    every rung, GOPs are closed and scene-cut keyframes are off, so every rendition has
    an IDR at the same instants and the HLS muxers cut identical segment lists.
    ``workdir/frames`` must exist before ffmpeg starts.
    """
    if not ladder:
        raise ValueError("empty ladder")
    if len({r.name for r in ladder}) != len(ladder):
        raise ValueError("rung names must be unique")
    if segment_seconds <= 0 or frame_interval <= 0:
        raise ValueError("segment_seconds and frame_interval must be positive")
    out = Path(workdir)
    fps_f = fps_fraction(output_fps(info.fps))
    fps = float(fps_f)
    gop = max(1, round(segment_seconds * fps))
    at = thumbnail_time(info.duration) if thumb_at is None else thumb_at
    seg = _num(segment_seconds)

    cmd = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "warning",
        "-y",
        "-progress",
        progress,
        "-nostats",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        FORMAT_WHITELIST,
        "-f",
        info.demuxer,
        "-i",
        input_url(source),
        "-filter_complex",
        filter_graph(info, ladder, fps=fps_f, thumb_at=at, frame_interval=frame_interval),
    ]
    for i, rung in enumerate(ladder):
        level = rung_level(rung, fps)
        cmd += [
            "-map",
            f"[v{i}]",
            "-map",
            f"[a{i}]",
            "-map_metadata",
            "-1",
            "-map_chapters",
            "-1",
            "-c:v",
            "libx264",
            "-preset",
            preset,
            "-profile:v",
            rung.profile,
            "-level:v",
            level_name(level),
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
            "-c:a",
            "aac",
            "-b:a",
            str(rung.audio_bitrate),
            "-ar",
            "48000",
            "-ac",
            "2",
            "-f",
            "hls",
            "-hls_time",
            seg,
            "-hls_playlist_type",
            "vod",
            "-hls_flags",
            "independent_segments",
            "-hls_segment_type",
            "mpegts",
            "-start_number",
            "1",
            "-hls_segment_filename",
            str(out / segment_pattern(rung)),
            str(out / playlist_name(rung)),
        ]
    for label, name in (("thumb", THUMBNAIL), ("thumbl", THUMBNAIL_LARGE)):
        cmd += [
            "-map",
            f"[{label}]",
            "-map_metadata",
            "-1",
            "-frames:v",
            "1",
            "-c:v",
            "mjpeg",
            "-q:v",
            "2",
            "-f",
            "image2",
            "-update",
            "1",
            str(out / name),
        ]
    cmd += [
        "-map",
        "[tl]",
        "-map_metadata",
        "-1",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "mjpeg",
        "-q:v",
        "4",
        "-f",
        "image2",
        "-start_number",
        "1",
        str(out / FRAMES_DIR / FRAME_PATTERN),
    ]
    return cmd


# ---------------------------------------------------------------- progress


class ProgressParser:
    """Turns ffmpeg ``-progress`` key=value lines into blocks (one per ``progress=`` line)."""

    def __init__(self) -> None:
        self._block: dict[str, str] = {}

    def feed(self, line: str) -> dict[str, str] | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        self._block[key.strip()] = value.strip()
        if key.strip() == "progress":
            block, self._block = self._block, {}
            return block
        return None


def parse_progress_lines(lines: Iterable[str]) -> list[dict[str, str]]:
    parser = ProgressParser()
    return [b for b in (parser.feed(ln) for ln in lines) if b is not None]


def parse_progress(block: Mapping[str, str], duration: float) -> float:
    """Percent done (0-100) of one progress block; ``progress=end`` is 100."""
    if block.get("progress") == "end":
        return 100.0
    if duration <= 0:
        return 0.0
    us: float | None = None
    for key in ("out_time_us", "out_time_ms"):  # both are microseconds in ffmpeg >= 4
        us = _float(block.get(key))
        if us is not None:
            break
    if us is None:
        m = _STREAM_TAG_DURATION.match(block.get("out_time", "").strip())
        if not m:
            return 0.0
        us = (int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])) * 1e6
    return max(0.0, min(100.0, us / 1e6 / duration * 100.0))


# ---------------------------------------------------------- playlist parsing
